"""Figures shared by several chapters. Images are ``(N, H, W, C)`` in [0, 1], row 0 at the top."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import checks


def _numpy_images(images, name: str = "images") -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    checks.require(images.ndim in (3, 4), f"Expected {name} of shape (N, H, W) or (N, H, W, C), got {images.shape}.")
    if not np.issubdtype(images.dtype, np.number) or not np.isfinite(images).all():
        raise ValueError(f"The {name} hold NaN, inf or non-numbers; check what produced them (a diverged fit?).")
    return images


def image_grid(
    images,
    rows: int | None = None,
    cols: int | None = None,
    titles=None,
    cmap: str = "gray",
    size: float = 1.6,
    suptitle: str | None = None,
    title_size: float = 8,
):
    """Plot ``(N, H, W, 3|4)`` or ``(N, H, W)`` (``cmap``) images in a gapless grid, return it. Defined in §1.4.

    ``size`` is inches per image; ``title_size`` (points) should grow with it, so titles stay legible where the
    page shrinks a wide figure to its column (about 7 inches at the book's 100 dpi).
    """
    images = _numpy_images(images)
    n = images.shape[0]
    checks.require((rows is None) == (cols is None), f"Give rows and cols, or neither: got rows={rows}, cols={cols}.")
    if rows is None:
        rows, cols = math.ceil(n / min(n, 10)), min(n, 10)
    rows, cols = checks.integer("rows", rows), checks.integer("cols", cols)
    checks.require(rows * cols >= n, f"A {rows} x {cols} grid cannot hold {n} images; pass rows * cols >= {n}.")
    if titles is not None and len(titles) < n:
        raise ValueError(f"titles has {len(titles)} entries for {n} images; give one title per image.")
    size = checks.number("size (inches per image)", size, 0.0, low_open=True)
    title_size = checks.number("title_size (points)", title_size, 0.0, low_open=True)
    figsize = (size * cols, size * rows + (0.4 if suptitle else 0))
    gaps = {"wspace": 0.02, "hspace": 0.02 if titles is None else 0.25}
    fig, axes = plt.subplots(rows, cols, figsize=figsize, gridspec_kw=gaps, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        im = images[i]
        if im.ndim == 3 and im.shape[-1] in (3, 4):
            ax.imshow(np.clip(im[..., :3], 0, 1))
        else:
            ax.imshow(im.squeeze(), cmap=cmap, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=title_size)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
