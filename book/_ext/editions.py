"""A link on every page to the same page in the other edition: English at the site's root, zh-TW in ``zh-tw/``.

The zh-TW edition is the same sources built with ``language = "zh_TW"`` into ``_build/html/zh-tw``
(``book/_ext/translations.py``). Its Colab buttons open the translated notebooks in
``locales/zh_TW/notebooks/``, whose code cells are the English ones byte for byte.
"""

from __future__ import annotations

import html

from sphinx import addnodes
from sphinx.transforms import SphinxTransform

EDITIONS = {  # language: (folder in the site, name shown in the switch, HTML lang)
    "en": ("", "English", "en"),
    "zh_TW": ("zh-tw", "繁體中文", "zh-Hant-TW"),
}


def _other(language: str | None) -> str:
    return "zh_TW" if (language or "en") == "en" else "en"


def switch_href(pagename: str, language: str | None) -> str:
    """Relative link from ``pagename`` in ``language``'s edition to the same page in the other one."""
    here, there = EDITIONS[language or "en"][0], EDITIONS[_other(language)][0]
    up = "../" * (pagename.count("/") + (1 if here else 0))  # to the site's root
    return f"{up}{there + '/' if there else ''}{pagename}.html"


def add_switch(app, pagename, templatename, context, doctree):
    if doctree is None or "body" not in context:  # search, genindex: generated pages
        return
    other = _other(app.config.language)
    _, label, lang = EDITIONS[other]
    href = html.escape(switch_href(pagename, app.config.language))
    link = (
        f'<p class="edition-switch"><a href="{href}" hreflang="{lang}" lang="{lang}" '
        f'title="{label}">{"English edition" if other == "en" else label}</a></p>\n'
    )
    context["body"] = link + context["body"]
    context["metatags"] = context.get("metatags", "") + f'\n<link rel="alternate" hreflang="{lang}" href="{href}" />'


def zh_colab_path(app, config):
    # Colab opens a notebook from the repository; the zh-TW pages open the translated copies.
    if config.language == "zh_TW":
        config.html_theme_options = {**config.html_theme_options, "path_to_docs": "locales/zh_TW"}


def _glue_in_translations():
    """Let ``{glue:text}`key``` work inside translated paragraphs.

    Sphinx parses each translated paragraph as a small document of its own, which lacks the
    notebook that myst-nb reads glued values from, so every same-page glue would fail. The values
    are also in the page's glue cache (``<output_folder>/<page>.glue.json``, written when the page
    was parsed, before it is translated): read them from there.
    """
    import json
    from pathlib import Path

    from myst_nb.core.variables import RetrievalError, VariableOutput
    from myst_nb.ext.glue import directives, roles, utils

    original = utils.retrieve_glue_data

    def retrieve_glue_data(document, key):
        try:
            return original(document, key)
        except RetrievalError:
            env = getattr(document.settings, "env", None)
            if env is None or not str(document.current_source or "").endswith("<translated>"):
                raise
            path = Path(env.mystnb_config.output_folder, *env.docname.split("/")).with_suffix(".glue.json")
            data = json.loads(path.read_text()) if path.exists() else {}
            if key not in data:
                raise
            return VariableOutput(data[key]["data"], data[key].get("metadata", {}), None, "glue")

    roles.retrieve_glue_data = directives.retrieve_glue_data = retrieve_glue_data


class TranslateTocCaptions(SphinxTransform):
    """Translate the captions of the toctrees that sphinx-external-toc inserts ("Chapters", ...).

    Sphinx translates a page (priority 20) before sphinx-external-toc adds its toctrees (100), so
    their captions would stay English; the page's catalog has them (the gettext builder extracts them).
    """

    default_priority = 150  # after InsertToctrees, before the toctree collector reads the captions

    def apply(self, **kwargs):
        if (self.config.language or "en") == "en":
            return
        from translations import translations

        table = translations(self.env.docname)
        for node in self.document.findall(addnodes.toctree):
            if node.get("caption") in table:
                node["caption"] = table[node["caption"]]


def setup(app):
    _glue_in_translations()
    app.add_transform(TranslateTocCaptions)
    app.connect("config-inited", zh_colab_path)
    app.connect("html-page-context", add_switch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
