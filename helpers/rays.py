"""Chapter 2: rays through pixels, and where their sample points fall.

Conventions (PyTorch3D's):

- view space: +X left, +Y up, +Z into the scene; a world row vector ``x`` maps to
  view space as ``x @ R + T``, so the camera centre is ``-T @ R^T``;
- NDC: +X left, +Y up; the *shorter* image side spans [-1, 1] and the longer one
  [-u, u] with u = long / short; pixel (row 0, column 0) is the top-left pixel,
  whose centre has the largest x and y;
- a ray ``origin + t * direction`` has a direction whose view-space z is 1, so the
  length ``t`` of a sample *is* its view-space depth (PyTorch3D's
  ``unit_directions=False``).

``GridRaysampler`` is a from-scratch twin of PyTorch3D's ``NDCMultinomialRaysampler``
for ``FoVPerspectiveCameras``; it can replace it inside ``VolumeRenderer``.
The volume helpers at the end (box test, silhouette-carved hull, sample
accounting) index voxels like ``pytorch3d.structures.Volumes``: ``grid[z, y, x]``,
voxel centres from ``-(n-1)/2 * voxel_size`` to ``+(n-1)/2 * voxel_size``.
"""

from __future__ import annotations

import math

import torch
from pytorch3d.renderer import FoVPerspectiveCameras
from pytorch3d.renderer.implicit import RayBundle


def _check_size(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_depths(n_pts_per_ray, min_depth, max_depth) -> None:
    if not isinstance(n_pts_per_ray, int) or isinstance(n_pts_per_ray, bool) or n_pts_per_ray < 1:
        raise ValueError(f"n_pts_per_ray must be an integer >= 1, got {n_pts_per_ray!r}.")
    for name, value in (("min_depth", min_depth), ("max_depth", max_depth)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if min_depth < 0:
        raise ValueError(f"min_depth={min_depth} is behind the camera; depths are distances along view +Z, use min_depth >= 0.")
    if min_depth >= max_depth:
        raise ValueError(f"min_depth={min_depth} must be smaller than max_depth={max_depth}.")


def ndc_pixel_centers(image_width: int, image_height: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """NDC ``(x, y)`` of every pixel centre, shape ``(H, W, 2)``.

    Column ``j`` of a ``W``-pixel-wide image sits at ``x_j = u_x (1 - (2j + 1) / W)``,
    where ``u_x`` is half the NDC width (1 for the shorter side, long/short for the
    longer one): +X points left, so column 0 has the largest x. Rows work the same way
    with y (+Y up, row 0 at the top).
    """
    _check_size("image_width", image_width)
    _check_size("image_height", image_height)
    short = min(image_width, image_height)
    u_x, u_y = image_width / short, image_height / short
    j = torch.arange(image_width, device=device, dtype=dtype)
    i = torch.arange(image_height, device=device, dtype=dtype)
    x = u_x * (1.0 - (2.0 * j + 1.0) / image_width)
    y = u_y * (1.0 - (2.0 * i + 1.0) / image_height)
    return torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)


def _check_cameras(cameras) -> None:
    if not isinstance(cameras, FoVPerspectiveCameras):
        raise TypeError(
            f"Expected pytorch3d.renderer.FoVPerspectiveCameras, got {type(cameras).__name__}. "
            "For other camera types use PyTorch3D's NDCMultinomialRaysampler."
        )
    if getattr(cameras, "K", None) is not None:
        raise ValueError(
            "These cameras carry an explicit projection matrix K; this raysampler derives rays from "
            "fov and aspect_ratio. Build the cameras without K, or use NDCMultinomialRaysampler."
        )


def camera_centers(cameras) -> torch.Tensor:
    """World positions ``(B, 3)`` of the cameras: where view space is 0, ``-T @ R^T``."""
    return -(cameras.T[:, None, :] @ cameras.R.transpose(1, 2))[:, 0, :]


def ray_directions(cameras, xy: torch.Tensor) -> torch.Tensor:
    """World directions ``(B, ..., 3)`` of the rays through NDC points ``xy`` ``(B, ..., 2)``.

    A view-space point at depth ``z`` projects to NDC ``x = X / (z tan(fov/2) a)``,
    ``y = Y / (z tan(fov/2))`` (``a`` = ``aspect_ratio``). Inverting at ``z = 1``
    gives the view direction ``(x tan(fov/2) a, y tan(fov/2), 1)``; a direction
    (no translation) maps back to the world with ``R^T`` (``R`` is a rotation).
    """
    slope_x, slope_y = _slopes(cameras, xy.dim() - 2)
    xy = xy.to(cameras.R.dtype)
    view = torch.stack((xy[..., 0] * slope_x, xy[..., 1] * slope_y, torch.ones_like(xy[..., 0])), dim=-1)
    batch = cameras.R.shape[0]
    flat = view.reshape(batch, -1, 3) @ cameras.R.transpose(1, 2)
    return flat.reshape(view.shape)


def _slopes(cameras, n_inner_dims: int):
    """``tan(fov/2) * aspect_ratio`` and ``tan(fov/2)`` per camera, shaped ``(B, 1, ..., 1)``."""
    _check_cameras(cameras)
    dtype = cameras.R.dtype
    batch = cameras.R.shape[0]
    fov = torch.as_tensor(cameras.fov, dtype=dtype, device=cameras.R.device).reshape(-1)
    if cameras.degrees:
        fov = torch.deg2rad(fov)
    tan_half = torch.tan(fov / 2).expand(batch)
    aspect = torch.as_tensor(cameras.aspect_ratio, dtype=dtype, device=cameras.R.device).reshape(-1).expand(batch)
    shape = (batch,) + (1,) * n_inner_dims
    return (tan_half * aspect).reshape(shape), tan_half.reshape(shape)


def project(cameras, points: torch.Tensor):
    """NDC ``xy`` ``(B, N, 2)`` and view depth ``z`` ``(B, N)`` of world ``points`` ``(B, N, 3)``.

    The inverse of :func:`ray_directions`: ``x = X / (z tan(fov/2) a)``,
    ``y = Y / (z tan(fov/2))`` with ``(X, Y, z) = points @ R + T``. Unlike
    ``cameras.transform_points`` it also returns the depth itself, which says whether
    a point is in front of the camera (``z > 0``) whatever ``znear`` is.
    """
    slope_x, slope_y = _slopes(cameras, 1)
    view = points.to(cameras.R.dtype) @ cameras.R + cameras.T[:, None, :]
    z = view[..., 2]
    xy = torch.stack((view[..., 0] / (z * slope_x), view[..., 1] / (z * slope_y)), dim=-1)
    return xy, z


def uniform_depths(n_pts_per_ray: int, min_depth: float, max_depth: float, device=None, dtype=torch.float32):
    """``n_pts_per_ray`` evenly spaced depths from ``min_depth`` to ``max_depth`` (both included), ``(P,)``."""
    _check_depths(n_pts_per_ray, min_depth, max_depth)
    return torch.linspace(min_depth, max_depth, n_pts_per_ray, device=device, dtype=dtype)


def stratify(depths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Jitter each sorted depth uniformly within its own bin, ``(..., P)`` -> ``(..., P)``.

    Bin edges are the midpoints between neighbouring depths, and the ray's two ends
    are kept as the outer edges, so the first and last bins are half as wide (the
    rule PyTorch3D uses). Every ray gets its own jitter; with the same random state
    this draws the same numbers as PyTorch3D's ``stratified_sampling=True``.
    """
    mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
    upper = torch.cat((mids, depths[..., -1:]), dim=-1)
    lower = torch.cat((depths[..., :1], mids), dim=-1)
    u = torch.rand(lower.shape, generator=generator, device=lower.device, dtype=lower.dtype)
    return lower + (upper - lower) * u


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class GridRaysampler(torch.nn.Module):
    """One ray through every pixel centre of a ``image_height`` x ``image_width`` image.

    A from-scratch twin of PyTorch3D's ``NDCMultinomialRaysampler`` (grid mode, no
    mask, ``unit_directions=False``) for ``FoVPerspectiveCameras``. ``forward``
    returns a ``RayBundle`` with

    - ``origins`` ``(B, H, W, 3)``: the camera centre, repeated;
    - ``directions`` ``(B, H, W, 3)``: world directions whose view-space z is 1;
    - ``lengths`` ``(B, H, W, P)``: depths, uniform or stratified in
      ``[min_depth, max_depth]``;
    - ``xys`` ``(B, H, W, 2)``: NDC pixel centres, +X left, +Y up.

    It can be passed to ``VolumeRenderer(raysampler=...)``: the renderer calls it
    with ``cameras=`` and ``volumetric_function=`` (ignored) plus whatever the
    caller passed; ``min_depth``, ``max_depth``, ``n_pts_per_ray`` and
    ``stratified_sampling`` override the constructor's values for one call.
    """

    def __init__(self, *, image_width: int, image_height: int, n_pts_per_ray: int,
                 min_depth: float, max_depth: float, stratified: bool = False) -> None:
        super().__init__()
        _check_size("image_width", image_width)
        _check_size("image_height", image_height)
        _check_depths(n_pts_per_ray, min_depth, max_depth)
        self.image_width, self.image_height = image_width, image_height
        self.n_pts_per_ray, self.min_depth, self.max_depth = n_pts_per_ray, float(min_depth), float(max_depth)
        self.stratified = bool(stratified)
        # a buffer, so that module.to(device) moves it with the rest of a model
        self.register_buffer("_xy_grid", ndc_pixel_centers(image_width, image_height), persistent=False)

    def forward(self, cameras, *, min_depth=None, max_depth=None, n_pts_per_ray=None,
                stratified_sampling=None, mask=None, n_rays_per_image=None, n_rays_total=None,
                **kwargs) -> RayBundle:
        _check_cameras(cameras)
        for name, value in (("mask", mask), ("n_rays_per_image", n_rays_per_image), ("n_rays_total", n_rays_total)):
            if value is not None:
                raise ValueError(f"GridRaysampler samples the full pixel grid; {name} is not supported "
                                 "(use NDCMultinomialRaysampler or MonteCarloRaysampler to sample a subset).")
        device = self._xy_grid.device
        if not _same_device(cameras.device, device) or not _same_device(cameras.R.device, device):
            raise ValueError(f"The cameras are on {cameras.R.device} but the raysampler is on {device}; "
                             f"move one of them, e.g. raysampler.to(cameras.device).")
        min_depth = self.min_depth if min_depth is None else min_depth
        max_depth = self.max_depth if max_depth is None else max_depth
        n_pts = self.n_pts_per_ray if n_pts_per_ray is None else n_pts_per_ray
        stratified = self.stratified if stratified_sampling is None else stratified_sampling

        batch = cameras.R.shape[0]
        xy = self._xy_grid.expand(batch, -1, -1, -1)
        directions = ray_directions(cameras, xy)
        origins = camera_centers(cameras)[:, None, None, :].expand_as(directions)
        depths = uniform_depths(n_pts, min_depth, max_depth, device=device, dtype=directions.dtype)
        lengths = depths.expand(batch, self.image_height, self.image_width, n_pts)
        if stratified:
            lengths = stratify(lengths)
        return RayBundle(origins=origins, directions=directions, lengths=lengths, xys=xy)


def ray_points(bundle) -> torch.Tensor:
    """Sample points ``(..., P, 3)`` = ``origins + lengths * directions`` of a ``RayBundle``."""
    return bundle.origins[..., None, :] + bundle.lengths[..., :, None] * bundle.directions[..., None, :]


# --- where do the samples fall? -------------------------------------------------------------


def inside_box(points: torch.Tensor, extent: float = 3.0) -> torch.Tensor:
    """Boolean ``(...)``: which of ``points`` ``(..., 3)`` lie in the cube of side ``extent`` centred at 0."""
    return (points.abs() <= extent / 2).all(dim=-1)


def voxel_centers(grid_size: int = 128, extent: float = 3.0, device=None) -> torch.Tensor:
    """World coordinates ``(D, H, W, 3)`` of the voxel centres of a ``Volumes`` of side ``extent``.

    As in ``Volumes(voxel_size=extent / grid_size)``: the centres run from
    ``-(n-1)/2 * s`` to ``+(n-1)/2 * s`` with ``s = extent / n``, and ``grid[z, y, x]``
    holds the point ``(x, y, z)``.
    """
    _check_size("grid_size", grid_size)
    s = extent / grid_size
    axis = (torch.arange(grid_size, device=device, dtype=torch.float32) - (grid_size - 1) / 2) * s
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack((x, y, z), dim=-1)


def visual_hull(silhouettes: torch.Tensor, cameras, grid_size: int = 128, extent: float = 3.0,
                dilate: int = 1) -> torch.Tensor:
    """Silhouette carving: voxels whose centre projects inside every silhouette, ``(D, H, W)`` bool.

    ``silhouettes`` ``(N, H, W)`` (nonzero = object) were seen by ``cameras`` (``N`` of
    them). A voxel is carved when some view sees it on background; a view in which it
    falls outside the image (or behind the camera) says nothing and carves nothing. The
    result contains the object and all the space the silhouettes cannot rule out.

    Testing only voxel *centres* carves away parts thinner than a voxel (a leg or a
    horn may miss every centre), so the carved grid is grown by ``dilate`` voxels in
    every direction: with ``dilate >= 1`` the hull is a safe superset of the object,
    which is what empty-space skipping needs.
    """
    if not isinstance(dilate, int) or isinstance(dilate, bool) or dilate < 0:
        raise ValueError(f"dilate must be a non-negative integer number of voxels, got {dilate!r}.")
    if silhouettes.dim() != 3 or silhouettes.shape[0] != len(cameras):
        raise ValueError(f"Expected silhouettes (N, H, W) for {len(cameras)} cameras, got {tuple(silhouettes.shape)}.")
    n_views, height, width = silhouettes.shape
    short = min(height, width)
    u_x, u_y = width / short, height / short
    centers = voxel_centers(grid_size, extent, device=silhouettes.device).reshape(-1, 3)
    alive = torch.arange(centers.shape[0], device=silhouettes.device)
    # One view at a time, testing only the voxels still alive: the first views carve most
    # of the box, so later ones have little left to test. Interleaving the views makes
    # consecutive ones look from different sides.
    step = max(1, math.isqrt(n_views))
    for view in [v for s in range(step) for v in range(s, n_views, step)]:
        xy, depth = project(cameras[view], centers[alive][None])
        # invert x = u_x (1 - (2j + 1) / W): the pixel whose cell contains x is floor(W (u_x - x) / (2 u_x))
        col = torch.floor(width * (u_x - xy[0, :, 0]) / (2 * u_x))
        row = torch.floor(height * (u_y - xy[0, :, 1]) / (2 * u_y))
        seen = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (depth[0] > 0)
        pixel = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).long()
        on_object = silhouettes[view].reshape(-1)[pixel] > 0
        alive = alive[on_object | ~seen]
    hull = torch.zeros(centers.shape[0], dtype=torch.bool, device=silhouettes.device)
    hull[alive] = True
    hull = hull.reshape(1, 1, grid_size, grid_size, grid_size)
    if dilate:
        k = 2 * dilate + 1
        hull = torch.nn.functional.max_pool3d(hull.float(), k, stride=1, padding=dilate) > 0
    return hull.reshape(grid_size, grid_size, grid_size)


def lookup_voxels(grid: torch.Tensor, points: torch.Tensor, extent: float = 3.0) -> torch.Tensor:
    """Value of the nearest voxel of ``grid`` ``(D, H, W)`` at ``points`` ``(..., 3)``; False outside the box."""
    n = grid.shape[0]
    if grid.dim() != 3 or grid.shape != (n, n, n):
        raise ValueError(f"Expected a cubic grid (n, n, n), got {tuple(grid.shape)}.")
    s = extent / n
    idx = torch.round(points / s + (n - 1) / 2).long()
    inside = inside_box(points, extent)
    idx = idx.clamp(0, n - 1)
    value = grid[idx[..., 2], idx[..., 1], idx[..., 0]]
    return value & inside


def sample_budget(bundle, hull: torch.Tensor, extent: float = 3.0) -> dict[str, float]:
    """Fractions of a bundle's sample points that are outside the box, in the carved-out
    (provably empty) part of the box, and inside the visual ``hull``; they sum to 1."""
    points = ray_points(bundle)
    in_box = inside_box(points, extent)
    in_hull = lookup_voxels(hull, points, extent)
    total = in_box.numel()
    return {
        "outside_box": float((~in_box).sum()) / total,
        "box_but_carved": float((in_box & ~in_hull).sum()) / total,
        "inside_hull": float(in_hull.sum()) / total,
    }
