"""No measured number is typed by hand into the book's prose.

A timing, PSNR, IoU, ratio or percentage in a Markdown cell or page must come from an executed
output or a recorded run through myst-nb's ``{glue:text}`` (or a page that includes the recorded
file), so that it cannot drift from the code. This test scans the prose (code, maths and roles
removed) for numbers that look measured: a number with a unit of time, decibels, a percentage, a
ratio such as ``366×``, or two or more decimals. A number that is a *setting* (a threshold, a
learning-rate schedule) is allowed only where ``SETTINGS`` lists it for that file, with the reason.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))

UNIT = (
    r"(?:dB|%|s/it(?:eration)?|s/step|s\b|ms\b|seconds?\b|minutes?\b|min\b|hours?\b|px\b|GiB|MB\b"
    r"|×(?!\s*\d)|x faster|times (?:faster|sooner|slower))"
)
MEASURED = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s*"
    + UNIT  # 4.6 s, 25.96 dB, 35%, 366×
    + r"|(?<![\w.])\d+\.\d{2,}(?![\w.])"  # 0.973, 29.19
    + r"|(?:PSNR|IoU|F-score|precision|recall)[^.\n]{0,25}?(?<![\w.])\d+\.\d+"  # PSNR of 30.1
)

# Numbers a chapter sets rather than measures: {file name: {phrase containing the number: why}}.
SETTINGS: dict[str, dict[str, str]] = {
    "01_dataset.ipynb": {},
    "02_rays.ipynb": {},
    "03_volumes_raymarching.ipynb": {},
    "04_fitting.ipynb": {
        "÷10 at 75%": "the original tutorial's learning-rate schedule, a setting",
        "tenfold after 75% of the": "the same schedule, described in words",
        "divided by 10 after 75% of the": "the same schedule, in the summary",
    },
    "05_fast.ipynb": {
        "at 75 % of the": "Chapter 4's learning-rate schedule (the original tutorial's), a setting",
    },
    "06_mesh.ipynb": {
        "1 % and 2 %": "the two F-score thresholds, fractions of the true cow's diagonal: settings of the comparison",
        "at 1 %": "names the threshold a score is measured at (1 % of the diagonal), a setting",
        "The 1 % threshold": "the threshold itself (its size in voxels is glued)",
        "clip the colour scale at 3 %": "where the distance figure's colour scale saturates, a display setting",
        "farther than 3 % of the": "the distance beyond which the text counts a vertex as far, a setting",
        "thresholds of 0.5 % and 5 %": "the thresholds Exercise 6.3 asks the reader to try",
        "At 5 %": "Exercise 6.3's solution names the threshold it discusses",
        "at 0.5 %": "Exercise 6.3's solution names the threshold it discusses",
    },
    "benchmarks.md": {
        "after 75 % of its 300": "the original tutorial's learning-rate schedule, a setting",
        "final PSNR within 2 s": "a target the recipe was tuned against, not a measurement",
        "at least 31 dB within 20 s": "a target the recipe was tuned against, not a measurement",
        "at least 31.4 dB within 1 s": "a target the recipe was tuned against, not a measurement",
        "with no failure in under 2 minutes": "a target the recipe was tuned against, not a measurement",
    },
    "glossary.md": {},
    "how_to_run.md": {
        "Python 3.10 to 3.13": "versions, not measurements",
    },
    "index.md": {},
    "notation.md": {},
    "references.md": {},
    "status.md": {},
}


#: Fenced directives whose body is code, data or generated, not prose a reader reads as typed.
NOT_PROSE = {"code", "code-block", "code-cell", "sourcecode", "literalinclude", "include", "math", "raw"}
FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<info>.*?)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)


def _fenced(m: re.Match) -> str:
    """A fenced block's prose: a directive's body (glossary, admonition, figure caption) without its options."""
    directive = re.match(r"\s*\{([\w:-]+)\}", m["info"])
    if directive is None or directive[1] in NOT_PROSE:
        return " "  # code
    return FENCE.sub(_fenced, re.sub(r"^:[\w-]+:.*$", " ", m["body"], flags=re.M))


def prose(markdown: str) -> str:
    """The text a reader reads as sentences: code, maths, inline code and roles removed (directives' text kept)."""
    text = FENCE.sub(_fenced, markdown)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", text)  # {glue:text}`key:.1f`, {numref}`fig-x`, ...
    text = re.sub(r"`[^`\n]+`", " ", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    return text


def markdown_of(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    return [path.read_text()]


def typed_numbers(text: str, allowed: dict[str, str]) -> list[str]:
    """The measured-looking numbers in ``text`` that no allowed phrase covers, with their context."""
    found = []
    for line in prose(text).splitlines():
        covered = [(m.start(), m.end()) for phrase in allowed for m in re.finditer(re.escape(phrase), line)]
        for m in MEASURED.finditer(line):
            if not any(a <= m.start() and m.end() <= b for a, b in covered):
                found.append(f"…{line[max(0, m.start() - 40) : m.end() + 20].strip()}…")
    return found


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_hand_typed_measurements(path):
    allowed = SETTINGS.get(path.name, {})
    found = [hit for text in markdown_of(path) for hit in typed_numbers(text, allowed)]
    assert not found, (
        f"{path.relative_to(ROOT)} states measured numbers by hand; paste them with {{glue:text}} from an "
        f"executed output or a recorded run, or list a setting in SETTINGS with its reason:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_allowed_setting_is_still_on_its_page(path):
    text = "\n".join(prose(t) for t in markdown_of(path))
    stale = [phrase for phrase in SETTINGS.get(path.name, {}) if phrase not in text]
    assert not stale, f"SETTINGS lists phrases no longer in {path.name}: {stale}"


def test_every_page_has_an_entry():
    assert {p.name for p in PAGES} <= set(SETTINGS), "add the new page to SETTINGS (an empty dict is fine)"


@pytest.mark.parametrize(
    "text",
    [
        "The loop fits in about 2 minutes on 2 cores.",
        "It ends at 25.96 dB on the held-out views.",
        "A step takes 0.54 s.",
        "The fast recipe is 568× sooner.",
        "About 35% of the samples fall outside.",
        "The landing page shows a PSNR of 30.1 on these views.",
        "The IoU is 0.973.",
        "The blur band is about 2 px wide.",
        "```{glossary}\nPSNR\n  It ends at 25.96 dB.\n```",
        "```{admonition} Before you start\n:class: note\n- **Run time:** about 2 minutes\n```",
    ],
)
def test_the_scan_finds_typed_measurements(text):
    assert typed_numbers(text, {}), f"the scan missed a typed measurement in {text!r}"


@pytest.mark.parametrize(
    "text",
    [
        "The fit reached {glue:text}`ch4-psnr:.2f` dB on the 30 held-out views.",
        "Images are 128×128 pixels, and the grid is $128^3$ with `lr=0.1`.",
        "```python\nprint(f'{psnr:.2f} dB after 4.6 s')\n```",
        "```{code-cell} ipython3\nprint(f'{psnr:.2f} dB after 4.6 s')\n```",
        "````{note}\nA note.\n```python\nx = 25.96  # dB\n```\n````",
        "Chapter 4 uses 1,024 rays per image and 10 views per step.",
    ],
)
def test_the_scan_ignores_glue_code_and_counts(text):
    assert not typed_numbers(text, {})


def test_an_allowed_setting_covers_only_its_phrase():
    text = "The rate drops at 75 % of the iterations; 35% of samples are wasted."
    found = typed_numbers(text, {"at 75 % of the iterations": "a schedule"})
    assert len(found) == 1 and "35%" in found[0]
