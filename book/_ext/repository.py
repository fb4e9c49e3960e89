"""The book's repository, named in one place: ``repository.url`` in ``_config.yml``.

- ``{clone-command}`` (a directive) writes the shell commands that clone the repository and enter
  it, built from that URL when the book is built, followed by the directive's own lines (How to run
  uses it). A fork that changes ``repository.url`` gets its own clone command with no other edit.
- Launch buttons (Colab, Binder) appear only on pages made from a notebook (``.ipynb``).
  sphinx-book-theme also offers them on MyST-NB text pages (``book/status.md``), whose Colab link
  points at a Markdown file that Colab cannot open.

Jupyter Book passes ``repository.url`` to Sphinx as ``html_theme_options["repository_url"]``.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective


def repository_url(config) -> str:
    url = (getattr(config, "html_theme_options", None) or {}).get("repository_url", "")
    url = url.strip().rstrip("/").removesuffix(".git")
    if not url.startswith("https://"):
        raise ExtensionError(f"repository.url in _config.yml must be the repository's https address, got {url!r}")
    return url


def clone_lines(url: str) -> list[str]:
    """``git clone`` of ``url`` and ``cd`` into the folder git makes for it."""
    return [f"git clone {url}.git", f"cd {url.rsplit('/', 1)[-1]}"]


class CloneCommand(SphinxDirective):
    """A bash block: clone the configured repository, enter it, then the directive's content lines."""

    has_content = True

    def run(self):
        lines = clone_lines(repository_url(self.config)) + list(self.content)
        text = "\n".join(lines)
        block = nodes.literal_block(text, text, language="bash")
        self.set_source_info(block)
        return [block]


def launch_buttons_only_on_notebooks(app, pagename, templatename, context, doctree):
    if doctree is None or not context.get("header_buttons"):
        return
    if Path(app.env.doc2path(pagename)).suffix != ".ipynb":
        context["header_buttons"] = [b for b in context["header_buttons"] if b.get("label") != "launch-buttons"]


def setup(app):
    app.add_directive("clone-command", CloneCommand)
    # sphinx-book-theme adds the launch buttons at priority 501
    app.connect("html-page-context", launch_buttons_only_on_notebooks, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
