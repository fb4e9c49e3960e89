"""helpers/ is shaped like the book: every public function names the section that teaches it, that
section exists and mentions it, and nothing public is unused."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Infrastructure with no chapter of its own: the setup cell's installer and the argument checks.
UNSTAMPED = {"colab", "checks"}


def public_names():
    for path in sorted((ROOT / "helpers").glob("*.py")):
        if path.stem.startswith("_"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield path.stem, node.name, ast.get_docstring(node) or ""


def chapter(number: int) -> tuple[list[str], str]:
    """The chapter's level-2 sections' text (Markdown and code, each from its heading to the next; the
    chapter's opening counts as part of the first) and all its text."""
    path = next((ROOT / "notebooks").glob(f"{number:02d}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells)
    sections = [""]
    for line in text.splitlines():
        if line.startswith("## "):  # in code, a comment starts "# ", never "## "
            sections.append("")
        sections[-1] += line + "\n"
    return ([sections[0] + sections[1], *sections[2:]] if len(sections) > 1 else []), text


NAMES = list(public_names())


@pytest.mark.parametrize("module, name, doc", NAMES, ids=[f"{m}.{n}" for m, n, _ in NAMES])
def test_every_public_helper_names_the_section_that_teaches_it(module, name, doc):
    if module in UNSTAMPED:
        return
    stamp = re.search(r"Defined in §(\d+)\.(\d+)", doc)
    assert stamp, f"helpers.{module}.{name}'s docstring does not say where it is defined ('Defined in §C.S')"
    number, section = int(stamp.group(1)), int(stamp.group(2))
    sections, text = chapter(number)
    assert 1 <= section <= len(sections), f"§{number}.{section} does not exist (Chapter {number} has {len(sections)})"
    assert re.search(rf"\b{name}\b", text), f"Chapter {number} never mentions {name}, yet its docstring points there"
    mentioned = [i for i, part in enumerate(sections, 1) if re.search(rf"\b{name}\b", part)]
    assert section in mentioned, f"{module}.{name} says §{number}.{section}, which never mentions it; {mentioned} do"


def test_no_public_helper_is_unused():
    """A public function earns its place when a chapter or a test uses it (or another helper does)."""
    corpus = "\n".join(
        [p.read_text() for p in (ROOT / "tests").rglob("*.py")]
        + [p.read_text() for p in (ROOT / "notebooks").glob("*.ipynb")]
    )
    helpers_text = {p.stem: p.read_text() for p in (ROOT / "helpers").glob("*.py")}
    unused = []
    for module, name, _ in NAMES:
        elsewhere = any(re.search(rf"\b{name}\b", t) for m, t in helpers_text.items() if m != module)
        within = len(re.findall(rf"\b{name}\b", helpers_text[module])) > 1  # called, not only defined
        if not (re.search(rf"\b{name}\b", corpus) or elsewhere or within):
            unused.append(f"{module}.{name}")
    assert not unused, f"public helpers nothing uses: {unused}"
