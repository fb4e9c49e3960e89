"""Chapter 4: fitting a voxel grid to the multi-view images.

This module starts with what every fitting chapter shares: the robust loss, the
metrics measured on held-out views, and the history a training loop returns.
Chapter 4 adds the model and the loop; Chapter 5's fast recipe returns the same
``FitHistory`` so the two can be compared on one plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The seed's pseudo-Huber loss, elementwise: ``scaling * (sqrt(1 + (x-y)^2 / scaling^2) - 1)``.

    Quadratic, ``(x-y)^2 / (2 scaling)``, for residuals much smaller than
    ``scaling`` and linear, ``|x-y|``, for larger ones, so a few badly wrong
    pixels cannot dominate the gradient. The clamp keeps the square root's
    argument away from zero (it is at least 1 anyway; kept from the seed).
    """
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / scaling**2).clamp(1e-4).sqrt() - 1) * float(scaling)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image, ``(N, H, W, C)`` in [0, 1] -> ``(N,)``.

    ``-10 log10(MSE)`` over all pixels and channels of an image, background included.
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}.")
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of ``pred > threshold`` and ``target > 0.5``, pooled over all pixels.

    Shapes ``(N, H, W)``; ``pred`` is a rendered opacity in [0, 1], ``target`` a binary silhouette.
    """
    if pred.shape != target.shape:
        raise ValueError(f"silhouette_iou needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}.")
    p, t = pred > threshold, target > 0.5
    union = (p | t).sum().item()
    return (p & t).sum().item() / union if union else 1.0


@torch.no_grad()
def evaluate(render, views, batch_size: int = 10) -> dict:
    """Render every view of ``views`` (a ``data.CowViews``) and score it.

    ``render(cameras)`` must return ``(B, H, W, 4)``: RGB then opacity.
    Returns ``{"psnr": mean per-view PSNR in dB, "iou": pooled silhouette IoU,
    "images": (N, H, W, 3), "silhouettes": (N, H, W)}``.
    """
    cameras = views.cameras()
    outs = [render(cameras[list(range(i, min(i + batch_size, len(views))))]) for i in range(0, len(views), batch_size)]
    out = torch.cat(outs)
    if not torch.isfinite(out).all():
        raise FloatingPointError("The render contains NaN or infinite values; the fitted volume is broken.")
    images, silhouettes = out[..., :3].clamp(0, 1), out[..., 3]
    return {
        "psnr": psnr(images, views.images).mean().item(),
        "iou": silhouette_iou(silhouettes, views.silhouettes),
        "images": images,
        "silhouettes": silhouettes,
    }


@dataclass
class FitHistory:
    """What a training loop records, for plots and for comparing recipes.

    ``seconds`` is cumulative wall time spent fitting (evaluation excluded),
    measured after each logged iteration.
    """

    iterations: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    eval_iterations: list = field(default_factory=list)
    eval_seconds: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    iou: list = field(default_factory=list)

    def time_to_reach(self, target_psnr: float) -> float:
        """Fitting seconds at the first evaluation reaching ``target_psnr`` (``inf`` if never)."""
        for seconds, value in zip(self.eval_seconds, self.psnr):
            if value >= target_psnr:
                return seconds
        return math.inf
