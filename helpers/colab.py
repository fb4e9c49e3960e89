"""Make a chapter self-sufficient in Colab; a no-op on a prepared machine.

Every notebook's first cell makes ``helpers`` importable and then calls
:func:`ensure_pytorch3d`. The pinned versions are read from the book's
``requirements.txt``, never guessed from ``torch.version.cuda`` (the seed's
install cell crashed on CPU-only torch, where that is ``None``).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"


def pinned_versions(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """``{"torch": "2.11.0", "easypytorch3d": "0.7.9.post1"}`` as pinned in ``requirements.txt``."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", requirements.read_text(), flags=re.M))
    missing = {"torch", "easypytorch3d"} - pins.keys()
    if missing:
        raise ValueError(f"{requirements} must pin {', '.join(sorted(missing))} with '=='.")
    return {name: pins[name] for name in ("torch", "easypytorch3d")}


def _pytorch3d_works() -> bool:
    if importlib.util.find_spec("pytorch3d") is None:
        return False
    try:
        from pytorch3d import _C  # noqa: F401  (the compiled part is what breaks on a torch mismatch)
    except ImportError:
        return False
    return True


def ensure_pytorch3d(run=subprocess.check_call, modules=sys.modules, works=_pytorch3d_works) -> str:
    """Install the pinned torch/PyTorch3D pair when PyTorch3D is missing.

    Returns ``"present"`` when nothing had to be done, ``"installed"`` when the
    pair was installed and can be imported now, and raises ``RuntimeError``
    asking for a runtime restart when a different torch was already imported
    (a running Python cannot swap the torch it loaded).
    """
    if works():
        return "present"
    pins = pinned_versions()
    loaded = modules.get("torch")
    loaded_version = getattr(loaded, "__version__", "").split("+")[0] if loaded else None
    print(f"Installing torch=={pins['torch']} and easypytorch3d=={pins['easypytorch3d']} (prebuilt PyTorch3D) ...")
    run([sys.executable, "-m", "pip", "install", "-q",
         f"torch=={pins['torch']}", f"easypytorch3d=={pins['easypytorch3d']}"])
    if loaded is not None and loaded_version != pins["torch"]:
        raise RuntimeError(
            f"torch {loaded_version} was already imported; PyTorch3D needs torch {pins['torch']}, now installed. "
            "Restart the runtime (Colab: Runtime > Restart session) and run this notebook again from the top."
        )
    return "installed"
