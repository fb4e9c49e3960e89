"""The visual hull: space the silhouettes cannot rule out (Chapter 2, §2.8; used again in Chapter 5).

``n^3`` voxels ``grid[z, y, x]`` fill the cube of side ``rays.VOLUME_EXTENT``, centres ``(i - (n-1)/2) * extent / n``.
"""

from __future__ import annotations

import math

import torch

from . import checks
from .rays import VOLUME_EXTENT, _check_cameras, _project, _slopes, ndc_to_pixel


def voxel_centers(volume_size: int, extent: float = VOLUME_EXTENT, device=None) -> torch.Tensor:
    """World coordinates ``(D, H, W, 3)`` of the voxel centres; ``[z, y, x]`` holds ``(x, y, z)``. Defined in §2.8."""
    volume_size = checks.integer("volume_size", volume_size)
    s = checks.number("extent", extent, 0.0, low_open=True) / volume_size
    axis = (torch.arange(volume_size, device=device, dtype=torch.float32) - (volume_size - 1) / 2) * s
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack((x, y, z), dim=-1)


class Occupancy(torch.nn.Module):
    """A boolean voxel grid ``(n, n, n)`` over the volume's cube, a buffer so ``.to`` moves it. Defined in §2.8."""

    def __init__(self, grid: torch.Tensor, extent: float = VOLUME_EXTENT):
        super().__init__()
        cube = lambda t: t.dim() == 3 and t.shape[0] == t.shape[1] == t.shape[2] >= 2  # noqa: E731
        checks.shape("grid", grid, "(n, n, n), n >= 2", cube, "pass a boolean grid (True = occupied)")
        self.register_buffer("grid", grid.bool())
        self.extent = checks.number("extent", extent, 0.0, low_open=True)

    @property
    def volume_size(self) -> int:
        return self.grid.shape[0]

    @property
    def voxel_size(self) -> float:
        return self.extent / self.volume_size

    def lookup(self, points: torch.Tensor) -> torch.Tensor:
        """Occupancy ``(...)`` of the voxel *nearest* to each of ``points`` ``(..., 3)``; False outside the cube."""
        n = self.volume_size
        idx = torch.round(points / self.voxel_size + 0.5 * (n - 1))
        inside = ((idx >= 0) & (idx <= n - 1)).all(-1)
        # the flat index as one float dot product (exact below 2^24 voxels): one cast, not three
        strides = torch.tensor([1.0, n, n * n], device=points.device, dtype=points.dtype)
        flat = (idx.clamp(0, n - 1) @ strides).long()
        return self.grid.reshape(-1)[flat] & inside

    def bounds(self):
        """Lower and upper corners ``(3,)`` of the box around the occupied voxels' cells."""
        idx = self.grid.nonzero()  # (K, 3) as (z, y, x)
        if idx.shape[0] == 0:
            return (torch.zeros(3, device=self.grid.device),) * 2
        s = self.voxel_size
        first, last = ((i.flip(0).float() - 0.5 * (self.volume_size - 1)) * s for i in (idx.amin(0), idx.amax(0)))
        return first - s / 2, last + s / 2

    @classmethod
    def full(cls, volume_size: int = 128, device=None) -> Occupancy:
        """Everything occupied: the cube and nothing more."""
        volume_size = checks.integer("volume_size", volume_size, minimum=2)
        return cls(torch.ones((volume_size,) * 3, dtype=torch.bool, device=device))


@torch.no_grad()
def carve(silhouettes: torch.Tensor, cameras, volume_size: int = 128, dilate: int = 1) -> Occupancy:
    """Carve {cite}`laurentini1994visual`: voxels whose centre every ``(N, H, W)`` silhouette that sees it
    covers (a view the centre projects outside of cannot rule it out), grown by ``dilate`` voxels. Defined in §2.8."""
    dilate = checks.integer("dilate", dilate, minimum=0)
    volume_size = checks.integer("volume_size", volume_size, minimum=2)
    _check_cameras(cameras)
    ok = lambda t: t.dim() == 3 and t.shape[0] == len(cameras)  # noqa: E731
    checks.shape("silhouettes", silhouettes, f"(N, H, W) with N = {len(cameras)} cameras", ok, "pass finite masks")
    n_views, height, width = silhouettes.shape
    device = silhouettes.device
    centers = voxel_centers(volume_size, device=device).reshape(-1, 3)
    alive = torch.arange(centers.shape[0], device=device)
    # Only the voxels still alive are tested, and interleaved views look from different sides,
    # so the first views carve most of the box.
    step = max(1, math.isqrt(n_views))
    # each camera as tensors, checked once: indexing and checking the cameras per view would cost
    # hundreds of small operations per view, which on a GPU take longer than the projection itself
    R, T, (slope_x, slope_y) = cameras.R, cameras.T, _slopes(cameras, 1)
    for view in [v for s in range(step) for v in range(s, n_views, step)]:
        v = slice(view, view + 1)
        xy, depth = _project(centers[alive][None], R[v], T[v], slope_x[v], slope_y[v])
        row, col = (torch.round(c[0]) for c in ndc_to_pixel(xy, height, width))
        seen = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (depth[0] > 0)
        pixel = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).long()
        on_object = silhouettes[view].reshape(-1)[pixel] > 0
        alive = alive[on_object | ~seen]
    grid = torch.zeros(centers.shape[0], dtype=torch.bool, device=device)
    grid[alive] = True
    grid = grid.reshape(1, 1, volume_size, volume_size, volume_size)
    if dilate:  # centres miss parts thinner than a voxel: with dilate >= 1 the hull contains the object
        grid = torch.nn.functional.max_pool3d(grid.float(), 2 * dilate + 1, stride=1, padding=dilate) > 0
    return Occupancy(grid.reshape((volume_size,) * 3))
