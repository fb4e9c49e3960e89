"""Style: ruff's lint and format checks over all Python code and the notebooks' code cells.

The rules are in pyproject.toml. To fix what this reports:
``.venv/bin/python -m ruff format . && .venv/bin/python -m ruff check --fix .``
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def ruff(*args, cwd=ROOT):
    # --no-cache: nothing written into the checkout; ruff takes well under a second on this repository anyway
    cmd = [sys.executable, "-m", "ruff", *args, "--no-cache"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_ruff_check():
    result = ruff("check", "--output-format=concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = ruff("format", "--check", "--output-format=concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun: .venv/bin/python -m ruff format ."


def test_every_notebook_and_module_is_checked():
    listed = ruff("check", "--show-files", ".").stdout
    checked = {Path(line.strip()).resolve() for line in listed.splitlines() if line.strip()}
    expected = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("helpers/*.py"), *ROOT.glob("tests/**/*.py")]
    assert expected
    missing = [str(p.relative_to(ROOT)) for p in expected if p.resolve() not in checked]
    assert not missing, f"ruff does not check {missing}"


def test_ruff_can_fail(tmp_path):
    # The project's own configuration, on a module and a notebook with an unused import and a long line.
    bad = "import os\n\nx = [" + ", ".join(["1"] * 60) + "]\n"
    (tmp_path / "bad.py").write_text(bad)
    cell = {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [], "source": bad}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "bad.ipynb").write_text(json.dumps(notebook))
    for name in ("bad.py", "bad.ipynb"):
        found = ruff("check", "--config", str(PYPROJECT), "--output-format=concise", name, cwd=tmp_path)
        assert found.returncode == 1 and "F401" in found.stdout, found.stdout + found.stderr
        assert ruff("format", "--config", str(PYPROJECT), "--check", name, cwd=tmp_path).returncode == 1


def test_pre_commit_runs_the_pinned_ruff():
    # The git hook and the test must agree on what is clean: same ruff version.
    pinned = re.search(r"^ruff==([^\s#]+)", (ROOT / "requirements.txt").read_text(), flags=re.M).group(1)
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    revs = {repo["repo"].rsplit("/", 1)[-1]: repo["rev"] for repo in hooks}
    assert revs["ruff-pre-commit"] == f"v{pinned}"
    ids = {hook["id"] for repo in hooks for hook in repo["hooks"]}
    assert {"nbstripout", "ruff-check", "ruff-format"} <= ids
