"""Ship the book's JavaScript with the book, so that it reads offline: MathJax and plotly.js.

Both come from pip packages pinned in ``requirements.txt`` (so ``make book`` on a fresh
machine, and CI, get them from PyPI with everything else), and are copied into the
build's ``_static/`` folder; no page loads a script from another host.

- **MathJax 3.2.2** from ``sphinx-mathjax-offline``: its ``tex-chtml.js`` and the
  folders that script loads on demand (fonts, TeX extensions, accessibility) go to
  ``_static/mathjax/``, and ``mathjax_path`` points there (Sphinx's default is a CDN).
- **plotly.js** from ``plotly`` (``package_data/plotly.min.js``) goes to
  ``_static/plotly.min.js``, and is added to the pages that hold a plotly figure (a
  ``plotly-graph-div``; Chapter 6 renders its figures with ``include_plotlyjs=False``).

No Jupyter widgets: their scripts (require.js, the widget manager) would come from a CDN, so
``nb_ipywidgets_js`` in ``_config.yml`` is empty and the book shows no live widget. The chapters'
``interact`` sliders (Chapters 2 and 6) are for readers running the notebooks; when the book
executes them, their state is saved in the notebook and myst-nb would embed it in the page
(120 kB for Chapter 2) for nothing to render, so it is dropped here. Progress bars are text
(``from tqdm import tqdm``), never widgets.
"""

from __future__ import annotations

import shutil
from importlib import metadata, util
from pathlib import Path

from sphinx.errors import ExtensionError

MATHJAX_DIST = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "tex-chtml.js"
#: The other combined bundles and the SVG output are never loaded by tex-chtml.js.
MATHJAX_SKIP = {"output/svg", "output/svg.js"}
PLOTLY_JS = "plotly.min.js"


def mathjax_dir() -> Path:
    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError:
        raise ExtensionError(
            f"The book ships MathJax from the pip package {MATHJAX_DIST!r}, which is not installed; "
            "run `pip install -r requirements.txt` (or `make book`)."
        ) from None
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (folder / MATHJAX_ENTRY).is_file():
        raise ExtensionError(f"{folder} has no {MATHJAX_ENTRY}; reinstall {MATHJAX_DIST} from requirements.txt.")
    return folder


def plotly_js() -> Path:
    spec = util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError(
            "The book ships plotly.js from the pip package 'plotly', which is not installed; "
            "run `pip install -r requirements.txt` (or `make book`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise ExtensionError(f"{path} is missing; reinstall plotly from requirements.txt.")
    return path


def _mathjax_ignore(folder: Path):
    def ignore(directory, names):
        rel = Path(directory).relative_to(folder)
        skipped = set()
        for name in names:
            path = (rel / name).as_posix()
            top_level_bundle = rel == Path(".") and name.endswith(".js") and name != MATHJAX_ENTRY
            if top_level_bundle or path in MATHJAX_SKIP:
                skipped.add(name)
        return skipped

    return ignore


def use_local_mathjax(app, config):
    config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"  # relative paths are read from _static/
    mathjax_dir(), plotly_js()  # fail at the start of the build, not after executing every notebook


def add_plotly_where_needed(app, pagename, templatename, context, doctree):
    if "plotly-graph-div" in (context.get("body") or ""):
        app.add_js_file(PLOTLY_JS)  # called in html-page-context: this page only, in <head>, before the figure


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def drop_widget_state(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [
            s for s in scripts if (getattr(s, "attributes", None) or {}).get("type") != WIDGET_STATE
        ]


def copy_assets(app, exc):
    if app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    source = mathjax_dir()
    shutil.copytree(source, static / "mathjax", ignore=_mathjax_ignore(source), dirs_exist_ok=True)
    shutil.copy2(plotly_js(), static / PLOTLY_JS)


def setup(app):
    app.connect("config-inited", use_local_mathjax)
    app.connect("html-page-context", add_plotly_where_needed)
    app.connect("html-page-context", drop_widget_state, priority=900)  # after myst-nb has added the page's scripts
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
