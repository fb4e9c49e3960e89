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
``camera_rays`` gives the same rays with unit directions (a ray's parameter is then a
distance), and ``ray_box`` clips rays to the volume's cube, as Chapter 5 needs.
"""

from __future__ import annotations

import torch
from pytorch3d.renderer import FoVPerspectiveCameras
from pytorch3d.renderer.implicit import RayBundle

from . import checks
from .data import camera_centers

#: Side of the cube of world space the voxel grid fills, centred on the origin (the original
#: tutorial's 3.0): the cow fits in [-1, 1]^3 and 3 leaves half a unit of margin around it.
VOLUME_EXTENT = 3.0


def _check_depths(n_pts_per_ray, min_depth, max_depth) -> tuple[int, float, float]:
    n_pts_per_ray = checks.integer("n_pts_per_ray", n_pts_per_ray)
    min_depth = checks.number("min_depth", min_depth, 0.0)
    max_depth = checks.number("max_depth", max_depth)
    if min_depth >= max_depth:
        raise ValueError(
            f"min_depth={min_depth} must be smaller than max_depth={max_depth}; "
            "depths are view-space z, increasing away from the camera."
        )
    return n_pts_per_ray, min_depth, max_depth


def ndc_pixel_centers(image_width: int, image_height: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """NDC ``(x, y)`` of every pixel centre, shape ``(H, W, 2)``. Defined in §2.2.

    Column ``j`` of a ``W``-pixel-wide image sits at ``x_j = u_x (1 - (2j + 1) / W)``,
    where ``u_x`` is half the NDC width (1 for the shorter side, long/short for the
    longer one): +X points left, so column 0 has the largest x. Rows work the same way
    with y (+Y up, row 0 at the top).
    """
    image_width = checks.integer("image_width", image_width)
    image_height = checks.integer("image_height", image_height)
    short = min(image_width, image_height)
    u_x, u_y = image_width / short, image_height / short
    j = torch.arange(image_width, device=device, dtype=dtype)
    i = torch.arange(image_height, device=device, dtype=dtype)
    x = u_x * (1.0 - (2.0 * j + 1.0) / image_width)
    y = u_y * (1.0 - (2.0 * i + 1.0) / image_height)
    return torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)


def ndc_to_pixel(xy: torch.Tensor, image_height: int, image_width: int):
    """Continuous pixel ``row, col`` ``(...)`` of NDC points ``xy`` ``(..., 2)``. Defined in §2.1.

    The inverse of :func:`ndc_pixel_centers`: pixel centres land on whole numbers, so
    ``round`` gives the pixel that contains a point (rows down from the top, columns
    from the left, because NDC +X points left and +Y up).
    """
    short = min(image_width, image_height)
    u_x, u_y = image_width / short, image_height / short
    col = image_width * (u_x - xy[..., 0]) / (2 * u_x) - 0.5
    row = image_height * (u_y - xy[..., 1]) / (2 * u_y) - 0.5
    return row, col


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


def ray_directions(cameras, xy: torch.Tensor) -> torch.Tensor:
    """World directions ``(B, ..., 3)`` of the rays through NDC points ``xy`` ``(B, ..., 2)``. Defined in §2.2.

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
    """NDC ``xy`` ``(B, N, 2)`` and view depth ``z`` ``(B, N)`` of world ``points`` ``(B, N, 3)``. Defined in §2.1.

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
    """``n_pts_per_ray`` evenly spaced depths from ``min_depth`` to ``max_depth`` (both included), ``(P,)``.

    Defined in §2.5.
    """
    n_pts_per_ray, min_depth, max_depth = _check_depths(n_pts_per_ray, min_depth, max_depth)
    return torch.linspace(min_depth, max_depth, n_pts_per_ray, device=device, dtype=dtype)


def stratify(depths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Jitter each sorted depth uniformly within its own bin, ``(..., P)`` -> ``(..., P)``. Defined in §2.5.

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
    """One ray through every pixel centre of a ``image_height`` x ``image_width`` image. Defined in §2.4.

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

    def __init__(
        self,
        *,
        image_width: int,
        image_height: int,
        n_pts_per_ray: int,
        min_depth: float,
        max_depth: float,
        stratified: bool = False,
    ) -> None:
        super().__init__()
        n_pts_per_ray, min_depth, max_depth = _check_depths(n_pts_per_ray, min_depth, max_depth)
        self.register_buffer("_xy_grid", ndc_pixel_centers(image_width, image_height), persistent=False)
        self.image_height, self.image_width = self._xy_grid.shape[:2]
        self.n_pts_per_ray, self.min_depth, self.max_depth = n_pts_per_ray, min_depth, max_depth
        self.stratified = bool(stratified)  # _xy_grid is a buffer, so module.to(device) moves it

    def forward(
        self,
        cameras,
        *,
        min_depth=None,
        max_depth=None,
        n_pts_per_ray=None,
        stratified_sampling=None,
        mask=None,
        n_rays_per_image=None,
        n_rays_total=None,
        **kwargs,
    ) -> RayBundle:
        _check_cameras(cameras)
        for name, value in (("mask", mask), ("n_rays_per_image", n_rays_per_image), ("n_rays_total", n_rays_total)):
            if value is not None:
                raise ValueError(
                    f"GridRaysampler samples the full pixel grid; {name} is not supported "
                    "(use NDCMultinomialRaysampler or MonteCarloRaysampler to sample a subset)."
                )
        device = self._xy_grid.device
        if not _same_device(cameras.device, device) or not _same_device(cameras.R.device, device):
            raise ValueError(
                f"The cameras are on {cameras.R.device} but the raysampler is on {device}; "
                f"move one of them, e.g. raysampler.to(cameras.device)."
            )
        min_depth = self.min_depth if min_depth is None else min_depth
        max_depth = self.max_depth if max_depth is None else max_depth
        n_pts = self.n_pts_per_ray if n_pts_per_ray is None else n_pts_per_ray
        stratified = self.stratified if stratified_sampling is None else stratified_sampling

        batch = cameras.R.shape[0]
        xy = self._xy_grid.expand(batch, -1, -1, -1)
        directions = ray_directions(cameras, xy)
        origins = camera_centers(cameras.R, cameras.T)[:, None, None, :].expand_as(directions)
        depths = uniform_depths(n_pts, min_depth, max_depth, device=device, dtype=directions.dtype)
        lengths = depths.expand(batch, self.image_height, self.image_width, n_pts)
        if stratified:
            lengths = stratify(lengths)
        return RayBundle(origins=origins, directions=directions, lengths=lengths, xys=xy)


def ray_points(bundle) -> torch.Tensor:
    """Sample points ``(..., P, 3)`` = ``origins + lengths * directions`` of a ``RayBundle``. Defined in §2.3."""
    return bundle.origins[..., None, :] + bundle.lengths[..., :, None] * bundle.directions[..., None, :]


def camera_rays(cameras, image_size: int):
    """Origins and *unit* directions ``(B, H, W, 3)`` of the rays through every pixel centre. Defined in §5.2.

    The rays of :class:`GridRaysampler` (same pixel order: row 0 at the top, NDC +X
    left), with directions normalised so that a ray's parameter is a distance in
    world units rather than a view-space depth.
    """
    image_size = checks.integer("image_size", image_size)
    xy = ndc_pixel_centers(image_size, image_size, device=cameras.R.device, dtype=cameras.R.dtype)
    directions = ray_directions(cameras, xy.expand(cameras.R.shape[0], -1, -1, -1))
    origins = camera_centers(cameras.R, cameras.T)[:, None, None, :].expand_as(directions)
    return origins, torch.nn.functional.normalize(directions, dim=-1)


def ray_box(origins: torch.Tensor, directions: torch.Tensor, upper, lower=None):
    """Entry and exit parameters ``(N,)`` of rays ``(N, 3)`` through an axis-aligned box. Defined in §5.3.

    ``upper`` is a number ``h`` (the cube ``[-h, h]^3``) or the box's upper corner ``(3,)``,
    with ``lower`` its lower corner. The slab method: each axis bounds the ray between two
    planes and the box is where all three intervals overlap. Entry is clamped to 0 (the
    camera); a ray that misses the box gets ``far <= near``.
    """
    hi = torch.as_tensor(upper, dtype=origins.dtype, device=origins.device)
    lo = -hi if lower is None else torch.as_tensor(lower, dtype=origins.dtype, device=origins.device)
    # a direction parallel to an axis would divide by zero: 1e-9 gives an interval that is +-inf in effect
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def inside_box(points: torch.Tensor, extent: float = VOLUME_EXTENT) -> torch.Tensor:
    """Boolean ``(...)``: which of ``points`` ``(..., 3)`` lie in the cube of side ``extent`` centred at 0.

    Defined in §2.8.
    """
    return (points.abs() <= extent / 2).all(dim=-1)


def sample_budget(bundle, occupancy) -> dict[str, float]:
    """Where a bundle's sample points fall; the three fractions sum to 1. Defined in §2.8.

    ``outside_box``: outside the volume's cube; ``box_but_carved``: inside it but in space
    the silhouettes prove empty; ``inside_hull``: in the visual hull ``occupancy`` (a
    :class:`helpers.hull.Occupancy`).
    """
    points = ray_points(bundle)
    in_box = inside_box(points)
    in_hull = occupancy.lookup(points)
    total = in_box.numel()
    return {
        "outside_box": float((~in_box).sum()) / total,
        "box_but_carved": float((in_box & ~in_hull).sum()) / total,
        "inside_hull": float(in_hull.sum()) / total,
    }
