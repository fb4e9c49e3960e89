"""Closed-form checks of the loss and the metrics shared by Chapters 4 and 5."""

import math

import pytest
import torch

from helpers.metrics import DivergenceError, FitHistory, check_divergence, huber, psnr, silhouette_iou


def test_huber_is_quadratic_near_zero_and_linear_far_away():
    s = 0.1
    small = torch.tensor([1e-3], dtype=torch.float64)
    assert huber(small, torch.zeros(1, dtype=torch.float64), s).item() == pytest.approx(1e-6 / (2 * s), rel=1e-3)
    big = torch.tensor([10.0])
    assert huber(big, torch.zeros(1), s).item() == pytest.approx(10.0 - s, rel=1e-3)
    assert huber(torch.ones(3), torch.ones(3), s).abs().max() == 0


def test_psnr_of_a_known_error():
    target = torch.zeros(2, 4, 4, 3)
    pred = torch.full_like(target, 0.1)  # MSE 0.01 -> 20 dB
    pred[1] = 0.01  # MSE 1e-4 -> 40 dB
    assert torch.allclose(psnr(pred, target), torch.tensor([20.0, 40.0]), atol=1e-4)
    with pytest.raises(ValueError, match="pred"):
        psnr(pred, target[:1])


def test_iou_of_known_masks():
    a = torch.zeros(1, 4, 4)
    b = torch.zeros(1, 4, 4)
    a[0, :2] = 0.9  # 8 pixels
    b[0, 1:3] = 1.0  # 8 pixels, 4 shared
    assert silhouette_iou(a, b) == pytest.approx(4 / 12)
    assert silhouette_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)) == 1.0


def test_time_to_reach():
    h = FitHistory(eval_iterations=[0, 10, 20], eval_seconds=[0.0, 5.0, 9.0], psnr=[10.0, 21.0, 25.0])
    assert h.time_to_reach(20.0) == 5.0 and h.time_to_reach(25.0) == 9.0 and math.isinf(h.time_to_reach(30.0))


def _history(losses):
    h = FitHistory()
    for i, loss in enumerate(losses):
        h.log_step(i + 1, loss, float(i))
    return h


def test_divergence_stops_a_rising_or_non_finite_loss():
    falling = [1.0 / (1 + 0.1 * i) + 0.05 * (i % 3) for i in range(60)]  # noisy but falling
    check_divergence(_history(falling))
    with pytest.raises(DivergenceError, match=r"iteration 61.*lr=0.5"):
        check_divergence(_history([*falling, float("nan")]), lr=0.5)
    jumped = [0.36] + [0.7] * 25  # a learning rate so high that the first steps ruin the grid
    with pytest.raises(DivergenceError, match="diverged"):
        check_divergence(_history(jumped))
    blown_up = falling + [0.8] * 15  # good progress (best 0.19), then a sustained rise above 4x
    with pytest.raises(DivergenceError, match="diverged"):
        check_divergence(_history(blown_up))
    spikes = falling + [0.95] * 5  # a few bad batches move the median of 20 little
    check_divergence(_history(spikes))
