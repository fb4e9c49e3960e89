"""Shared code for the book *Differentiable Volumetric Rendering*.

One module per chapter topic, each function introduced in the chapter that first
teaches it:

- ``data``      Chapter 1: the cow mesh, multi-view renders, held-out views, caching.
- ``rays``      Chapter 2: a from-scratch grid raysampler, the volume's box, the visual hull.
- ``marching``  Chapter 3: trilinear volume sampling, emission-absorption raymarching, the renderer.
- ``fitting``   Chapter 4: the loss, the metrics, the model and the training loop.
- ``fast``      Chapter 5: the fast CPU fit.
- ``plotting``  figures shared by several chapters.
- ``colab``     the notebooks' setup cell: makes a chapter self-sufficient in Colab.
"""

from .data import pick_device  # noqa: F401
