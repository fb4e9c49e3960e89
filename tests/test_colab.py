"""The Colab setup cell and ``helpers.colab``, with Colab simulated.

Nothing here installs anything or touches the network: pip is replaced by a
recorder, ``sys.modules`` by a dict, and "does PyTorch3D import" by a script.
"""

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from helpers import colab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def requirement_pins():
    """The pins, read independently of ``colab.pinned_versions`` (line by line, no regex)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


class Pip:
    """Records pip calls; optionally 'installs' by flipping what ``works`` reports."""

    def __init__(self, state=None):
        self.calls, self.state = [], state

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        if self.state is not None:
            self.state["installed"] = True
        return 0


def fake_torch(version, cuda):
    return types.SimpleNamespace(__version__=version, version=types.SimpleNamespace(cuda=cuda))


def test_present_is_a_no_op(capsys):
    pip = Pip()
    assert (
        colab.ensure_pytorch3d(run=pip, modules={"torch": fake_torch("2.11.0", None)}, works=lambda: True) == "present"
    )
    assert pip.calls == []
    assert capsys.readouterr().out == ""


def test_present_locally_for_real():
    # In the book's environment the real check finds PyTorch3D and installs nothing.
    assert colab.ensure_pytorch3d(run=Pip()) == "present"


@pytest.mark.parametrize(
    "loaded",
    [None, fake_torch("2.11.0", None), fake_torch("2.11.0+cu128", "12.8")],
    ids=["torch-not-imported", "same-torch-cpu-only", "same-torch-cuda"],
)
def test_missing_installs_exact_pins_and_guesses_nothing(loaded, capsys):
    state = {"installed": False}
    pip = Pip(state)
    modules = {} if loaded is None else {"torch": loaded}
    status = colab.ensure_pytorch3d(run=pip, modules=modules, works=lambda: state["installed"], version_info=(3, 12, 0))
    assert status == "installed"
    assert len(pip.calls) == 1
    cmd = pip.calls[0]
    pins = requirement_pins()
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    packages = [a for a in cmd[4:] if not a.startswith("-")]
    assert packages == [f"torch=={pins['torch']}", f"easypytorch3d=={pins['easypytorch3d']}"]
    # no wheel URL, find-links or index built from version strings (the seed's bug)
    assert not [
        a for a in cmd if "://" in a or a in ("-f", "--find-links", "--index-url", "--extra-index-url", "--no-index")
    ]
    assert not [a for a in cmd if re.search(r"cu\d+|pyt\d+|py3\d", a)]
    out = capsys.readouterr().out
    assert f"torch=={pins['torch']}" in out and "Restart" not in out


def test_different_torch_already_imported_asks_for_a_restart():
    state = {"installed": False}
    pip = Pip(state)
    old = fake_torch("2.5.1+cu121", "12.1")
    with pytest.raises(RuntimeError) as err:
        colab.ensure_pytorch3d(
            run=pip, modules={"torch": old}, works=lambda: state["installed"], version_info=(3, 12, 0)
        )
    msg = str(err.value)
    assert "2.5.1" in msg and requirement_pins()["torch"] in msg
    assert "Restart" in msg and "Runtime" in msg
    assert len(pip.calls) == 1  # installed first, so the restart is the only thing left to do


def test_broken_pytorch3d_with_a_different_torch_reinstalls_then_asks_for_a_restart():
    # PyTorch3D is there but its compiled part does not load (a torch mismatch): importing it imported torch.
    pip = Pip()
    with pytest.raises(RuntimeError, match="Restart"):
        colab.ensure_pytorch3d(
            run=pip, modules={"torch": fake_torch("2.9.0", "12.6")}, works=lambda: False, version_info=(3, 12, 0)
        )
    assert len(pip.calls) == 1


def test_install_that_still_does_not_import_says_so():
    with pytest.raises(RuntimeError, match="still does not import"):
        colab.ensure_pytorch3d(run=Pip(), modules={}, works=lambda: False, version_info=(3, 12, 0))


def test_unsupported_python_is_explained_before_installing():
    pip = Pip()
    with pytest.raises(RuntimeError, match=r"Python 3\.10 to 3\.13.*Python 3\.14"):
        colab.ensure_pytorch3d(run=pip, modules={}, works=lambda: False, version_info=(3, 14, 0))
    assert pip.calls == []


def test_pip_failure_propagates():
    def failing(cmd):
        raise subprocess.CalledProcessError(1, cmd)

    with pytest.raises(subprocess.CalledProcessError):
        colab.ensure_pytorch3d(run=failing, modules={}, works=lambda: False, version_info=(3, 12, 0))


def test_pins_are_required(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("torch==2.11.0\neasypytorch3d>=0.7\n")
    with pytest.raises(ValueError, match="easypytorch3d"):
        colab.pinned_versions(req)


def test_pins_match_requirements():
    pins = requirement_pins()
    assert colab.pinned_versions() == {"torch": pins["torch"], "easypytorch3d": pins["easypytorch3d"]}


# --- the setup cell itself -------------------------------------------------------------------------


def cells(path):
    return json.loads(path.read_text())["cells"]


def setup_cell(path):
    return next(c for c in cells(path) if c["cell_type"] == "code")


def source(cell):
    return "".join(cell["source"])


def test_every_notebook_starts_with_the_identical_setup_cell():
    assert NOTEBOOKS

    def setup_and_intro(path):
        nb_cells = cells(path)
        first = next(i for i, c in enumerate(nb_cells) if c["cell_type"] == "code")
        assert first > 0 and nb_cells[first - 1]["cell_type"] == "markdown", (
            f"{path.name}: no sentence before the setup cell"
        )
        return nb_cells[first], source(nb_cells[first - 1])

    reference, reference_intro = setup_and_intro(NOTEBOOKS[0])
    assert "ensure_pytorch3d()" in source(reference)
    for path in NOTEBOOKS:
        cell, intro = setup_and_intro(path)
        assert source(cell) == source(reference), f"{path.name}: first code cell differs from {NOTEBOOKS[0].name}'s"
        assert "hide-cell" in cell.get("metadata", {}).get("tags", []), f"{path.name}: setup cell not collapsed"
        assert intro == reference_intro, (
            f"{path.name}: the setup cell must follow the same markdown cell as {NOTEBOOKS[0].name}'s"
        )


def config_repository_url():
    # _config.yml is YAML; this one key is read without a YAML dependency, under its 'repository:' block.
    text = (ROOT / "_config.yml").read_text()
    block = re.search(r"^repository:\n((?:[ \t]+.*\n|\n)+)", text, flags=re.M).group(1)
    return re.search(r"^\s+url:\s*(\S+)", block, flags=re.M).group(1)


def test_setup_cell_clones_the_configured_repository():
    repo = re.search(r'^REPO = "([^"]+)"$', source(setup_cell(NOTEBOOKS[0])), flags=re.M).group(1)
    assert repo == config_repository_url()


def run_setup_cell(cwd, monkeypatch, clone_into_existing_fails=True):
    """Execute the cell's code in ``cwd`` with ``git clone`` faked (it creates the folder with helpers/)."""
    clones = []

    def fake_run(cmd, check=False, **kwargs):
        assert cmd[:2] == ["git", "clone"]
        target = Path(cmd[-1])
        if target.exists() and clone_into_existing_fails:
            raise subprocess.CalledProcessError(128, cmd, "destination path already exists")
        (target / "helpers").mkdir(parents=True)
        clones.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # helpers is already imported from this checkout, so the cell's import finds the real ensure_pytorch3d
    namespace = {}
    exec(compile(source(setup_cell(NOTEBOOKS[0])), "setup-cell", "exec"), namespace)
    return clones, namespace["root"]


def test_setup_cell_in_the_checkout_clones_nothing(monkeypatch):
    clones, root = run_setup_cell(ROOT / "notebooks", monkeypatch)
    assert clones == [] and root == ROOT


def test_setup_cell_alone_clones_once_and_reruns(tmp_path, monkeypatch):
    clones, root = run_setup_cell(tmp_path, monkeypatch)
    assert len(clones) == 1 and clones[0][-2] == config_repository_url()
    assert root == tmp_path / "volrender-book"
    assert sys.path[0] == str(root)
    clones, root = run_setup_cell(tmp_path, monkeypatch)  # Colab users re-run cells
    assert clones == [] and root == tmp_path / "volrender-book"


def test_how_to_run_states_the_pins_the_cell_installs():
    text = (ROOT / "book" / "how_to_run.md").read_text()
    pins = requirement_pins()
    assert f"pip install torch=={pins['torch']} easypytorch3d=={pins['easypytorch3d']}" in text


def test_importing_the_setup_helper_does_not_import_torch():
    """The setup cell must decide about installing before anything imports torch."""
    code = "import sys; import helpers.colab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "smi, expected",
    [
        (None, None),
        ("Tesla T4, 550.54.15", "driver 550.54.15.*580 or newer"),
        ("NVIDIA H100 80GB HBM3, 580.65.06", "torch cannot use it"),
    ],
)
def test_a_gpu_torch_cannot_use_is_explained(smi, expected):
    def which(name):
        return "/usr/bin/nvidia-smi" if smi is not None else None

    def run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 0, stdout=smi + "\n", stderr="")

    note = colab.unusable_gpu_note(run=run, which=which)
    if expected is None:
        assert note is None
    else:
        assert re.search(expected, note)
