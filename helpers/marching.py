"""Chapter 3: sampling a voxel grid along rays and marching the rays into pixels.

Conventions (those of ``pytorch3d.structures.Volumes``):
- densities ``(B, 1, D, H, W)``, features ``(B, C, D, H, W)``; index ``[.., z, y, x]``.
- *local* ``(x, y, z)`` in ``[-1, 1]`` index W, H, D (the tensor's order reversed), as in ``grid_sample``;
  ``x_world = x_local * 0.5 * voxel_size * (size - 1) - volume_translation`` with ``size = (W, H, D)``.
  Note the minus sign: the volume's centre sits at ``-volume_translation``.
- ``align_corners=True`` (the default): local +-1 are the corner voxels' *centres*, ``voxel_size`` apart.
  With ``False`` they are their outer *faces*, the world mapping unchanged: centres ``voxel_size * (n-1)/n`` apart.

Rays are ``RayBundle`` s: ``rays.GridRaysampler`` and ``NDCMultinomialRaysampler`` are interchangeable.
"""

from __future__ import annotations

import torch

from . import checks
from .rays import ray_points

# Sampled densities are convex combinations of voxel values: this accepts rounding, nothing else.
_BOUNDS_TOL = 1e-5


def _check_opacities(densities: torch.Tensor) -> None:
    """Refuse ``densities`` that are not finite opacities ``(..., P, 1)`` in [0, 1] (up to rounding)."""
    checks.shape("densities", densities, "(..., P, 1)", lambda t: t.dim() >= 2 and t.shape[-1] == 1, True)
    lo, hi = densities.min().item(), densities.max().item()
    got = f"got [{lo:.4g}, {hi:.4g}]; use torch.sigmoid or alpha_from_sigma"
    checks.require(lo >= -_BOUNDS_TOL and hi <= 1 + _BOUNDS_TOL, f"densities (opacities) must lie in [0, 1], {got}.")


def _per_volume(value, batch: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """``value`` (scalar, 3 numbers, ``(3,)``, ``(1, 3)``, ``(B, 1)`` or ``(B, 3)``) as ``(B, 3)``."""
    try:
        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be 1 or 3 numbers per volume, got {value!r}; pass e.g. 0.1.") from exc
    if t.ndim == 0 or t.shape == (1,):
        t = t.reshape(1, 1).expand(1, 3)
    elif t.shape == (3,):
        t = t[None]
    ok = t.ndim == 2 and t.shape[0] in (1, batch) and t.shape[1] in (1, 3)
    checks.shape(name, t, f"(1 or B, 1 or 3): 1 or 3 numbers per volume (B = {batch} volumes)", ok, True)
    return t.expand(batch, 3)


def world_to_local(points: torch.Tensor, grid_size, voxel_size, volume_translation=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World points ``(B, ..., 3)`` to local coordinates of a ``(D, H, W)`` grid (module docstring). Defined in §3.1."""
    checks.shape("points", points, "(B, ..., 3)", lambda t: t.dim() >= 2 and t.shape[-1] == 3)
    batch = points.shape[0]
    if len(grid_size) != 3 or min(int(s) for s in grid_size) < 2:
        raise ValueError(f"grid_size must be the volume's (D, H, W), each >= 2, got {tuple(grid_size)}.")
    depth, height, width = (int(s) for s in grid_size)
    size_xyz = torch.tensor([width, height, depth], dtype=points.dtype, device=points.device)
    voxel_size = _per_volume(voxel_size, batch, "voxel_size", points)
    got = voxel_size.unique().tolist()  # a negative one would mirror the volume
    checks.require((voxel_size > 0).all(), f"voxel_size must be positive, got {got}; pass a voxel's side.")
    half_extent = 0.5 * voxel_size * (size_xyz - 1)  # (B, 3)
    shift = _per_volume(volume_translation, batch, "volume_translation", points)
    view = (batch,) + (1,) * (points.ndim - 2) + (3,)
    return (points + shift.reshape(view)) / half_extent.reshape(view)


def trilinear(grid: torch.Tensor, local: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """``grid_sample`` by hand: ``(B, C, D, H, W)`` at ``local`` ``(B, P, 3)`` -> ``(B, P, C)``. Defined in §3.2."""
    checks.shape("grid", grid, "(B, C, D, H, W)", lambda t: t.dim() == 5)
    ok = lambda t: t.dim() == 3 and t.shape[::2] == (grid.shape[0], 3)  # noqa: E731
    checks.shape("local", local, f"(B={grid.shape[0]}, P, 3)", ok, "check the points and the volume's voxel_size")
    batch, channels = grid.shape[:2]
    sizes = grid.shape[:1:-1]  # (W, H, D), the order of local's (x, y, z)
    # Zero padding made literal: a border of zero voxels, so every corner index is valid.
    padded = torch.nn.functional.pad(grid, (1, 1, 1, 1, 1, 1)).reshape(batch, channels, -1)
    strides = (1, sizes[0] + 2, (sizes[0] + 2) * (sizes[1] + 2))  # of x, y, z in the flattened padded grid
    lows, highs = [], []  # per axis: (flat offset, weight) of the lower and upper neighbour
    for axis, n in enumerate(sizes):
        u = local[..., axis]
        # continuous voxel index: -1 -> 0 and +1 -> n-1 (centres), or -1 -> -0.5 and +1 -> n-0.5 (faces)
        index = (u + 1) * 0.5 * (n - 1) if align_corners else ((u + 1) * n - 1) * 0.5
        lower = torch.floor(index)
        frac = index - lower
        # +1 for the border; clamping sends any neighbour outside the grid to a zero voxel
        lower = lower.long() + 1
        lows.append((lower.clamp(0, n + 1) * strides[axis], 1 - frac))
        highs.append(((lower + 1).clamp(0, n + 1) * strides[axis], frac))
    out = 0
    for corner in range(8):  # corner bits (x, y, z): 0 = lower neighbour, 1 = upper
        (ox, wx), (oy, wy), (oz, wz) = [(highs if (corner >> axis) & 1 else lows)[axis] for axis in range(3)]
        values = padded.gather(2, (ox + oy + oz)[:, None, :].expand(batch, channels, -1))  # (B, C, P)
        out = out + values * (wx * wy * wz)[:, None, :]
    return out.transpose(1, 2)


def sample_volume(
    densities: torch.Tensor,
    features: torch.Tensor | None,
    points: torch.Tensor,
    voxel_size,
    volume_translation=(0.0, 0.0, 0.0),
    align_corners: bool = True,
):
    """Sample voxel grids at world points; the twin of PyTorch3D's ``VolumeSampler``. Defined in §3.2.

    Densities, features (or ``None``: ``C = 0``) at ``points`` ``(B, ..., 3)`` -> ``(B, ..., 1)``, ``(B, ..., C)``.
    """
    checks.shape("densities", densities, "(B, 1, D, H, W)", lambda t: t.dim() == 5 and t.shape[1] == 1, True)
    b, dhw = densities.shape[0], densities.shape[2:]
    if features is not None:
        same = lambda t: t.dim() == 5 and t.shape[0] == b and t.shape[2:] == dhw  # noqa: E731
        checks.shape("features", features, f"(B={b}, C, *{tuple(dhw)}) as densities", same, True)
    ok = lambda t: t.dim() >= 2 and t.shape[-1] == 3 and t.shape[0] == b  # noqa: E731
    checks.shape("points", points, f"(B, ..., 3) with B = {b} volumes (expand the volume)", ok, True)
    grid = densities if features is None else torch.cat([densities, features], dim=1)
    local = world_to_local(points, densities.shape[2:], voxel_size, volume_translation)
    values = trilinear(grid, local.reshape(points.shape[0], -1, 3), align_corners)  # (B, P_all, 1 + C)
    values = values.reshape(*points.shape[:-1], grid.shape[1])
    return values[..., :1], values[..., 1:]


def emission_absorption(
    densities: torch.Tensor, features: torch.Tensor, eps: float = 1e-10, surface_thickness: int = 1
) -> torch.Tensor:
    """Render rays: the twin of PyTorch3D's ``EmissionAbsorptionRaymarcher``. Defined in §3.3.

    Opacities ``d`` ``(..., P, 1)`` (nearest first), ``features`` ``(..., P, C)`` -> ``(..., C + 1)``: ``sum_i w_i f_i``
    with ``w_i = d_i prod_{j<i} (1 + eps - d_j)``, then ``1 - prod_i (1 - d_i)``; ``surface_thickness=0``: d_i too.
    """
    _check_opacities(densities)
    same = f"(..., C) whose ... must agree with densities' {tuple(densities.shape[:-1])}"
    checks.shape("features", features, same, lambda t: t.shape[:-1] == densities.shape[:-1], True)
    k, n = checks.integer("surface_thickness", surface_thickness, minimum=0), densities.shape[-2]
    checks.require(k <= n, f"surface_thickness must be at most the {n} samples, got {k}.")
    eps = checks.number("eps", eps, 0.0)
    d = densities[..., 0]  # (..., P)
    survive = torch.cumprod((1.0 + eps) - d, dim=-1)  # light left *after* each sample; eps vanishes in float32
    # shift by k samples: the light reaching sample i is what survived samples 0 .. i-k
    transmittance = torch.cat([torch.ones_like(d[..., :k]), survive[..., : d.shape[-1] - k]], dim=-1)
    rendered = ((d * transmittance)[..., None] * features).sum(dim=-2)  # weights w_i times features
    opacity = 1.0 - torch.prod(1.0 - d, dim=-1, keepdim=True)
    return torch.cat([rendered, opacity], dim=-1)


def absorption_only(densities: torch.Tensor) -> torch.Tensor:
    """Opacity ``1 - prod_i (1 - d_i)`` ``(..., 1)`` of densities ``(..., P, 1)`` (silhouettes). Defined in §3.3."""
    _check_opacities(densities)
    return 1.0 - torch.prod(1.0 - densities[..., 0], dim=-1, keepdim=True)


class EmissionAbsorption(torch.nn.Module):
    """Raymarcher module around ``emission_absorption`` with PyTorch3D's call signature. Defined in §3.3."""

    def __init__(self, surface_thickness: int = 1, eps: float = 1e-10):
        super().__init__()
        self.surface_thickness, self.eps = surface_thickness, eps

    def forward(self, rays_densities, rays_features, **kwargs):
        return emission_absorption(rays_densities, rays_features, self.eps, self.surface_thickness)


class AbsorptionOnly(torch.nn.Module):
    """Raymarcher module around ``absorption_only`` (features are ignored). Defined in §3.3."""

    def forward(self, rays_densities, rays_features=None, **kwargs):
        return absorption_only(rays_densities)


def alpha_from_sigma(
    sigma: torch.Tensor, lengths: torch.Tensor, directions: torch.Tensor | None = None
) -> torch.Tensor:
    """Opacity ``1 - exp(-sigma * delta)``, ``sigma`` ``(..., P, 1)`` per world unit (Max 1995). Defined in §3.3."""
    want = (*lengths.shape, 1)
    checks.shape("sigma", sigma, f"lengths.shape + (1,) = {want}", lambda t: t.shape == want, True)
    checks.shape("lengths", lengths, "(..., P), P >= 2 samples per ray to know the step", lengths.shape[-1] > 1, True)
    checks.require((lengths.diff(dim=-1) >= 0).all(), "lengths must increase along each ray, not decrease; sort them.")
    if directions is not None:
        want = (*lengths.shape[:-1], 3)
        checks.shape("directions", directions, f"{want}", lambda t: t.shape == want, True)
    if sigma.min() < 0:
        raise ValueError(f"sigma is a physical density and must be >= 0, got a minimum of {sigma.min().item():.4g}.")
    steps = lengths.diff(dim=-1)
    steps = torch.cat([steps, steps[..., -1:]], dim=-1)  # each sample stands for the interval starting at it
    if directions is not None:  # delta in world units: |direction| (t_{i+1} - t_i)
        steps = steps * directions.norm(dim=-1, keepdim=True)
    return 1.0 - torch.exp(-sigma * steps[..., None])


class Renderer(torch.nn.Module):
    """The twin of ``VolumeRenderer``: ``forward`` gives ``(images (B, H, W, C + 1), ray_bundle)``. Defined in §3.4."""

    def __init__(self, raysampler, raymarcher):
        super().__init__()
        got = f"{type(raysampler).__name__} and {type(raymarcher).__name__}"
        msg = f"Renderer(raysampler, raymarcher) needs two callables (modules), got {got}."
        checks.require(callable(raysampler) and callable(raymarcher), msg, TypeError)
        self.raysampler, self.raymarcher = raysampler, raymarcher

    def forward(self, cameras, volumes, **kwargs):
        from pytorch3d.structures import Volumes

        checks.kind("volumes", volumes, Volumes, "Renderer renders Volumes: wrap the grids in one")
        densities, features = volumes.densities(), volumes.features()
        sizes = volumes.get_grid_sizes()
        if not (sizes == torch.tensor(densities.shape[2:], device=sizes.device)).all():
            raise ValueError(f"All volumes in the batch must have the same size (D, H, W); got {sizes.tolist()}.")
        ray_bundle = self.raysampler(cameras=cameras, **kwargs)
        # Volumes keeps only its local-to-world matrix (row vectors); voxel_size and translation are read off it
        matrix = volumes.get_local_to_world_coords_transform().get_matrix()  # (B, 4, 4)
        scale = torch.diagonal(matrix[:, :3, :3], dim1=1, dim2=2)
        if not torch.equal(matrix[:, :3, :3], torch.diag_embed(scale)):
            raise ValueError(
                f"This Volumes' local-to-world transform must be a scale plus a translation, got the matrix "
                f"{matrix[0].tolist()} (first volume, row vectors); make Volumes from voxel_size and "
                "volume_translation."
            )
        voxel_size = 2.0 * scale / (sizes.flip(-1).to(matrix.dtype) - 1)  # sizes (D, H, W) -> (W, H, D)
        points, shift = ray_points(ray_bundle), -matrix[:, 3, :3]
        dens, feats = sample_volume(densities, features, points, voxel_size, shift, volumes.get_align_corners())
        return self.raymarcher(rays_densities=dens, rays_features=feats, ray_bundle=ray_bundle, **kwargs), ray_bundle
