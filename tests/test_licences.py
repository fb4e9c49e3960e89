"""The licences and credits: in the files, in the README, in CITATION.cff and in every page's footer."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
# What a reader must be told, as the footer says it.
CREDITS = [
    "BSD 3-Clause",
    "CC BY 4.0",
    "fit_textured_volume",
    "Meta Platforms",
    "Keenan Crane",
    "Spot",
    "public domain",
]


def footer():
    return yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]


def test_licence_files():
    code = (ROOT / "LICENSE").read_text()
    assert code.startswith("BSD 3-Clause License")
    # the tutorial's code is adapted here, so its BSD notice travels with it
    assert "Copyright (c) Meta Platforms, Inc. and affiliates" in code
    assert "Attribution 4.0 International" in (ROOT / "LICENSE-CONTENT").read_text()


def test_readme_states_both_licences():
    readme = (ROOT / "README.md").read_text()
    for name in ["LICENSE", "LICENSE-CONTENT", "BSD 3-Clause", "CC BY 4.0", "CONTRIBUTING.md"]:
        assert name in readme


def test_footer_gives_licences_and_credits():
    missing = [c for c in CREDITS if c not in footer()]
    assert not missing, f"_config.yml html.extra_footer lacks {missing}"


def test_every_built_page_shows_the_footer():
    # both editions; not the theme's templates under _static/ (zh-tw/_static/ too)
    pages = sorted(p for p in HTML.rglob("*.html") if not any(s.startswith("_") for s in p.relative_to(HTML).parts))
    if not pages:
        pytest.skip("no built book: run `make book` first")
    first_line = footer().splitlines()[0]
    texts = {p: p.read_text(encoding="utf-8") for p in pages}
    # the site's root index.html is Jupyter Book's one-line redirect to the landing page, not a page
    texts = {p: t for p, t in texts.items() if not t.lstrip().lower().startswith('<meta http-equiv="refresh"')}
    without = [str(p.relative_to(HTML)) for p, t in texts.items() if first_line not in t]
    assert not without, f"pages without the licence footer (rebuild with `make book`?): {without}"


def test_citation_cff():
    # cffconvert (the CFF validator) cannot be installed beside check-jsonschema (it pins jsonschema 3),
    # so the schema's required keys and this file's promises are checked here.
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"] and cff["title"] and cff["authors"]
    assert cff["license"] == ["BSD-3-Clause", "CC-BY-4.0"]
    cited = {ref["title"] for ref in cff["references"]}
    assert {"PyTorch3D", "Spot (the cow mesh)"} <= cited
    # the repository is named once, in _config.yml; a fork's citation must not point at the original
    assert "repository-code" not in cff and "url" not in cff
