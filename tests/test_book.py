"""``helpers.book`` (GIFs and glue for other pages) and the book pages that paste from the chapters."""

import base64
import builtins
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import book

ROOT = Path(__file__).resolve().parent.parent


def decode_gif(data: bytes):
    im = Image.open(io.BytesIO(data))
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append((np.asarray(im.convert("RGB")), im.info.get("duration")))
    return im, frames


def test_gif_has_every_frame_in_order():
    # Frames of distinct flat colours: a GIF palette keeps them exactly.
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    frames = colours[:, None, None, :].expand(4, 6, 8, 3)
    im, decoded = decode_gif(book.animated_gif(frames, scale=1, frame_ms=70))
    assert im.size == (8, 6) and im.info.get("loop") == 0
    assert len(decoded) == 4
    for (pixels, duration), colour in zip(decoded, colours, strict=True):
        assert duration == 70
        assert (pixels == (colour.numpy() * 255).astype(np.uint8)).all()


def test_gif_scales():
    im, decoded = decode_gif(book.animated_gif(torch.rand(3, 10, 20, 3), scale=1.5))
    assert im.size == (30, 15) and len(decoded) == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((2, 4, 4, 3), float("nan")), "NaN"),
        (torch.zeros(1, 4, 4, 3), "at least 2"),
        (torch.zeros(2, 4, 4), r"\(N, H, W, 3\)"),
    ],
)
def test_gif_refuses_bad_frames(bad, message):
    with pytest.raises(ValueError, match=message):
        book.animated_gif(bad)


def test_side_by_side_joins_left_to_right():
    left, right = torch.zeros(2, 4, 5, 3), torch.ones(2, 4, 5, 3) * 0.5
    joined = book.side_by_side(left, right, gap=3)
    assert joined.shape == (2, 4, 13, 3)
    assert (joined[:, :, :5] == 0).all() and (joined[:, :, 5:8] == 1).all() and (joined[:, :, 8:] == 0.5).all()
    with pytest.raises(ValueError, match="same shape"):
        book.side_by_side(left, torch.zeros(3, 4, 5, 3))


def test_gif_html_embeds_the_gif():
    gif = book.animated_gif(torch.rand(2, 4, 4, 3))
    html = book.gif_html(gif, alt='a "quoted" <cow>').data
    src = re.search(r'src="data:image/gif;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(src) == gif
    assert 'alt="a &quot;quoted&quot; &lt;cow>"' in html
    with pytest.raises(ValueError, match="alt"):
        book.gif_html(gif, alt="")


def test_glue_displays_without_myst_nb(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda value: shown.append(value))
    real_import = builtins.__import__

    def no_myst_nb(name, *args, **kwargs):
        if name.startswith("myst_nb"):
            raise ImportError("not in Colab")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst_nb)
    book.glue("key", "value")
    assert shown == ["value"]


# --- pages that paste from chapters ----------------------------------------------------------------


def glue_references():
    """(page, key, notebook) for every cross-document glue directive or role in book/*.md."""
    refs = []
    for page in sorted((ROOT / "book").glob("*.md")):
        text = page.read_text()
        for key, doc in re.findall(r"```\{glue(?::\w+)?\}\s+(\S+)\s*\n:doc:\s*(\S+)", text):
            refs.append((page.name, key, (page.parent / doc).resolve()))
        for doc, key in re.findall(r"\{glue(?::\w+)?\}`([^`]+?\.ipynb)::([^`:]+)", text):
            refs.append((page.name, key, (page.parent / doc).resolve()))
    return refs


def test_the_landing_page_pastes_from_the_chapters():
    refs = glue_references()
    assert any(page == "index.md" for page, _, _ in refs), "the landing page shows no result from a chapter"


@pytest.mark.parametrize("page, key, notebook", glue_references(), ids=lambda x: getattr(x, "name", str(x)))
def test_every_pasted_key_is_glued_by_its_notebook(page, key, notebook):
    assert notebook.is_file(), f"{page} pastes from {notebook}, which does not exist"
    toc = (ROOT / "_toc.yml").read_text()
    assert f"file: {notebook.relative_to(ROOT).with_suffix('').as_posix()}" in toc, (
        f"{notebook.name} is not in _toc.yml"
    )
    code = "\n".join(
        "".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"
    )
    constants = {name: value for name, value in vars(book).items() if name.endswith("_KEY")}
    glued = set(re.findall(r"""glue\(\s*["']([^"']+)["']""", code))
    glued |= {constants[name] for name in re.findall(r"glue\(\s*book\.(\w+_KEY)", code) if name in constants}
    assert key in glued, f"{page} pastes {key!r}, but {notebook.name} glues only {sorted(glued)}"


# --- every chapter has the textbook apparatus ------------------------------------------------------

CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def markdown(path):
    return "\n".join(
        "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_has_learn_summary_exercises_and_citations(path):
    text = markdown(path)
    assert "**You will learn**" in text.split("\n## ")[0], "the chapter should open with **You will learn**"
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[-2:] == ["Summary", "Exercises"], (
        f"the chapter should close with Summary then Exercises, not {headings[-2:]}"
    )
    exercises = re.findall(r"^:::\{exercise\}\s*\n:label:\s*(\S+)", text, flags=re.M)
    # :::{solution} label, or ```{solution-start} label (gated: the solution holds code cells) ... ```{solution-end}
    solutions = re.findall(
        r"^(?::::\{solution\}|```\{solution-start\})\s*(\S+)\s*\n:class:\s*dropdown", text, flags=re.M
    )
    assert 2 <= len(exercises) <= 4, f"{len(exercises)} exercises; the book asks for 2 to 4"
    assert sorted(solutions) == sorted(exercises), "every exercise needs one hidden (dropdown) solution"
    assert re.search(r"\{cite(:\w+)?\}`", text), "cite the bibliography ({cite}`key`) where an idea comes from"
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))
    for cited in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
        for key in cited.split(","):
            assert key.strip() in keys, f"{key.strip()} is not in book/references.bib"


def test_benchmarks_page_shows_the_recorded_run():
    """The benchmarks page includes Markdown the benchmark wrote; it must match the recorded JSON and log."""
    sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
    import bench_fit

    results = json.loads((ROOT / "book" / "data" / "ch5_bench.json").read_text())
    assert (ROOT / "book" / "data" / "ch5_bench.md").read_text() == bench_fit.report(results)
    log = (ROOT / "book" / "data" / "ch5_bench.log").read_text()
    fast = results["fast"]
    assert f"final {fast['final_psnr']:.2f} dB after {fast['total_s']:.1f} s" in log
    page = (ROOT / "book" / "benchmarks.md").read_text()
    assert "{include} data/ch5_bench.md" in page and "data/ch5_bench.log" in page
