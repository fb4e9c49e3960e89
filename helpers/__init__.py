"""Shared code for the book *Differentiable Volumetric Rendering*.

One module per chapter topic, each function introduced in the chapter that first
teaches it:

- ``data``      Chapter 1: the cow mesh, multi-view renders, held-out views, caching.
- ``plotting``  figures shared by several chapters.

Later chapters add ``rays`` (ray sampling), ``marching`` (volume sampling and
raymarching), ``fitting`` (the optimisation loop) and ``fast`` (the fast CPU fit).
"""

from .data import pick_device  # noqa: F401
