"""A link on every page to the same page in the other edition: English at the site's root, zh-TW in ``zh-tw/``.

The zh-TW edition is the same sources built with ``language = "zh_TW"`` into ``_build/html/zh-tw``
(``book/_ext/translations.py``). Its Colab buttons open the translated notebooks in
``locales/zh_TW/notebooks/``, whose code cells are the English ones byte for byte.
"""

from __future__ import annotations

import html

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


def setup(app):
    app.connect("config-inited", zh_colab_path)
    app.connect("html-page-context", add_switch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
