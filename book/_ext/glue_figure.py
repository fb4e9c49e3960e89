"""``{glue-figure}``: paste a chapter's glued output into another page as a numbered figure with a caption.

myst-nb's ``{glue:figure}`` pastes only from the page's own notebook, and ``{glue:any}`` (which takes
``:doc:``) gives no figure. The landing page shows animations the chapters glue, so it needs both::

    ```{glue-figure} landing-result
    :doc: ../notebooks/04_fitting.ipynb
    :name: fig-landing-result

    The caption, one paragraph of MyST.
    ```

The figure is numbered like any other (``{numref}`fig-landing-result```); the pasted output keeps
its own alt text (``helpers.book.gif_html`` requires one).
"""

from __future__ import annotations

from typing import ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from myst_nb.ext.glue.utils import PendingGlueReferenceError, create_pending_glue_ref
from sphinx.util.docutils import SphinxDirective


class GlueFigure(SphinxDirective):
    required_arguments = 1  # the glue key
    has_content = True  # the caption
    option_spec: ClassVar[dict] = {"doc": directives.unchanged_required, "name": directives.unchanged_required}

    def run(self):
        key = self.arguments[0]
        for option in ("doc", "name"):
            if option not in self.options:
                return [self.error(f"{{glue-figure}} {key} needs :{option}:")]
        if not self.content:
            return [self.error(f"{{glue-figure}} {key} needs a caption (the directive's content)")]
        try:
            ref = create_pending_glue_ref(self.state.document, *self.get_source_info(), self.options["doc"], key)
        except PendingGlueReferenceError as err:
            return [self.error(str(err))]
        holder = nodes.Element()
        self.state.nested_parse(self.content, self.content_offset, holder)
        if len(holder) != 1 or not isinstance(holder[0], nodes.paragraph):
            return [self.error(f"the caption of {{glue-figure}} {key} must be one paragraph")]
        caption = nodes.caption(holder[0].rawsource, "", *holder[0].children)
        figure = nodes.figure("", ref, caption)
        self.set_source_info(figure)
        self.set_source_info(caption)
        self.add_name(figure)
        return [figure]


def setup(app):
    app.add_directive("glue-figure", GlueFigure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
