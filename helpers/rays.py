"""Chapter 2: rays through pixels, and where their sample points fall.

Conventions (PyTorch3D's), for every module of ``helpers``:
- view space: +X left, +Y up, +Z into the scene; a world row vector maps as ``x @ R + T`` (centre ``-T @ R^T``);
- NDC: +X left, +Y up; the shorter image side spans [-1, 1], the longer [-u, u], u = long / short; row 0 on top;
- a ray ``origin + t * direction`` has view-space direction z = 1, so ``t`` *is* the view
  depth (PyTorch3D's ``unit_directions=False``); :func:`camera_rays` normalises instead.
"""

from __future__ import annotations

import torch
from pytorch3d.renderer import FoVPerspectiveCameras
from pytorch3d.renderer.implicit import RayBundle

from . import checks
from .data import camera_centers

VOLUME_EXTENT = 3.0  # side of the world cube at the origin the grid fills: half a unit around the cow's [-1, 1]^3


def _check_depths(n_pts_per_ray, min_depth, max_depth, prefix: str = "", minimum: int = 1) -> tuple[int, float, float]:
    n_pts_per_ray = checks.integer(f"{prefix}n_pts_per_ray", n_pts_per_ray, minimum)
    min_depth = checks.number(f"{prefix}min_depth", min_depth, 0.0)
    max_depth = checks.number(f"{prefix}max_depth", max_depth)
    checks.require(min_depth < max_depth, f"min_depth={min_depth} must be smaller than max_depth={max_depth} (view z).")
    return n_pts_per_ray, min_depth, max_depth


def ndc_pixel_centers(image_width: int, image_height: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """NDC ``(x, y)`` ``(H, W, 2)`` of the pixel centres: ``x_j = u (1 - (2j + 1) / W)``, y alike. Defined in §2.2."""
    image_width, image_height = checks.integer("image_width", image_width), checks.integer("image_height", image_height)
    short = min(image_width, image_height)
    u_x, u_y = image_width / short, image_height / short
    x = u_x * (1.0 - (2.0 * torch.arange(image_width, device=device, dtype=dtype) + 1.0) / image_width)
    y = u_y * (1.0 - (2.0 * torch.arange(image_height, device=device, dtype=dtype) + 1.0) / image_height)
    return torch.stack(torch.broadcast_tensors(x[None, :], y[:, None]), dim=-1)


def ndc_to_pixel(xy: torch.Tensor, image_height: int, image_width: int):
    """Continuous pixel ``row, col`` ``(...)`` of NDC ``xy`` ``(..., 2)``; centres are integers. Defined in §2.1."""
    image_height, image_width = checks.integer("image_height", image_height), checks.integer("image_width", image_width)
    checks.shape("xy", xy, "(..., 2)", lambda t: t.shape[-1:] == (2,))
    short = min(image_width, image_height)
    u_x, u_y = image_width / short, image_height / short
    col = image_width * (u_x - xy[..., 0]) / (2 * u_x) - 0.5
    row = image_height * (u_y - xy[..., 1]) / (2 * u_y) - 0.5
    return row, col


def _check_cameras(cameras) -> None:
    checks.kind("cameras", cameras, FoVPerspectiveCameras, "for other cameras use NDCMultinomialRaysampler")
    msg = "These cameras carry an explicit projection matrix K; build them without, or use NDCMultinomialRaysampler."
    checks.require(getattr(cameras, "K", None) is None, msg)
    vals = {k: torch.as_tensor(getattr(cameras, k), device=cameras.R.device) for k in ("R", "T", "fov", "aspect_ratio")}
    if not torch.stack([torch.isfinite(v).all() for v in vals.values()]).all():  # one sync
        name, value = next((k, v) for k, v in vals.items() if not torch.isfinite(v).all())
        hint = "Make the cameras from finite angles and distances (data.make_cameras, fitting.rotating_cameras)."
        raise ValueError(f"The cameras' {name} holds NaN or infinite values: {value.tolist()}. {hint}")


def ray_directions(cameras, xy: torch.Tensor) -> torch.Tensor:
    """World directions ``(B, ..., 3)`` (view z = 1) of the rays through NDC ``xy`` ``(B, ..., 2)``. Defined in §2.2."""
    checks.shape("xy", xy, "(B, ..., 2)", lambda t: t.dim() >= 2 and t.shape[-1] == 2)
    slope_x, slope_y = _slopes(cameras, xy.dim() - 2)
    xy = xy.to(cameras.R.dtype)
    view = torch.stack((xy[..., 0] * slope_x, xy[..., 1] * slope_y, torch.ones_like(xy[..., 0])), dim=-1)
    flat = view.reshape(cameras.R.shape[0], -1, 3) @ cameras.R.transpose(1, 2)
    return flat.reshape(view.shape)


def _slopes(cameras, n_inner_dims: int):
    """``tan(fov/2) * aspect_ratio`` and ``tan(fov/2)`` per camera, shaped ``(B, 1, ..., 1)``."""
    _check_cameras(cameras)
    dtype, batch = cameras.R.dtype, cameras.R.shape[0]
    fov = torch.as_tensor(cameras.fov, dtype=dtype, device=cameras.R.device).reshape(-1)
    fov = torch.deg2rad(fov) if cameras.degrees else fov
    tan_half = torch.tan(fov / 2).expand(batch)
    aspect = torch.as_tensor(cameras.aspect_ratio, dtype=dtype, device=cameras.R.device).reshape(-1).expand(batch)
    shape = (batch,) + (1,) * n_inner_dims
    return (tan_half * aspect).reshape(shape), tan_half.reshape(shape)


def project(cameras, points: torch.Tensor):
    """NDC ``xy`` ``(B, N, 2)`` and view depth ``z`` ``(B, N)`` (> 0: in front) of world ``points``. Defined in §2.1."""
    slope_x, slope_y = _slopes(cameras, 1)
    b = len(cameras.R)
    checks.shape("points", points, f"(B={b}, N, 3)", lambda t: t.dim() == 3 and t.shape[::2] == (b, 3))
    return _project(points, cameras.R, cameras.T, slope_x, slope_y)


def _project(points, R, T, slope_x, slope_y):
    """:func:`project` for checked cameras given as tensors, ``R`` ``(B, 3, 3)``, ``T`` ``(B, 3)``, slopes
    ``(B, 1)`` (``_slopes``): a loop over views calls this, so the cameras are checked once, not per view."""
    view = points.to(R.dtype) @ R + T[:, None, :]
    z = view[..., 2]
    xy = torch.stack((view[..., 0] / (z * slope_x), view[..., 1] / (z * slope_y)), dim=-1)
    return xy, z


def stratify(depths: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Jitter sorted depths ``(..., P)`` in their bins, as ``stratified_sampling`` draws. Defined in §2.5."""
    checks.finite("depths", depths, "pass finite depths")
    checks.require((depths.diff(dim=-1) >= 0).all(), "depths must increase along each ray, not decrease; sort them.")
    mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
    upper = torch.cat((mids, depths[..., -1:]), dim=-1)
    lower = torch.cat((depths[..., :1], mids), dim=-1)
    u = torch.rand(lower.shape, generator=generator, device=lower.device, dtype=lower.dtype)
    return lower + (upper - lower) * u


def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class GridRaysampler(torch.nn.Module):
    """One ray through every pixel centre: our own ``NDCMultinomialRaysampler`` in grid mode. Defined in §2.4."""

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
            checks.require(value is None, f"GridRaysampler takes all pixels: for {name} use NDCMultinomialRaysampler.")
        device = self._xy_grid.device
        msg = f"The cameras are on {cameras.R.device} but the raysampler on {device}: raysampler.to(cameras.device)."
        checks.require(_same_device(cameras.device, device) and _same_device(cameras.R.device, device), msg)
        # a call's depth keywords override the constructor's; others (VolumeRenderer passes some) are ignored
        min_depth = self.min_depth if min_depth is None else min_depth
        max_depth = self.max_depth if max_depth is None else max_depth
        n_pts = self.n_pts_per_ray if n_pts_per_ray is None else n_pts_per_ray
        stratified = self.stratified if stratified_sampling is None else stratified_sampling
        batch = cameras.R.shape[0]
        xy = self._xy_grid.expand(batch, -1, -1, -1)
        directions = ray_directions(cameras, xy)
        origins = camera_centers(cameras.R, cameras.T)[:, None, None, :].expand_as(directions)
        n_pts, min_depth, max_depth = _check_depths(n_pts, min_depth, max_depth)
        depths = torch.linspace(min_depth, max_depth, n_pts, device=device, dtype=directions.dtype)
        lengths = depths.expand(batch, self.image_height, self.image_width, n_pts)
        if stratified:
            lengths = stratify(lengths)
        # origins, directions (B, H, W, 3), lengths (B, H, W, P), xys (B, H, W, 2)
        return RayBundle(origins=origins, directions=directions, lengths=lengths, xys=xy)


def ray_points(bundle) -> torch.Tensor:
    """Sample points ``(..., P, 3)`` = ``origins + lengths * directions`` of a ``RayBundle``. Defined in §2.3."""
    return bundle.origins[..., None, :] + bundle.lengths[..., :, None] * bundle.directions[..., None, :]


def camera_rays(cameras, image_size: int):
    """:class:`GridRaysampler`'s origins and *unit* directions ``(B, H, W, 3)``: t is a distance. Defined in §5.3."""
    image_size = checks.integer("image_size", image_size)
    xy = ndc_pixel_centers(image_size, image_size, device=cameras.R.device, dtype=cameras.R.dtype)
    directions = ray_directions(cameras, xy.expand(cameras.R.shape[0], -1, -1, -1))
    origins = camera_centers(cameras.R, cameras.T)[:, None, None, :].expand_as(directions)
    return origins, torch.nn.functional.normalize(directions, dim=-1)


def ray_box(origins: torch.Tensor, directions: torch.Tensor, upper, lower=None):
    """Entry, exit ``(N,)`` of rays ``(N, 3)`` through a box (slab method); misses: ``far <= near``. Defined in §5.3."""
    checks.shape("origins", origins, "(N, 3)", lambda t: t.dim() == 2 and t.shape[1] == 3, "pass finite ray origins")
    same = lambda t: t.shape == origins.shape  # noqa: E731
    checks.shape("directions", directions, f"{tuple(origins.shape)} like origins", same, "pass finite ray directions")
    zero = directions.abs().amax(-1) == 0
    if zero.any():  # the indices only for the message: nonzero() would allocate on every call
        zero = zero.nonzero()[:, 0]
        raise ValueError(
            f"directions holds {zero.numel()} zero vectors (rays {zero[:5].tolist()}...), which point nowhere; "
            "give every ray a nonzero direction."
        )
    hi = _corner("upper", upper, origins)  # h (the cube [-h, h]^3) or a corner
    lo = -hi if lower is None else _corner("lower", lower, origins)
    if not (hi > lo).all():
        raise ValueError(f"ray_box needs upper > lower, got {hi.tolist()} and {lo.tolist()}; for [-h, h]^3 pass h > 0.")
    # a direction parallel to an axis would divide by zero: 1e-9 gives an interval that is +-inf in effect
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)  # not behind the camera
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def _corner(name: str, value, like: torch.Tensor) -> torch.Tensor:
    try:
        corner = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a number or 3 numbers, got {value!r}; pass e.g. 1.5.") from exc
    return checks.shape(name, corner, "() or (3,)", corner.shape in ((), (3,)), "pass a finite corner")


def inside_box(points: torch.Tensor, extent: float = VOLUME_EXTENT) -> torch.Tensor:
    """Boolean ``(...)``: which ``points`` ``(..., 3)`` lie in the cube of side ``extent`` at 0. Defined in §2.8."""
    extent = checks.number("extent", extent, 0.0, low_open=True)
    checks.shape("points", points, "(..., 3)", lambda t: t.shape[-1:] == (3,))
    return (points.abs() <= extent / 2).all(dim=-1)


def sample_budget(bundle, occupancy) -> dict[str, float]:
    """Fractions of a bundle's samples ``outside_box``, ``box_but_carved`` and ``inside_hull``. Defined in §2.8."""
    from .hull import Occupancy

    checks.kind("occupancy", occupancy, Occupancy, "make one with hull.carve")
    points = ray_points(bundle)
    in_box = inside_box(points)
    in_hull = occupancy.lookup(points)
    masks = {"outside_box": ~in_box, "box_but_carved": in_box & ~in_hull, "inside_hull": in_hull}
    return {key: float(mask.sum()) / in_box.numel() for key, mask in masks.items()}
