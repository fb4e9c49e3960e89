"""What every fit shares: the loss, the scores on held-out views, the history, the clock.

Defined in Chapter 4 (§4.3 the loss, §4.7 the fit) and used unchanged by Chapter 5's
fast recipe and by the benchmark, so that their numbers are comparable: the same
Huber loss, the same held-out PSNR (mean over views) and silhouette IoU, the same
bookkeeping of fitting time (evaluation excluded).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from . import checks


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The pseudo-Huber loss, elementwise: ``scaling * (sqrt(1 + (x-y)^2 / scaling^2) - 1)``. Defined in §4.3.

    Quadratic, ``(x-y)^2 / (2 scaling)``, for residuals much smaller than ``scaling``;
    for larger ones it approaches ``|x-y| - scaling``, so a few badly wrong pixels cannot
    dominate the gradient. The clamp is the original tutorial's (the argument is >= 1 anyway).
    """
    return ((1 + (x - y) ** 2 / scaling**2).clamp(1e-4).sqrt() - 1) * float(scaling)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image, ``(N, H, W, C)`` in [0, 1] -> ``(N,)``. Defined in §4.7.

    ``-10 log10(MSE)`` over all pixels and channels of an image, background included.
    """
    checks.shape("pred", pred, f"equal to target's {tuple(target.shape)}", pred.shape == target.shape)
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of ``pred > threshold`` and ``target > 0.5``, pooled over all pixels. Defined in §4.7.

    Shapes ``(N, H, W)``; ``pred`` is a rendered opacity in [0, 1], ``target`` a binary silhouette.
    """
    checks.shape("pred", pred, f"equal to target's {tuple(target.shape)}", pred.shape == target.shape)
    p, t = pred > threshold, target > 0.5
    union = (p | t).sum().item()
    return (p & t).sum().item() / union if union else 1.0


@torch.no_grad()
def evaluate(model, views, batch_size: int = 10) -> dict:
    """Render every view of ``views`` (a ``data.CowViews``) with ``model`` and score it. Defined in §4.7.

    ``model(cameras)`` returns ``(B, H, W, 4)``: RGB then opacity (both fits' models do).
    Returns ``{"psnr": mean per-view PSNR in dB, "iou": pooled silhouette IoU,
    "images": (N, H, W, 3), "silhouettes": (N, H, W)}``.
    """
    checks.finite("the views' images", views.images, "re-render the dataset (delete its cache file)")
    cameras = views.cameras()
    out = torch.cat(
        [model(cameras[list(range(i, min(i + batch_size, len(views))))]) for i in range(0, len(views), batch_size)]
    )
    checks.finite("the rendered images", out, "the fitted volume is broken; re-run the fit with a lower lr")
    images, silhouettes = out[..., :3].clamp(0, 1), out[..., 3]
    return {
        "psnr": psnr(images, views.images).mean().item(),
        "iou": silhouette_iou(silhouettes, views.silhouettes),
        "images": images,
        "silhouettes": silhouettes,
    }


def clock(device) -> float:
    """``time.perf_counter()`` after the GPU (if any) has finished its queued work. Defined in §5.4.

    CUDA runs asynchronously: without the synchronisation a timer would measure how long
    it took to *queue* the work.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class FitHistory:
    """What a training loop records, for plots and for comparing recipes. Defined in §4.7.

    ``seconds`` is cumulative fitting time (evaluation excluded) after each iteration;
    ``eval_*``, ``psnr`` and ``iou`` are logged at each held-out evaluation.
    """

    iterations: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    eval_iterations: list = field(default_factory=list)
    eval_seconds: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    iou: list = field(default_factory=list)

    def log_step(self, iteration: int, loss: float, seconds: float) -> None:
        self.iterations.append(iteration)
        self.losses.append(loss)
        self.seconds.append(seconds)

    def log_eval(self, iteration: int, seconds: float, result: dict) -> None:
        self.eval_iterations.append(iteration)
        self.eval_seconds.append(seconds)
        self.psnr.append(result["psnr"])
        self.iou.append(result["iou"])

    def time_to_reach(self, target_psnr: float) -> float:
        """Fitting seconds at the first evaluation reaching ``target_psnr`` (``inf`` if never)."""
        return next((s for s, p in zip(self.eval_seconds, self.psnr, strict=True) if p >= target_psnr), math.inf)


class DivergenceError(FloatingPointError):
    """A fit stopped because its loss or parameters went bad. Defined in §4.7."""


def check_divergence(history: FitHistory, window: int = 20, factor: float = 4.0, lr: float | None = None) -> None:
    """Stop a fit whose loss is not finite, or has risen for good. Defined in §4.7.

    Risen for good: over the last ``window`` iterations the median loss is above the
    first loss (worse than the untrained grid) or ``factor`` times the best loss so far.
    The median ignores a few unlucky batches; a fit that keeps rising has diverged
    (almost always a learning rate too high), and returning its result would hide that.
    """
    loss, it = history.losses[-1], history.iterations[-1]
    hint = f"Lower the learning rate (lr={lr:g})" if lr is not None else "Lower the learning rate"
    if not math.isfinite(loss):
        raise DivergenceError(
            f"The loss became {loss} at iteration {it}. {hint}, and check that the training images are finite."
        )
    if len(history.losses) <= window:
        return
    recent = sorted(history.losses[-window:])[window // 2]
    first, best = history.losses[0], min(history.losses)
    if recent > first or recent > factor * best:
        raise DivergenceError(
            f"The fit diverged: at iteration {it} the median loss of the last {window} iterations "
            f"is {recent:.4g}, against {first:.4g} at the start and {best:.4g} at best. {hint}."
        )
