"""The Traditional Chinese (zh-TW) edition, built from the English sources and the catalogs in ``locales/``.

The English pages and notebooks are the one source. Sphinx's gettext builder extracts every
paragraph, heading, list item and caption as a message; ``locales/zh_TW/LC_MESSAGES/**/*.po`` holds
their translations. A changed English paragraph becomes a new message, so it shows up as
untranslated (or fuzzy) instead of drifting. From the repository root:

    python book/_ext/translations.py update     # after changing English text: refresh the catalogs
    python book/_ext/translations.py notebooks  # write locales/zh_TW/notebooks/*.ipynb (for Colab)
    python book/_ext/translations.py html       # build the zh-TW edition into _build/html/zh-tw

``html`` reuses the English build's execution cache (``_build/.jupyter_cache``): run ``make book``,
which runs both, rather than this alone. Nothing is executed a second time.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGUAGE = "zh_TW"
LOCALES = ROOT / "locales"
CATALOGS = LOCALES / LANGUAGE / "LC_MESSAGES"
NOTEBOOKS_OUT = LOCALES / LANGUAGE / "notebooks"  # Colab opens the translated notebooks from here
SITE_DIR = "zh-tw"  # the edition's folder in the built site: _build/html/zh-tw/
BUILD = ROOT / "_build"
POT_DIR = BUILD / "gettext"


def _build(builder: str, outdir: Path, doctrees: Path, overrides: dict, strict: bool) -> None:
    sys.path.insert(0, str(ROOT / "book" / "_ext"))  # the book's local extensions
    from jupyter_book.sphinx import build_sphinx

    overrides = {
        "external_toc_path": (ROOT / "_toc.yml").as_posix(),
        # the English build's cache: notebooks executed there are read, never run again
        "nb_execution_cache_path": str(BUILD / ".jupyter_cache"),
        "gettext_compact": False,
        "latex_individualpages": False,  # jupyter-book's CLI always passes it
        **overrides,
    }
    if strict:
        overrides["nitpicky"] = True
    result = build_sphinx(
        ROOT,
        outdir,
        noconfig=True,
        path_config=str(ROOT / "_config.yml"),
        confoverrides=overrides,
        doctreedir=doctrees,
        builder=builder,
        warningiserror=strict,
        keep_going=strict,
    )
    if result:
        raise SystemExit(f"the {builder} build of the {LANGUAGE} edition failed ({result})")


def figure_captions(path: Path) -> list[str]:
    """The figure captions in a notebook's cell metadata, as gettext sees them (lines joined by spaces)."""
    cells = json.loads(path.read_text())["cells"]
    captions = (c.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption") for c in cells)
    return [" ".join(c.split()) for c in captions if c]


def extract(outdir: Path = POT_DIR) -> Path:
    """Write the message templates (``.pot``), one per page, into ``outdir``.

    Nothing is executed: myst-nb makes a figure (and so its caption) only around an executed
    output, so the captions are read from the notebooks' cell metadata and added here.
    """
    from babel.messages.pofile import read_po, write_po

    overrides = {"nb_execution_mode": "off", "nb_execution_cache_path": str(outdir / ".cache")}
    _build("gettext", outdir, outdir / ".doctrees", overrides, strict=False)
    # Text a benchmark writes (book/data/*.md, included by book/benchmarks.md) is output, like what
    # code prints: it stays English, and a new recording must not make the catalogs stale.
    # (Sphinx files a table's cells from an included file under the line of the include directive.)
    included = {
        (page.as_posix(), i + 1)
        for page in (ROOT / "book").glob("*.md")
        for i, line in enumerate(page.read_text().splitlines())
        if re.match(r"^```+\{include\}\s+data/", line)
    }
    for pot in outdir.glob("**/*.pot"):
        with pot.open("rb") as f:
            template = read_po(f)
        for message in list(template):
            places = [((outdir / loc).resolve().as_posix(), line) for loc, line in message.locations]
            if message.id and places and all("/book/data/" in p or (p, n) in included for p, n in places):
                template.delete(message.id)
        with pot.open("wb") as f:
            write_po(f, template, width=0)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        pot = outdir / "notebooks" / f"{path.stem}.pot"
        with pot.open("rb") as f:
            template = read_po(f)
        for caption in figure_captions(path):
            if caption not in template:
                template.add(caption)
        with pot.open("wb") as f:
            write_po(f, template, width=0, no_location=True)
    return outdir


def templates(pot_dir: Path = POT_DIR) -> dict[str, Path]:
    """``{"notebooks/04_fitting": Path(".../04_fitting.pot"), ...}``: the pages that have messages."""
    return {p.relative_to(pot_dir).with_suffix("").as_posix(): p for p in sorted(pot_dir.glob("**/*.pot"))}


def update(pot_dir: Path = POT_DIR) -> None:
    """Bring the catalogs up to the templates: new messages empty, changed ones fuzzy, gone ones dropped."""
    from babel.messages.pofile import read_po, write_po

    for page, pot in templates(pot_dir).items():
        with pot.open("rb") as f:
            template = read_po(f)
        po_path = CATALOGS / f"{page}.po"
        if po_path.exists():
            with po_path.open("rb") as f:
                catalog = read_po(f, locale=LANGUAGE)
            catalog.update(template, update_header_comment=False)
            catalog.obsolete.clear()
            for message in catalog:  # babel reads an old "#| msgid" back as a comment "| msgid": drop it
                message.user_comments = [c for c in message.user_comments if not c.startswith("|")]
        else:
            catalog = copy.deepcopy(template)
            catalog.locale = LANGUAGE
            catalog.fuzzy = False
            catalog.project, catalog.version = "Differentiable Volumetric Rendering", ""
        po_path.parent.mkdir(parents=True, exist_ok=True)
        with po_path.open("wb") as f:
            write_po(f, catalog, width=0, no_location=True, ignore_obsolete=True, include_previous=True)
        print(f"{po_path.relative_to(ROOT)}: {len(catalog)} messages")


def translations(page: str) -> dict[str, str]:
    """``{English message: translation}`` for one page (only translated, non-fuzzy messages)."""
    from babel.messages.pofile import read_po

    path = CATALOGS / f"{page}.po"
    if not path.exists():
        return {}
    with path.open("rb") as f:
        catalog = read_po(f, locale=LANGUAGE)
    return {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}


# What may stand before a message on its line: indentation, quote marks, a heading's hashes, a list
# marker, a directive's opening fence ("Before you start" in ":::{admonition} Before you start"), or
# a table cell's bar, or the $$ of display maths; after it, the end of the line, a bar or $$.
_BEFORE = r"(^[ \t>]*(?:#{1,6}[ \t]+|[-*+][ \t]+|\d+\.[ \t]+|(?::::+|```+)\{[\w:-]+\}[ \t]+|\$\$[ \t]*)?|\|[ \t]*)"
_AFTER = r"(?=[ \t]*(?:\||\$\$|$))"


def _block_pattern(message: str) -> re.Pattern:
    # A message is a whole paragraph, heading, list item or table cell, its source lines joined by
    # single spaces; in the notebook the same words may be wrapped over several (indented) lines.
    words = [re.escape(w) for w in message.split()]
    return re.compile(_BEFORE + r"\s+".join(words) + _AFTER, re.M)


def translate_markdown(source: str, table: dict[str, str]) -> tuple[str, set[str]]:
    """Replace every whole message of ``table`` in ``source``; returns the text and the messages used."""
    used = set()
    for message in sorted(table, key=len, reverse=True):  # a long message may contain a short one
        source, n = _block_pattern(message).subn(lambda m, t=table[message]: m.group(1) + t, source)
        if n:
            used.add(message)
    return source, used


def translated_notebook(path: Path) -> dict:
    """The notebook at ``path`` with its Markdown cells and figure captions translated; code untouched."""
    page = path.relative_to(ROOT).with_suffix("").as_posix()
    table = translations(page)
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text, _ = translate_markdown("".join(cell["source"]), table)
            cell["source"] = text.splitlines(keepends=True)
        figure = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
        if "caption" in figure:
            figure["caption"], _ = translate_markdown(figure["caption"], table)
    nb["metadata"]["book_language"] = "zh-TW"
    return nb


def notebook_text(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def write_notebooks() -> None:
    NOTEBOOKS_OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        out = NOTEBOOKS_OUT / path.name
        out.write_text(notebook_text(translated_notebook(path)))
        print(f"wrote {out.relative_to(ROOT)}")


def html() -> None:
    """Build the zh-TW edition into ``_build/html/zh-tw`` with warnings as errors."""
    import yaml

    title = yaml.safe_load((ROOT / "_config.yml").read_text())["title"]
    overrides = {
        "language": LANGUAGE,
        "locale_dirs": [str(LOCALES)],
        "html_title": translations("book/index").get(title, title),  # the landing page's heading
    }
    _build("html", BUILD / "html" / SITE_DIR, BUILD / ".doctrees-zh_TW", overrides, strict=True)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["pot", "update", "notebooks", "html"])
    args = parser.parse_args(argv)
    if args.command in ("pot", "update"):
        extract()
    if args.command == "update":
        update()
    elif args.command == "notebooks":
        write_notebooks()
    elif args.command == "html":
        html()
    return 0


if __name__ == "__main__":
    sys.exit(main())
