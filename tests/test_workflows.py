"""The GitHub Actions files, linted offline, so a broken publishing workflow fails here, not on GitHub.

Two linters from PyPI (pinned in requirements.txt), both offline: check-jsonschema validates
each file against the schema GitHub's editor uses (SchemaStore's, vendored in the package:
misspelt keys, missing ``runs-on``, wrong types), and zizmor audits what a schema cannot see
(actions not pinned to a commit, template injection, excessive permissions, leaked
credentials). actionlint itself is not used: its PyPI wrapper downloads the binary from
GitHub when it installs, which a machine limited to package registries cannot do.
"""

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
PUBLISH = GITHUB / "workflows" / "publish.yml"


def schema_check(schema, paths):
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def zizmor(path):
    exe = Path(sysconfig.get_path("scripts")) / "zizmor"
    exe = str(exe) if exe.exists() else shutil.which("zizmor")
    assert exe, "zizmor is not installed (it is pinned in requirements.txt)"
    # --offline: no GitHub API (audits that need it are skipped); exit code 0 only without findings
    cmd = [exe, "--offline", "--no-progress", "--color=never", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_there_is_a_publishing_workflow():
    assert PUBLISH in WORKFLOWS


def test_workflows_match_githubs_schema():
    result = schema_check("vendor.github-workflows", WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    result = schema_check("vendor.dependabot", [GITHUB / "dependabot.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing():
    result = zizmor(GITHUB)
    assert result.returncode == 0, result.stdout + result.stderr


def broken_copy(tmp_path, old, new, count=1):
    text = PUBLISH.read_text()
    assert old in text
    (tmp_path / "workflows").mkdir()
    copy = tmp_path / "workflows" / "publish.yml"
    copy.write_text(text.replace(old, new, count))
    return copy


def test_the_linters_fail_on_a_misspelt_key(tmp_path):
    copy = broken_copy(tmp_path, "runs-on:", "runs_on:")
    assert schema_check("vendor.github-workflows", [copy]).returncode != 0
    assert zizmor(copy).returncode != 0  # zizmor refuses a file that is not a valid workflow


def test_zizmor_fails_on_an_unpinned_action_and_an_injection(tmp_path):
    checkout = re.search(r"actions/checkout@\S+", PUBLISH.read_text()).group(0)
    copy = broken_copy(tmp_path, checkout, "actions/checkout@main")
    text = copy.read_text().replace("run: make book", 'run: echo "${{ github.event.head_commit.message }}"; make book')
    copy.write_text(text)
    assert schema_check("vendor.github-workflows", [copy]).returncode == 0  # valid, yet unsafe
    found = zizmor(copy)
    assert found.returncode != 0
    assert "unpinned-uses" in found.stdout and "template-injection" in found.stdout


def test_publish_builds_with_the_readmes_command_and_names_no_repository():
    workflow = yaml.safe_load(PUBLISH.read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]
    assert "make book" in runs
    assert ".ci/apt-install" in runs  # the same Debian packages as CI (.ci/run installs them the same way)
    assert ".ci/apt-install" in (ROOT / ".ci" / "run").read_text()
    uploads = [s for s in workflow["jobs"]["build"]["steps"] if "upload-pages-artifact" in s.get("uses", "")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"
    configured = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    owner_repo = configured.removeprefix("https://github.com/").strip("/")
    assert owner_repo not in PUBLISH.read_text(), "the workflow must publish whichever repository it runs in"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits(path):
    # zizmor checks this too; this says it plainly, and keeps the version comment Dependabot updates.
    uses = re.findall(r"uses:\s*(\S+)(.*)", path.read_text())
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{ref}: pin a commit, not a tag or branch"
        assert re.search(r"#\s*v\d", comment), f"{ref}: say which release the commit is"
