"""The built book, opened page by page in headless Chromium as a reader would (see browser_check.py).

Runs on an already-built ``_build/html`` (``make book``). Without a built book or
without Chromium the check skips and says why, unless ``REQUIRE_BROWSER_CHECK=1``
(set by ``.ci/run``), where that is a failure. Screenshots of the landing page and
of a chapter are kept in ``artifacts/``.
"""

import os
import re
import shutil
from pathlib import Path

import browser_check
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
ARTIFACTS = ROOT / "artifacts"
REQUIRED = os.environ.get("REQUIRE_BROWSER_CHECK") == "1"
CHROMIUM = browser_check.find_chromium()


def skip_or_fail(reason):
    if REQUIRED:
        pytest.fail(f"{reason} (REQUIRE_BROWSER_CHECK=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        skip_or_fail("Chromium is not installed (Debian: apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def book_report(chromium):
    if not (SITE / "book" / "index.html").is_file():
        skip_or_fail(f"the book is not built ({SITE} has no book/index.html); run `make book` first")
    shots = {"book/index.html": ARTIFACTS / "landing.png"}
    chapters = sorted(p.relative_to(SITE).as_posix() for p in (SITE / "notebooks").glob("*.html"))
    if chapters:
        # the chapter whose result the landing page shows, else the first one
        fitted = [c for c in chapters if c.startswith("notebooks/04")]
        chapter = (fitted or chapters)[0]
        shots[chapter] = ARTIFACTS / f"chapter-{Path(chapter).stem}.png"
        for page in chapters:  # and the chapter with the 3-D view (check_page adds a -3d.png of the view)
            if page.startswith("notebooks/06"):
                shots[page] = ARTIFACTS / f"chapter-{Path(page).stem}.png"
    # at a desktop width and a phone's (the phone's screenshots get "-390px" in their names)
    return browser_check.check_site(SITE, chromium, screenshots=shots, widths=tuple(browser_check.WIDTHS))


def toc_files():
    return re.findall(r"^\s*(?:root|- file):\s*(\S+)", (ROOT / "_toc.yml").read_text(), flags=re.M)


def test_every_page_renders_without_problems(book_report):
    assert not book_report.problems, "problems a reader would see:\n" + "\n".join(book_report.problems)


def test_every_page_of_the_toc_was_opened(book_report):
    for width in browser_check.WIDTHS:
        opened = {p.path for p in book_report.pages if p.width == width}
        missing = [f for f in toc_files() if f"{f}.html" not in opened]
        assert not missing, f"pages in _toc.yml not checked at {width} px: {missing}"


def test_screenshots_were_saved(book_report):
    assert book_report.screenshots
    for shot in book_report.screenshots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot


def test_the_book_reads_offline_with_typeset_maths(book_report):
    # Requests to other hosts and untypeset TeX are problems of their page (see above); here: the maths
    # really was there and typeset, so the check above was not vacuous.
    assert not [p for p in book_report.pages if p.blocked_requests], "pages requested other hosts"
    assert sum(p.math for p in book_report.pages) > 50, "no page of the book has typeset maths?"


def test_the_3d_view_drew(book_report):
    mesh_pages = [p for p in book_report.pages if p.path.startswith("notebooks/06")]
    assert mesh_pages, "Chapter 6 was not built"
    drawn = mesh_pages[0].webgl_figures
    assert drawn and min(drawn) >= browser_check.MIN_DRAWN_FRACTION, drawn
    assert (ARTIFACTS / "chapter-06_mesh-3d.png").stat().st_size > 10_000


def test_launch_buttons_open_the_same_notebooks_in_colab(book_report):
    # Colab opens github.com/<repository.url>/blob/<branch>/<path>; that path must be the chapter's notebook,
    # and on a zh-TW page its translated copy (locales/zh_TW/notebooks/, the same code cells).
    config = (ROOT / "_config.yml").read_text()
    block = re.search(r"^repository:\n((?:[ \t]+.*\n|\n)+)", config, flags=re.M).group(1)
    url = re.search(r"^\s+url:\s*(\S+)", block, flags=re.M).group(1)
    branch = re.search(r"^\s+branch:\s*(\S+)", block, flags=re.M).group(1)
    prefix = "https://colab.research.google.com/github/" + url.removeprefix("https://github.com/") + f"/blob/{branch}/"
    chapters = [p for p in book_report.pages if p.path.removeprefix("zh-tw/").startswith("notebooks/")]
    assert any(p.path.startswith("zh-tw/") for p in chapters) and any(p.path.startswith("notebooks/") for p in chapters)
    for page in chapters:
        notebook = page.path.removesuffix(".html") + ".ipynb"
        if notebook.startswith("zh-tw/"):
            notebook = "locales/zh_TW/" + notebook.removeprefix("zh-tw/")
        colab = [link for link in page.external_links if link.startswith("https://colab.research.google.com/")]
        assert colab == [prefix + notebook], (page.path, colab)
        assert (ROOT / notebook).is_file()


def test_launch_buttons_only_on_notebook_pages(book_report):
    # Colab opens notebooks; a Markdown page's button (status.md is a MyST-NB text page) leads nowhere
    pages = [p for p in book_report.pages if not p.path.removeprefix("zh-tw/").startswith("notebooks/")]
    assert any(p.path == "book/status.html" for p in pages)
    for page in pages:
        launch = [link for link in page.external_links if "colab.research.google.com" in link or "mybinder" in link]
        assert not launch, (page.path, launch)


def test_how_to_run_clones_the_configured_repository(book_report):
    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    html = (SITE / "book" / "how_to_run.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)  # the highlighted code block, as a reader copies it
    assert f"git clone {url}.git\ncd {url.rsplit('/', 1)[-1]}\nmake book" in text


# --- the check itself must be able to fail ---------------------------------------------------------

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2d8a5a40000000049454e44ae426082"
)


def tiny_site(root: Path, img_src="img/dot.png", link="page.html#there", script="", body=""):
    (root / "img").mkdir(parents=True)
    (root / "img" / "dot.png").write_bytes(PNG_1x1)
    (root / "index.html").write_text(
        "<!doctype html><html><head><meta name='viewport' content='width=device-width, initial-scale=1'></head>"
        f"<body><h1 id='top'>Tiny</h1><img src='{img_src}' alt='dot'>"
        f"<a href='{link}'>next</a><a href='#top'>top</a>{body}{script}</body></html>"
    )
    (root / "page.html").write_text(
        "<!doctype html><html><body><p id='there'>here</p><a href='index.html'>back</a></body></html>"
    )
    return root


def problems(site, chromium):
    return browser_check.check_site(site, chromium).problems


def test_check_passes_a_sound_site(tmp_path, chromium):
    assert problems(tiny_site(tmp_path), chromium) == []


def test_check_catches_a_broken_image(tmp_path, chromium):
    found = problems(tiny_site(tmp_path, img_src="img/missing.png"), chromium)
    assert any("image did not load" in p and "missing.png" in p for p in found), found
    assert any("404" in p for p in found), found


def test_check_catches_a_broken_link_and_anchor(tmp_path, chromium):
    assert any(
        "broken link to nowhere.html" in p for p in problems(tiny_site(tmp_path / "a", link="nowhere.html"), chromium)
    )
    found = problems(tiny_site(tmp_path / "b", link="page.html#gone"), chromium)
    assert any("page.html#gone" in p and "anchor" in p for p in found), found


def test_check_catches_javascript_errors(tmp_path, chromium):
    found = problems(tiny_site(tmp_path, script="<script>undefinedFunction()</script>"), chromium)
    assert any("JavaScript exception" in p and "undefinedFunction" in p for p in found), found


def test_check_catches_a_broken_image_in_a_built_page(tmp_path, chromium):
    # The same on a real page of the book: copy the site, break the first output figure of a chapter.
    chapters = sorted((SITE / "notebooks").glob("*.html")) if SITE.is_dir() else []
    if not chapters:
        skip_or_fail("the book is not built; run `make book` first")
    site = tmp_path / "html"
    shutil.copytree(SITE, site)
    page = site / chapters[0].relative_to(SITE)
    broken, count = re.subn(
        r'(<img\b[^>]*?\bsrc="\.\./_images/)([^"]+)(")', r"\1broken-\2\3", page.read_text(), count=1
    )
    assert count == 1, f"{page.name} has no figure to break"
    page.write_text(broken)
    rel = page.relative_to(site).as_posix()
    report = browser_check.check_site(site, chromium, pages=[rel])
    assert any("image did not load" in p and "broken-" in p for p in report.problems), report.problems
    # and the untouched copy of the same page lacks exactly those: the failure is the broken figure, nothing else
    page.write_text(chapters[0].read_text())
    clean = browser_check.check_site(site, chromium, pages=[rel]).problems
    added = [p for p in report.problems if p not in clean]
    assert added and all("broken-" in p or "404" in p for p in added), added


def test_check_catches_a_request_to_another_host(tmp_path, chromium):
    found = problems(tiny_site(tmp_path, script="<script src='https://cdn.example.org/lib.js'></script>"), chromium)
    assert any("another host" in p and "cdn.example.org" in p for p in found), found


def test_check_catches_untypeset_maths(tmp_path, chromium):
    # what a page shows when MathJax did not load: Sphinx's math markup with the TeX still in it
    found = problems(tiny_site(tmp_path / "a", body="<p><span class='math notranslate'>\\(x^2\\)</span></p>"), chromium)
    assert any("raw TeX" in p and "x^2" in p for p in found), found
    found = problems(tiny_site(tmp_path / "b", body="<p>the loss $$L = x^2$$ here</p>"), chromium)
    assert any("raw TeX delimiters" in p for p in found), found


WEBGL_PLOT = """<div class='js-plotly-plot' id='view' style='width:240px;height:160px'>
<canvas id='c' width='240' height='160'></canvas></div>
<script>const gl = document.getElementById('c').getContext('webgl');
gl.clearColor(0, 0, 0, 0); gl.clear(gl.COLOR_BUFFER_BIT);
{draw}</script>"""
DRAW_A_SQUARE = """gl.enable(gl.SCISSOR_TEST); gl.scissor(40, 40, 120, 80);
gl.clearColor(0.8, 0.2, 0.1, 1); gl.clear(gl.COLOR_BUFFER_BIT);"""


def test_check_passes_a_3d_view_that_drew(tmp_path, chromium):
    report = browser_check.check_site(tiny_site(tmp_path, body=WEBGL_PLOT.format(draw=DRAW_A_SQUARE)), chromium)
    assert report.problems == []
    assert report.pages[0].webgl_figures == [pytest.approx(120 * 80 / (240 * 160), abs=0.02)]


def test_check_catches_a_3d_view_that_drew_nothing(tmp_path, chromium):
    found = problems(tiny_site(tmp_path, body=WEBGL_PLOT.format(draw="")), chromium)
    assert any("3-D figure view drew nothing" in p for p in found), found


def test_check_catches_widget_scripts_and_state(tmp_path, chromium):
    site = tiny_site(
        tmp_path,
        script="<script src='require.min.js'></script><script type='application/vnd.jupyter.widget-state+json'>"
        '{"state": {}}</script>',
    )
    (site / "require.min.js").write_text("window.requirejs = 1;")
    found = problems(site, chromium)
    assert any("widget script" in p and "require.min.js" in p for p in found), found
    assert any("widget state" in p for p in found), found


ARTICLE = "<article class='bd-article'><section><h2 id='s'>Results</h2>{}</section></article>"
FIGURE = (
    "<figure id='fig-a'><img src='img/dot.png' alt='A red dot on white.'>"
    "<figcaption><p><span class='caption-number'>Fig. 2.1 </span><span class='caption-text'>A dot.</span></p>"
    "</figcaption></figure>"
)


def test_check_passes_a_numbered_figure(tmp_path, chromium):
    assert problems(tiny_site(tmp_path, body=ARTICLE.format(FIGURE)), chromium) == []


@pytest.mark.parametrize(
    "body, expected",
    [
        ("<img src='img/dot.png' alt='A red dot.'>", "image 1 is not a numbered figure with a caption (no caption)"),
        (FIGURE.replace("Fig. 2.1 ", ""), "unnumbered"),
        (FIGURE.replace("A red dot on white.", "../_images/0a6006eacde8a954c0a5.png"), "a file name as alt text"),
        (FIGURE.replace("A red dot on white.", ""), "no alt text"),
    ],
    ids=["no figure", "no number", "file name alt", "empty alt"],
)
def test_check_catches_figures_without_caption_or_alt(tmp_path, chromium, body, expected):
    found = problems(tiny_site(tmp_path, body=ARTICLE.format(body)), chromium)
    assert any(expected in p and 'in "Results"' in p for p in found), found


WIDE = "<section><h2 id='w'>Wide</h2><p>{}</p></section>"


def test_check_catches_a_page_wider_than_a_phone(tmp_path, chromium):
    site = tiny_site(tmp_path / "a", body=WIDE.format("<span style='display:inline-block;width:600px'>long</span>"))
    assert problems(site, chromium) == []  # fits at 1280 px
    found = browser_check.check_site(site, chromium, widths=(390,)).problems
    assert any(
        "at 390 px" in p and "wider than the 390 px screen" in p and "<span>" in p and 'in "Wide"' in p for p in found
    ), found


def test_check_allows_a_wide_line_inside_a_scrolling_block(tmp_path, chromium):
    code = "<div style='overflow-x:auto'><pre>" + "x = 1; " * 60 + "</pre></div>"
    site = tiny_site(tmp_path, body=WIDE.format(code))
    assert browser_check.check_site(site, chromium, widths=(390,)).problems == []
    # and without the scrolling block around it, the same line is a problem
    site = tiny_site(tmp_path / "b", body=WIDE.format(code.replace("overflow-x:auto", "")))
    assert any(
        "wider than the 390 px screen" in p for p in browser_check.check_site(site, chromium, widths=(390,)).problems
    )


def test_check_catches_content_cut_off_by_a_clipping_block(tmp_path, chromium):
    # the theme's admonitions clip (overflow: hidden): a long unbreakable word inside is cut off, not scrolled
    word = "<code style='white-space:nowrap'>" + "fitting.FitSettings.for_device" * 6 + "</code>"
    box = f"<div style='overflow:hidden;border:1px solid'><p>{word}</p></div>"
    site = tiny_site(tmp_path, body=ARTICLE.format(box))
    found = browser_check.check_site(site, chromium, widths=(390,)).problems
    assert any("cut off at 390 px" in p and "<code>" in p and 'in "Results"' in p for p in found), found
