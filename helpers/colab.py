"""Make a chapter self-sufficient in Colab (every notebook's first cell); a no-op on a prepared machine.

Pins come from ``requirements.txt``, never ``torch.version.cuda`` (``None`` on CPU-only torch). A running Python
cannot swap a torch it imported: then, after the install, a ``RuntimeError`` asks for one restart.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
PINNED = ("torch", "easypytorch3d")
SUPPORTED_PYTHON = ((3, 10), (3, 13))  # those easypytorch3d publishes wheels for (see how_to_run.md)
MIN_DRIVER = 580  # the pinned torch's PyPI wheels are CUDA 13 builds, which need this NVIDIA driver or newer
RESTART_HINT = "Restart the runtime (Colab: Runtime > Restart session) and run this notebook again from the top."


def pinned_versions(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """``{"torch": "2.11.0", "easypytorch3d": "0.7.9.post1"}`` as pinned in ``requirements.txt``."""
    try:
        text = Path(requirements).read_text()
    except OSError as exc:
        fix = "run from a checkout of the book (the first cell clones one), or pass requirements= its requirements.txt"
        raise FileNotFoundError(f"Cannot read the pins from {requirements} ({exc}); {fix}.") from exc
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", text, flags=re.M))
    missing = set(PINNED) - pins.keys()
    if missing:
        raise ValueError(f"{requirements} must pin {', '.join(sorted(missing))} with '==', e.g. 'torch==2.11.0'.")
    return {name: pins[name] for name in PINNED}


def _pytorch3d_works() -> bool:
    importlib.invalidate_caches()  # see packages pip installed into this running interpreter
    if importlib.util.find_spec("pytorch3d") is None:
        return False
    try:
        # torch first, as every use of PyTorch3D does: _C links against torch's libraries, which are
        # found without it only when both share one site-packages (not so with PYTHONPATH installs)
        import torch  # noqa: F401
        from pytorch3d import _C  # noqa: F401  (the compiled part is what breaks on a torch mismatch)
    except ImportError:
        return False
    return True


def ensure_pytorch3d(
    run=subprocess.check_call,
    modules=sys.modules,
    works=_pytorch3d_works,
    version_info=sys.version_info,
    requirements: Path = REQUIREMENTS,
) -> str:
    """Install the pinned torch/PyTorch3D pair if PyTorch3D is missing: ``"present"`` or ``"installed"``."""
    if works():
        return "present"
    if not SUPPORTED_PYTHON[0] <= tuple(version_info[:2]) <= SUPPORTED_PYTHON[1]:
        low, high = (".".join(map(str, v)) for v in SUPPORTED_PYTHON)
        raise RuntimeError(
            f"PyTorch3D's wheels exist for Python {low} to {high}, not Python {version_info[0]}.{version_info[1]}; "
            "use such a Python (see the book's 'How to run')."
        )
    pins = pinned_versions(requirements)
    loaded = modules.get("torch")
    # "2.11.0+cu128" -> "2.11.0": the local build tag does not change the ABI PyTorch3D needs
    loaded_version = (getattr(loaded, "__version__", None) or "").split("+")[0] or None
    wanted = [f"{name}=={pins[name]}" for name in PINNED]
    print("PyTorch3D is missing: pip install", *wanted, flush=True)
    run([sys.executable, "-m", "pip", "install", "-q", *wanted])
    if loaded is not None and loaded_version != pins["torch"]:
        raise RuntimeError(
            f"Installed torch {pins['torch']}, but this session imported {loaded_version}. {RESTART_HINT}"
        )
    if not works():
        raise RuntimeError(f"pip installed {' and '.join(PINNED)}, but PyTorch3D still does not import. {RESTART_HINT}")
    print("PyTorch3D installed.")
    if "google.colab" in modules:  # the chapters pick the device themselves; say when Colab gave no GPU
        torch = modules.get("torch") or importlib.import_module("torch")
        if torch.cuda.is_available():
            print(f"GPU: {torch.cuda.get_device_name(0)}; the chapters use it with their full settings.")
        else:
            print("No GPU: the chapters run on the CPU with smaller settings (Runtime > Change runtime type > GPU).")
    return "installed"


def unusable_gpu_note(run=subprocess.run, which=shutil.which) -> str | None:
    """Why a GPU that ``nvidia-smi`` lists cannot be used by torch (``data.pick_device`` says it), or ``None``."""
    if which("nvidia-smi") is None:
        return None
    try:
        cmd = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        out = run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, _, driver = out.splitlines()[0].rpartition(",")
    major = re.match(r"\s*(\d+)", driver)
    if major and int(major.group(1)) < MIN_DRIVER:
        return (
            f"nvidia-smi lists {name.strip()} with driver {driver.strip()}, but this CUDA 13 torch needs driver "
            f"{MIN_DRIVER} or newer: running on the CPU. Update the driver, or use torch and PyTorch3D for older CUDA."
        )
    return (
        f"nvidia-smi lists {name.strip()} (driver {driver.strip()}), but torch cannot use it: running on the CPU. "
        "Check that torch is a CUDA build (torch.version.cuda) and that no other process holds the GPU."
    )
