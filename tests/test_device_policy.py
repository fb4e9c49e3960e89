"""One device policy, read from the code: the device is chosen once per chapter and everything else
takes it from its inputs, so the CPU runs of CI exercise the code that runs on a GPU.

CI has no GPU, so a tensor made on the CPU beside CUDA inputs, a CPU random generator, ``.numpy()``
on a CUDA tensor or a clock read while the GPU still works would only fail (or mislead) on a GPU.
These tests find each of them in ``helpers/`` (and the clocks in the notebooks too) from the
syntax tree, where a CPU run cannot see them.
"""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# torch functions that make a new tensor (or generator) on the CPU unless given device=
FACTORIES = {
    "Generator", "arange", "as_tensor", "empty", "eye", "full", "linspace", "logspace",
    "ones", "rand", "randint", "randn", "randperm", "tensor", "zeros",
}  # fmt: skip
CLOCKS = {"perf_counter", "time", "monotonic", "process_time", "perf_counter_ns", "time_ns"}

# (module, function): why a tensor made there may live on the CPU
CPU_ON_PURPOSE = {
    ("data", "_angles"): "angles in degrees; make_cameras puts the cameras on the device",
    ("data", "training_angles"): "angles in degrees; make_cameras puts the cameras on the device",
    ("data", "heldout_angles"): "angles in degrees; make_cameras puts the cameras on the device",
    ("fast", "FastVolume.__init__"): "a module's parameter: .to(device) moves it, as DirectVoxGO's grids",
    ("fast", "FastVolume.from_config"): "an empty hull that load_state_dict fills; .to(device) moves it",
    ("fitting", "VolumeModel.__init__"): "a module's parameters: .to(device) moves them",
}
# the one clock of the project waits for the GPU (helpers.metrics.clock)
CLOCK_ON_PURPOSE = {("metrics", "clock")}


def _scopes(tree):
    """Yield ``(qualified name of the enclosing function or '', node)`` for every node of ``tree``."""

    def walk(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            yield inner, child
            yield from walk(child, inner)

    yield from walk(tree, "")


def _function(scope: str) -> str:
    """``Class.method`` or ``function`` of a qualified scope (nested helper functions count as theirs)."""
    parts = scope.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[0][:1].isupper() else parts[0]


def _is_call(node, owner: str, names: set[str]) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return isinstance(f, ast.Attribute) and f.attr in names and isinstance(f.value, ast.Name) and f.value.id == owner


def _device_literal(call):
    """The constant written as ``device=`` in ``call`` (``"cpu"``, ``None``), or ``...`` when there is none."""
    for k in call.keywords:
        if k.arg == "device" and isinstance(k.value, ast.Constant):
            return k.value.value
    return ...


# tensor methods whose result lives where their input lives
SAME_DEVICE = {"detach", "float", "double", "half", "contiguous", "clone", "view", "reshape", "squeeze", "flatten"}


def _on_cpu(node) -> bool:
    """Whether the expression ``node`` is surely a CPU tensor: ``x.cpu()``, then only methods that keep
    the device (``x.cpu().float()``, ``x.cpu()[0]``), or arithmetic of such tensors and numbers.
    ``f(x.cpu()).numpy()`` is not: ``f`` may move it back."""
    if isinstance(node, ast.Subscript):
        return _on_cpu(node.value)
    if isinstance(node, ast.BinOp):
        return all(isinstance(n, ast.Constant) or _on_cpu(n) for n in (node.left, node.right))
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr == "cpu":
        return True
    if _is_call(node, "torch", FACTORIES):  # torch.tensor(..., device="cpu")
        return _device_literal(node) == "cpu"
    return node.func.attr in SAME_DEVICE and _on_cpu(node.func.value)


def violations(source: str, module: str, notebook: bool = False) -> list[str]:
    """What in ``source`` breaks the device policy, as ``'line N: what (in function)'``."""
    found = []
    for scope, node in _scopes(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found += _imports(node, module, scope)
        if not isinstance(node, ast.Call):
            continue
        where = f"line {node.lineno} ({_function(scope) or 'module level'})"
        if _is_call(node, "time", CLOCKS) and (module, _function(scope)) not in CLOCK_ON_PURPOSE:
            found.append(f"{where}: time.{node.func.attr}() reads the clock without waiting for the GPU")
        if notebook:  # a chapter makes its own CPU tensors on purpose (small examples, plots)
            continue
        keywords = {k.arg for k in node.keywords}
        on_purpose = (module, _function(scope)) in CPU_ON_PURPOSE
        if _is_call(node, "torch", FACTORIES) and "device" not in keywords and not on_purpose:
            found.append(f"{where}: torch.{node.func.attr}() without device= makes it on the CPU")
        if _device_literal(node) is None:
            found.append(f"{where}: device=None leaves the device to chance; pass the inputs' device")
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "numpy" and not _on_cpu(f.value):
            found.append(f"{where}: .numpy() of a tensor that may be on a GPU (move it with .cpu() first)")
        cuda = [a for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("cuda")]
        if isinstance(f, ast.Attribute) and (f.attr == "cuda" or (f.attr == "to" and cuda)):
            found.append(f"{where}: .{f.attr}(...) picks the GPU; take the device from the inputs instead")
    return found


def _imports(node, module: str, scope: str) -> list[str]:
    """Imports that would hide a clock or a factory from the checks above (``from time import perf_counter``)."""
    where = f"line {node.lineno} ({_function(scope) or 'module level'})"
    if isinstance(node, ast.Import):
        renamed = [a.name for a in node.names if a.name in ("time", "torch", "timeit") and a.asname]
        return [f"{where}: import {name} as ...: write {name}.<function> so the checks see it" for name in renamed]
    names = {a.name for a in node.names}
    if node.module in ("time", "timeit") and names & (CLOCKS | {"default_timer"}):
        return [f"{where}: a clock imported from {node.module}; use metrics.clock(device)"]
    if node.module == "torch" and names & FACTORIES:
        return [f"{where}: torch factories imported by name; write torch.<factory>(..., device=...)"]
    return []


def _notebook_source(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    # IPython's magics and shell escapes are not Python: blank them, keeping the line numbers
    lines = "\n\n".join(code).splitlines()
    # %time and %%timeit read the clock without waiting for the GPU: keep them as a clock read
    lines = ["time.perf_counter()" if line.lstrip().startswith(("%time", "%%time")) else line for line in lines]
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


MODULES = sorted((ROOT / "helpers").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_helpers_take_the_device_from_their_inputs(path):
    found = violations(path.read_text(), path.stem)
    assert not found, f"helpers/{path.name} breaks the device policy:\n" + "\n".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapters_time_with_the_clock_that_waits_for_the_gpu(path):
    found = violations(_notebook_source(path), path.stem, notebook=True)
    assert not found, f"{path.name}: use metrics.clock(device):\n" + "\n".join(found)


def test_every_exception_is_still_needed():
    """An entry in CPU_ON_PURPOSE names a function that still makes a CPU tensor, or it goes."""
    for module, function in CPU_ON_PURPOSE:
        source = (ROOT / "helpers" / f"{module}.py").read_text()
        calls = [
            node
            for scope, node in _scopes(ast.parse(source))
            if _function(scope) == function and _is_call(node, "torch", FACTORIES)
            if "device" not in {k.arg for k in node.keywords}
        ]
        assert calls, f"CPU_ON_PURPOSE lists {module}.{function}, which no longer makes a tensor on the CPU"


def test_the_checks_can_fail(tmp_path):
    bad = """
import time
import torch

def render(rays, gen_seed):
    gen = torch.Generator().manual_seed(gen_seed)
    offsets = torch.rand(rays.shape[0], generator=gen)
    start = time.perf_counter()
    ok = torch.zeros(3, device=rays.device)
    print(rays.numpy(), rays.cpu().numpy(), (rays.detach().cpu() + 1).numpy())
    return rays.cuda(), time.perf_counter() - start

class VolumeModel:
    def __init__(self):
        self.grid = torch.zeros(4)
"""
    found = violations(bad, "fitting")
    assert [f.split(":")[0] for f in found] == [
        "line 6 (render)",
        "line 7 (render)",
        "line 8 (render)",
        "line 10 (render)",
        "line 11 (render)",
        "line 11 (render)",
    ], found
    assert "torch.Generator() without device=" in found[0] and ".cuda(...) picks the GPU" in " ".join(found)
    assert violations(bad, "fitting", notebook=True) == [
        "line 8 (render): time.perf_counter() reads the clock without waiting for the GPU",
        "line 11 (render): time.perf_counter() reads the clock without waiting for the GPU",
    ]
    # .cpu() must be the last move before .numpy(), and device= must name a device
    subtle = "a = shift(x.cpu()).numpy()\nb = x.cpu().float()[0].numpy()\nc = torch.zeros(2, device=None)\n"
    assert [f.split(" (")[0] for f in violations(subtle, "data")] == ["line 1", "line 3"], violations(subtle, "data")
    hidden = "from time import perf_counter\nimport torch as t\nfrom torch import zeros\nx.to('cuda:0')\n"
    assert [f.split(": ")[0] for f in violations(hidden, "data")] == [f"line {i} (module level)" for i in (1, 2, 3, 4)]
    magic = {"cells": [{"cell_type": "code", "source": ["%timeit render(rays)\n", "%matplotlib inline"]}]}
    path = tmp_path / "magic.ipynb"
    path.write_text(json.dumps(magic))
    assert violations(_notebook_source(path), "magic", notebook=True) == [
        "line 1 (module level): time.perf_counter() reads the clock without waiting for the GPU"
    ]
    # VolumeModel.__init__ of helpers/fitting.py may make its parameters on the CPU; another class may not
    other = violations(bad.replace("class VolumeModel", "class Other"), "fitting")
    assert other[-1].startswith("line 15 (Other.__init__): torch.zeros() without device="), other
