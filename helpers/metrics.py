"""What every fit shares (Chapter 4), so that Chapter 5's and the benchmark's numbers are comparable."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from . import checks


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The pseudo-Huber loss, elementwise: ``scaling * (sqrt(1 + (x-y)^2 / scaling^2) - 1)``. Defined in §4.3."""
    return _huber(x, y, checks.number("scaling", scaling, 0.0, low_open=True))


def _huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """:func:`huber` without checking ``scaling``: what the fits call on every step."""
    # linear for large residuals, so a few badly wrong pixels cannot dominate the gradient
    return ((1 + (x - y) ** 2 / scaling**2).clamp(1e-4).sqrt() - 1) * float(scaling)  # the tutorial's clamp


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR ``-10 log10(MSE)`` in dB of each image ``(N, H, W, C)`` in [0, 1] -> ``(N,)``. Defined in §4.7."""
    checks.finite("target", target, "score against finite images (re-render the views)")
    same = f"(N, H, W, C) equal to target's {tuple(target.shape)}"
    hint = "the prediction is broken (a diverged fit?); score finite images"
    checks.shape("pred", pred, same, lambda t: t.dim() == 4 and t.shape == target.shape, hint)
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """IoU of opacities ``pred > threshold`` and silhouettes ``target > 0.5`` ``(N, H, W)``, pooled. Defined in §4.7."""
    checks.shape("pred", pred, f"equal to target's {tuple(target.shape)}", lambda t: t.shape == target.shape)
    checks.finite("pred", pred, "the prediction is broken (a diverged fit?); score finite opacities")
    threshold = checks.number("threshold", threshold, 0.0, 1.0)
    p, t = pred > threshold, target > 0.5
    union = (p | t).sum().item()
    return (p & t).sum().item() / union if union else 1.0


@torch.no_grad()
def evaluate(model, views, batch_size: int = 10) -> dict:
    """Render ``views`` with ``model`` (``(B, H, W, 4)``: RGB, opacity): ``psnr``, ``iou``, images. Defined in §4.7."""
    if not all(hasattr(views, k) for k in ("images", "silhouettes", "cameras")):
        raise TypeError(f"views must be a data.CowViews, got {type(views).__name__}; pass what data.generate_* return.")
    batch_size = checks.integer("batch_size", batch_size)
    checks.finite("the views' images", views.images, "re-render the dataset (delete its cache file)")
    cameras = views.cameras()
    batches = [cameras[list(range(i, min(i + batch_size, len(views))))] for i in range(0, len(views), batch_size)]
    out = torch.cat([model(batch) for batch in batches])
    want = (*views.images.shape[:3], 4)
    hint = "the fitted volume is broken; re-run the fit with a lower lr"
    checks.shape("the model's rendered images", out, f"{want}: RGB, then opacity", lambda t: t.shape == want, hint)
    images, silhouettes = out[..., :3].clamp(0, 1), out[..., 3]
    scores = {"psnr": psnr(images, views.images).mean().item(), "iou": silhouette_iou(silhouettes, views.silhouettes)}
    return {**scores, "images": images, "silhouettes": silhouettes}


def clock(device) -> float:
    """``time.perf_counter()`` once ``device`` has done its queued work. Defined in §1.3.

    A CUDA call returns as soon as its work is queued, so a clock read straight after it would time
    the launch, not the work; on the CPU this is just ``time.perf_counter()``."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class FitHistory:
    """What a fit records: cumulative fitting ``seconds`` (evaluation excluded), held-out scores. Defined in §4.7."""

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
        target_psnr = checks.number("target_psnr", target_psnr)
        return next((s for s, p in zip(self.eval_seconds, self.psnr, strict=True) if p >= target_psnr), math.inf)


class DivergenceError(FloatingPointError):
    """A fit stopped because its loss or parameters went bad. Defined in §4.7."""


def check_divergence(history: FitHistory, window: int = 20, factor: float = 4.0, lr: float | None = None) -> None:
    """Stop a fit whose loss is not finite, or whose median of the last ``window`` rose for good. Defined in §4.7."""
    got = f"{len(history.losses)} losses" if isinstance(history, FitHistory) else type(history).__name__
    msg = f"history must be a FitHistory holding at least one loss, got {got}; log_step first."
    checks.require(isinstance(history, FitHistory) and history.losses, msg)
    _check_divergence(history, checks.integer("window", window), checks.number("factor", factor, 1, low_open=True), lr)


def _check_divergence(history: FitHistory, window: int = 20, factor: float = 4.0, lr: float | None = None) -> None:
    """:func:`check_divergence` without checking its arguments: what the fits call on every step."""
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
    if recent > first or recent > factor * best:  # worse than untrained, or than factor times the best
        raise DivergenceError(
            f"The fit diverged: at iteration {it} the median of the last {window} losses is {recent:.4g}, "
            f"against {first:.4g} at the start and {best:.4g} at best. {hint}."
        )
