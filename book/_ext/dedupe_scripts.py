"""Emit each inline ``<script>`` once per page.

With Sphinx 7.4, the inline configuration scripts that sphinx-thebe (and
sphinx-togglebutton) add on ``env-before-read-docs`` end up twice in every page.
The second ``const THEBE_JS_URL = ...`` is a JavaScript SyntaxError on every page
of the book, which ``tests/test_browser.py`` reports. Keeping the first of
identical script entries removes it without touching the extensions.
"""


def _key(script):
    attributes = getattr(script, "attributes", {}) or {}
    # an inline script's filename is None or "" depending on who added it: the same script either way
    return (getattr(script, "filename", str(script)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after extensions have added theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
