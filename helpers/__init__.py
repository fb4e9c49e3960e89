"""Shared code for the book *Differentiable Volumetric Rendering*, one module per chapter topic.

- ``data``      Chapter 1: the cow mesh, cameras, multi-view renders, held-out views, the device.
- ``rays``      Chapter 2: NDC, projection, the grid raysampler, camera rays, ray-box clipping.
- ``hull``      Chapter 2 (used again in 5): the visual hull and occupancy lookups.
- ``marching``  Chapter 3: trilinear volume sampling, emission-absorption raymarching, the renderer.
- ``metrics``   Chapter 4 (used by 5 and the benchmark): loss, PSNR, IoU, evaluation, fit history.
- ``fitting``   Chapter 4: the model, settings, the training loop, saving and loading fits.
- ``fast``      Chapter 5: the fast recipe, built from the pieces of Chapters 2-4.
- ``plotting``, ``book``: figures and what a chapter hands to other pages.
- ``colab``     the notebooks' setup cell; nothing is imported here, so it runs before torch is installed.
- ``checks``    argument checks with one wording for every module.
"""
