"""Chapter 5 (§5.3-§5.13): a fast fit from Chapters 2-4; grids fill the cube as ``Volumes``, ``align_corners=True``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from . import checks
from .fitting import Settings, check_views
from .hull import Occupancy, carve, voxel_centers
from .metrics import FitHistory, _check_divergence, _huber, clock, evaluate
from .rays import VOLUME_EXTENT, _project, _slopes, camera_rays, ndc_to_pixel, ray_box


def _check_occupancy(occupancy, optional: bool = False) -> None:
    checks.kind("occupancy", occupancy, (Occupancy, type(None)) if optional else Occupancy, "make one with hull.carve")


def _check_views(name: str, views) -> None:
    """``fitting.check_views``, and square images, which the fast recipe's rays assume."""
    check_views(name, views)
    if views.images.shape[1] != views.images.shape[2]:
        raise ValueError(f"{name}.images must be square here, got {tuple(views.images.shape)}; render square views.")


@torch.no_grad()
def footprint(occupancy: Occupancy, cameras, image_size: int, margin: int | None = None) -> torch.Tensor:
    """Pixels ``(B, H, W)`` whose rays may meet an occupied voxel: each occupied voxel's centre projected,
    grown by ``margin`` pixels; by default as far as a corner of a voxel can project from its centre (a
    bound over every occupied voxel, perspective included), plus one. Defined in §5.4."""
    _check_occupancy(occupancy)
    image_size = checks.integer("image_size", image_size)
    margin = checks.integer("margin", margin, minimum=0) if margin is not None else None
    centres = voxel_centers(occupancy.volume_size, occupancy.extent, occupancy.grid.device)[occupancy.grid]
    n_views, size, device = len(cameras), image_size, centres.device
    if centres.shape[0] == 0:  # an empty hull: no ray meets it
        return torch.zeros(n_views, size, size, dtype=torch.bool, device=device)
    mask = torch.zeros(n_views, size, size, device=device)
    # a corner is at most half a voxel diagonal h from its centre, in every view coordinate
    h = math.sqrt(3) / 2 * occupancy.voxel_size
    z_min, xy_max, near_ones = torch.full((), math.inf, device=device), torch.zeros((), device=device), []
    # several views per call (about a million points): per view, the small operations around
    # the projection would cost more than the projection itself on a GPU
    R, T, (slope_x, slope_y) = cameras.R, cameras.T, _slopes(cameras, 1)
    per_call = max(1, 1_000_000 // max(centres.shape[0], 1))
    for first in range(0, n_views, per_call):
        v = slice(first, first + per_call)
        xy, depth = _project(centres.expand(len(R[v]), -1, -1), R[v], T[v], slope_x[v], slope_y[v])
        row, col = (torch.round(c).long() for c in ndc_to_pixel(xy, size, size))
        view = torch.arange(first, first + len(R[v]), device=device)[:, None].expand_as(row)
        front = depth > 0
        z_min = torch.minimum(z_min, depth.masked_fill(depth <= -h, math.inf).min())  # a cell may straddle
        xy_max = torch.maximum(xy_max, xy.abs().amax(-1).masked_fill(~front, 0).max())
        inside = front & (row >= 0) & (row < size) & (col >= 0) & (col < size)
        mask.view(-1)[((view * size + row) * size + col)[inside]] = 1.0
        # centres just outside the image: their cells may still cover its border pixels
        near = front & ~inside & (row >= -size) & (row < 2 * size) & (col >= -size) & (col < 2 * size)
        near_ones.append(torch.stack((view, row, col), -1)[near])
    if margin is None:
        # x = X / (Z s) moves by at most h (1/s + |x|) / (Z - h) when X and Z move by h; s is the slope
        slope = torch.minimum(slope_x, slope_y).min()
        reach = (h * (1 / slope + xy_max) / (z_min - h)).item() if (z_min - h).item() > 0 else math.inf
        # + 1: the centre's pixel is rounded
        margin = min(math.ceil(reach * size / 2) + 1, size) if math.isfinite(reach) else size
    if margin >= size:  # a voxel this near can cover the whole image
        return torch.ones(n_views, size, size, dtype=torch.bool, device=device)
    near = torch.cat(near_ones)
    r, c = near[:, 1], near[:, 2]
    keep = (r >= -margin) & (r < size + margin) & (c >= -margin) & (c < size + margin)
    mask[near[keep, 0], r[keep].clamp(0, size - 1), c[keep].clamp(0, size - 1)] = 1.0
    return F.max_pool2d(mask[:, None], 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0.5


@torch.no_grad()
def clip_to_hull(origins, directions, occupancy: Occupancy, chunk: int = 8192):
    """Per-ray ``near, far`` ``(N,)`` outside which it meets no occupied voxel (misses: equal). Defined in §5.4."""
    _check_occupancy(occupancy)
    chunk = checks.integer("chunk", chunk)
    step = occupancy.voxel_size
    lo, hi = occupancy.bounds()
    if origins.shape[0] == 0 or not occupancy.grid.any():  # nothing to meet (ray_box refuses an empty box)
        return origins.new_zeros(origins.shape[0]), origins.new_zeros(origins.shape[0])
    box_near, box_far = ray_box(origins, directions, hi, lo)
    near, far = box_near.clone(), box_near.clone()
    for s in range(0, origins.shape[0], chunk):
        o, d, n0, f0 = (t[s : s + chunk] for t in (origins, directions, box_near, box_far))
        n_steps = max(math.ceil((f0 - n0).max().item() / step), 1)
        t = n0[:, None] + (torch.arange(n_steps, device=o.device) + 0.5) * step
        occ = occupancy.lookup(o[:, None] + t[..., None] * d[:, None]) & (t < f0[:, None])
        hit, first = occ.any(1), occ.float().argmax(1)
        last = n_steps - 1 - occ.flip(1).float().argmax(1)
        # probed every voxel: a step of margin each side keeps an occupied stretch between two probes
        near[s : s + chunk] = torch.where(hit, torch.maximum(n0 + (first - 1) * step, n0), n0)
        far[s : s + chunk] = torch.where(hit, torch.minimum(n0 + (last + 2) * step, f0), n0)
    return near, far


@torch.no_grad()
def clipped_rays(cameras, image_size: int, occupancy: Occupancy | None, half: float):
    """All rays of ``cameras`` ``(N, 3)``; ``near, far`` ``(N,)`` clip to the hull or the cube. Defined in §5.4."""
    half = checks.number("half", half, 0.0, low_open=True)
    origins, directions = (t.reshape(-1, 3) for t in camera_rays(cameras, image_size))
    if occupancy is None:
        near, far = ray_box(origins, directions, half)
    else:
        near, far = torch.zeros_like(origins[:, 0]), torch.zeros_like(origins[:, 0])
        cand = footprint(occupancy, cameras, image_size).reshape(-1).nonzero()[:, 0]
        near[cand], far[cand] = clip_to_hull(origins[cand], directions[cand], occupancy)
    return origins, directions, near, far


class FastVolume(torch.nn.Module):
    """Raw density and colour logits ``(1, 4, n, n, n)`` in one tensor, and how to render them. Defined in §5.7."""

    def __init__(
        self,
        volume_size: int = 128,
        density: str = "softplus",
        fused: bool = True,
        init_density: float = -4.0,
        unit: float | None = None,
        occupancy: Occupancy | None = None,
        image_size: int = 128,
        step_voxels: float = 1.0,
        grid: torch.Tensor | None = None,
    ):
        super().__init__()
        checks.choice("density", density, ("softplus", "sigmoid"))
        if grid is None:
            volume_size = checks.integer("volume_size", volume_size, minimum=2)
            grid = torch.zeros(1, 4, volume_size, volume_size, volume_size)
            grid[:, 0] = checks.number("init_density", init_density)
        cube = lambda t: t.dim() == 5 and t.shape[:2] == (1, 4) and t.shape[2] == t.shape[3] == t.shape[4] >= 2  # noqa: E731
        checks.shape("grid", grid, "(1, 4, n, n, n), n >= 2", cube, "pass finite raw values")
        _check_occupancy(occupancy, optional=True)
        self.grid = torch.nn.Parameter(grid)
        self.density, self.fused, self.occupancy = density, fused, occupancy
        self.unit = checks.number("unit", unit, 0.0, low_open=True) if unit is not None else self.voxel_size
        self.image_size = checks.integer("image_size", image_size)
        self.step_voxels = checks.number("step_voxels", step_voxels, 0.0, low_open=True)
        self._rays = {}

    @property
    def volume_size(self) -> int:
        return self.grid.shape[-1]

    @property
    def voxel_size(self) -> float:
        return VOLUME_EXTENT / self.volume_size

    @property
    def half(self) -> float:
        return self.voxel_size * (self.volume_size - 1) / 2

    @property
    def densities(self) -> torch.Tensor:
        """``(1, D, H, W)``: opacity across a voxel, 0 outside the hull: ``1 - exp(-softplus(raw) * voxel / unit)``
        (``"sigmoid"``: ``sigmoid(raw)``, Chapter 4's opacity of one sample)."""
        raw = self.grid[0, :1]
        sigmoid = self.density == "sigmoid"
        alpha = torch.sigmoid(raw) if sigmoid else 1 - torch.exp(-F.softplus(raw) * self.voxel_size / self.unit)
        if self.occupancy is not None:  # the renderer never reads a sample outside the hull: empty there
            alpha = alpha * self.occupancy.lookup(voxel_centers(self.volume_size, device=raw.device)[None])
        return alpha

    @property
    def colors(self) -> torch.Tensor:
        """RGB colours in [0, 1], ``(3, D, H, W)``."""
        return torch.sigmoid(self.grid[0, 1:])

    def sample(self, points: torch.Tensor):
        """``softplus(raw)`` per ``unit`` (``"sigmoid"``: opacity) ``(M,)`` and colour ``(M, 3)`` at ``points``."""
        loc = (points / self.half).view(1, -1, 1, 1, 3)  # marching.world_to_local for a cube at the origin
        # "sigmoid" is Chapter 4's order: activate, then interpolate
        act = torch.sigmoid(self.grid) if self.density == "sigmoid" else self.grid
        if self.fused:
            out = F.grid_sample(act, loc, align_corners=True, padding_mode="border").view(4, -1)
        else:
            dens = F.grid_sample(act[:, :1], loc, align_corners=True, padding_mode="border").view(1, -1)
            col = F.grid_sample(act[:, 1:], loc, align_corners=True, padding_mode="border").view(3, -1)
            out = torch.cat([dens, col])
        if self.density == "sigmoid":
            return out[0], out[1:].T
        return F.softplus(out[0]), torch.sigmoid(out[1:].T)

    def optical_depth(self, density: torch.Tensor, delta: float) -> torch.Tensor:
        """``-log(1 - alpha)`` of a sample: ``softplus(raw) * delta / unit``, or ``-log(1 - sigmoid)``."""
        if self.density == "sigmoid":
            return -torch.log1p(-density.clamp(max=1 - 1e-6))
        return density * (delta / self.unit)

    @torch.no_grad()
    def upsample(self, volume_size: int, occupancy: Occupancy | None = None) -> FastVolume:
        """A copy trilinearly resampled to ``volume_size^3`` (raw values, so the same field); ``occupancy``
        replaces the hull (default: keep this one)."""
        volume_size = checks.integer("volume_size", volume_size, minimum=2)
        _check_occupancy(occupancy, optional=True)
        # sample this field at the new voxel centres: the centres of an n^3 and an m^3 grid span
        # different extents, so resizing the array corner to corner would stretch the field
        centres = (voxel_centers(volume_size, device=self.grid.device) / self.half).to(self.grid.dtype)
        grid = F.grid_sample(self.grid, centres[None], align_corners=True, padding_mode="border")
        config = {key: value for key, value in self.config().items() if key != "occupancy_size"}
        occupancy = occupancy if occupancy is not None else self.occupancy
        return FastVolume(**config, occupancy=occupancy, grid=grid.contiguous())

    @torch.no_grad()
    def forward(self, cameras) -> torch.Tensor:
        """Whole images ``(B, H, W, 4)`` of ``cameras``: RGB then opacity, black background."""
        key = (str(self.grid.device), *(t.cpu().numpy().tobytes() for t in (cameras.R, cameras.T)), self.volume_size)
        if key not in self._rays:
            origins, directions, near, far = clipped_rays(cameras, self.image_size, self.occupancy, self.half)
            hit = (far > near).nonzero()[:, 0]
            if len(self._rays) > 8:
                self._rays.clear()
            self._rays[key] = (origins.shape[0], hit, origins[hit], directions[hit], near[hit], far[hit])
        n, hit, origins, directions, near, far = self._rays[key]
        out = torch.zeros(n, 4, device=origins.device)
        step = self.step_voxels * self.voxel_size
        for s in range(0, hit.shape[0], 32768):
            sl = slice(s, s + 32768)
            rgb, opacity = render_rays(self, origins[sl], directions[sl], near[sl], far[sl], step, self.occupancy)
            out[hit[sl]] = torch.cat([rgb, opacity[:, None]], 1)
        return out.reshape(len(cameras), self.image_size, self.image_size, 4)

    def config(self) -> dict:
        """What ``fitting.load_volume`` needs to rebuild the model (besides its tensors)."""
        names = ("volume_size", "density", "fused", "unit", "image_size", "step_voxels")
        occupancy_size = self.occupancy.volume_size if self.occupancy is not None else None
        return {**{name: getattr(self, name) for name in names}, "occupancy_size": occupancy_size}

    @classmethod
    def from_config(cls, config: dict) -> FastVolume:
        """An untrained model of the saved shape; its tensors (the hull's too) come from ``load_state_dict``."""
        config = dict(config)
        size = config.pop("occupancy_size")
        occupancy = Occupancy(torch.zeros((size,) * 3, dtype=torch.bool)) if size else None
        return cls(**config, occupancy=occupancy)


def render_rays(
    volume: FastVolume,
    origins,
    directions,
    near,
    far,
    step: float,
    occupancy: Occupancy | None = None,
    early_stop: float = 0.0,
):
    """``rgb`` ``(N, 3)`` and ``opacity`` ``(N,)`` of rays ``(N, 3)`` from ``near`` to ``far``. Defined in §5.7."""
    n = origins.shape[0]
    n_steps = max(math.ceil((far - near).clamp_min(0).max().item() / step) if n else 0, 1)
    t = near[:, None] + (torch.arange(n_steps, device=origins.device) + 0.5) * step  # (N, S)
    valid = t < far[:, None]  # and, if given, inside the occupancy: the rest count as empty
    points = origins[:, None] + t[..., None] * directions[:, None]
    if occupancy is not None:
        valid &= occupancy.lookup(points)
    if early_stop > 0:  # skip the samples whose transmittance is below it
        with torch.no_grad():
            dens, _ = volume.sample(points[valid])
            tau = torch.zeros(n, n_steps, device=origins.device).masked_scatter(valid, volume.optical_depth(dens, step))
            trans = torch.exp(-(torch.cumsum(tau, 1) - tau))
            valid &= trans > early_stop
    dens, rgb = volume.sample(points[valid])
    tau_valid = volume.optical_depth(dens, step)
    tau = torch.zeros(n, n_steps, device=origins.device, dtype=dens.dtype).masked_scatter(valid, tau_valid)
    cum = torch.cumsum(tau, 1)
    weights = torch.exp(-(cum - tau)) * -torch.expm1(-tau)  # T_k * alpha_k
    ray_index, contrib = valid.nonzero()[:, 0], weights[valid][:, None] * rgb
    color = torch.zeros(n, 3, device=origins.device, dtype=rgb.dtype).index_add(0, ray_index, contrib)
    opacity = -torch.expm1(-cum[:, -1])
    return color, opacity


def total_variation(grid: torch.Tensor) -> torch.Tensor:
    """Mean squared neighbour difference of ``(1, C, D, H, W)`` {cite}`rudin1992nonlinear`. Defined in §5.8."""
    return sum(grid.diff(dim=d).pow(2).mean() for d in (2, 3, 4))


def active_voxels(occupancy: Occupancy, volume_size: int) -> torch.Tensor:
    """Flat indices ``(K,)`` of an ``n^3`` grid's voxels a hull sample's trilinear lookup can touch. Defined in §5.9."""
    _check_occupancy(occupancy)
    volume_size = checks.integer("volume_size", volume_size, minimum=2)
    # the n^3 cells that overlap an occupied cell (adaptive pooling takes, per cell, every hull cell
    # it overlaps, growing or shrinking: sampling the hull instead would miss thin parts)...
    occ = F.adaptive_max_pool3d(occupancy.grid[None, None].float(), volume_size)
    # ...and their neighbours: a sample in a cell interpolates from the 8 nearest centres
    occ = F.max_pool3d(occ, 3, stride=1, padding=1) > 0
    return occ.reshape(-1).nonzero()[:, 0]


class MaskedAdam:
    """Adam {cite}`kingma2015adam` on the ``active`` voxels of a ``(1, C, D, H, W)`` parameter only. Defined in §5.9."""

    def __init__(
        self, param: torch.nn.Parameter, active: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8
    ):
        checks.shape("param", param, "(1, C, D, H, W)", lambda t: t.dim() == 5 and t.shape[0] == 1)
        lr, eps = checks.number("lr", lr, 0.0, low_open=True), checks.number("eps", eps, 0.0, low_open=True)
        betas = tuple(checks.number(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas))
        checks.require(max(betas) < 1, f"betas must lie in [0, 1), got {betas}; Adam's defaults are (0.9, 0.999).")
        n, (lo, hi) = param[0, 0].numel(), map(int, active.aminmax() if active.numel() else (0, 0))
        checks.require(0 <= lo <= hi < n, f"active must index the {n} voxels, got {lo} to {hi}; use active_voxels.")
        self.param, self.active, self.betas, self.eps = param, active, betas, eps
        self.param_groups = [{"lr": lr}]
        self.m = torch.zeros(param.shape[1], active.shape[0], device=param.device)
        self.v, self.t = torch.zeros_like(self.m), 0

    def zero_grad(self, set_to_none: bool = True):
        self.param.grad = None

    @torch.no_grad()
    def step(self):
        if self.param.grad is None:
            return
        b1, b2 = self.betas
        self.t += 1
        flat = self.param.view(self.param.shape[1], -1)
        grad = self.param.grad.view(flat.shape)[:, self.active]
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        lr = self.param_groups[0]["lr"] / (1 - b1**self.t)
        update = self.m / ((self.v / (1 - b2**self.t)).sqrt_().add_(self.eps))
        flat[:, self.active] -= lr * update


@dataclass
class TrainRays:
    """All training rays that meet the hull: ``(N, 3)``/``(N,)`` tensors plus ``view`` ``(N,)``. Defined in §5.4."""

    origins: torch.Tensor
    directions: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    rgb: torch.Tensor
    silhouette: torch.Tensor
    view: torch.Tensor
    n_pixels: int


@torch.no_grad()
def prepare_rays(views, occupancy: Occupancy) -> TrainRays:
    """Rays of every pixel of ``views`` clipped to ``occupancy``; misses (no gradient) dropped. Defined in §5.4."""
    _check_views("views", views)
    _check_occupancy(occupancy)
    checks.require(occupancy.grid.any(), "occupancy is empty (0 occupied voxels), so no ray meets it; use hull.carve.")
    n_views, image_size = views.images.shape[:2]
    half = occupancy.voxel_size * (occupancy.volume_size - 1) / 2
    hull = None if occupancy.grid.all() else occupancy  # no hull: the cube is all there is
    origins, directions, near, far = clipped_rays(views.cameras(), image_size, hull, half)
    keep = far > near
    view = torch.arange(n_views, device=origins.device).repeat_interleave(image_size * image_size)
    rgb, silhouette = views.images.reshape(-1, 3), views.silhouettes.reshape(-1)
    return TrainRays(*(t[keep] for t in (origins, directions, near, far, rgb, silhouette, view)), origins.shape[0])


@dataclass
class FastSettings(Settings):
    """Every knob of the fast recipe, one switch per technique (0 disables); see ``lr_at``. Defined in §5.13."""

    lr: float = 0.15
    eval_every: int = 25
    rays_per_step: int = 8192
    step_voxels: float = 1.0
    lr_final_factor: float = 0.1
    # Chapter 4's tenfold drop at 75 %, no TV: over whole fits the drop ended highest and TV changed
    # nothing (tests/benchmarks/bench_tv_decay.py, book/data/ch5_tv_decay.json, §5.10)
    schedule: str = "step"
    hull: bool = True
    random_rays: bool = True
    images_per_step: int = 10
    fused: bool = True
    density: str = "softplus"
    coarse_volume_size: int = 64
    coarse_fraction: float = 0.5
    tv_weight: float = 0.0
    # from the opaque start on, rays turn opaque early: over whole fits skipping what lies behind
    # saved more than the gradient-free pass that finds it costs (tests/benchmarks/bench_tv_decay.py)
    early_stop: float = 1e-3
    sparse_adam: bool = True
    # softplus(-2) = 0.13 per voxel: the hull starts nearly opaque, so the silhouettes are right from
    # the first step and the fit only has to carve and colour (Chapter 4 starts from a faint fog)
    init_density: float = -2.0
    # a GPU has room for more rays per step, and with more rays the fit climbs in fewer steps. Of the
    # settings tests/benchmarks/bench_gpu_settings.py tried (book/data/ch5_gpu_settings.json), these
    # reached the GPU targets' PSNR in the fewest steps: without the 64^3 start, which saves time
    # per step on the CPU but costs steps. Their seconds on a GPU are not yet measured.
    GPU: ClassVar[dict] = dict(rays_per_step=32768, n_iter=200, coarse_volume_size=0)

    def check(self, n_views: int | None = None) -> None:
        super().check()
        for name in ("hull", "random_rays", "fused", "sparse_adam"):
            setattr(self, name, checks.flag(f"FastSettings.{name}", getattr(self, name)))
        checks.choice("FastSettings.density", self.density, ("softplus", "sigmoid"))
        checks.choice("FastSettings.schedule", self.schedule, ("exp", "step", "constant"))
        self.rays_per_step = checks.integer("FastSettings.rays_per_step", self.rays_per_step)
        self.images_per_step = checks.integer("FastSettings.images_per_step", self.images_per_step)
        msg = f"rays_per_step={self.rays_per_step} < images_per_step={self.images_per_step}; use one ray per image."
        checks.require(self.random_rays or self.rays_per_step >= self.images_per_step, msg)
        if n_views is not None and not self.random_rays and self.images_per_step > n_views:
            raise ValueError(f"images_per_step={self.images_per_step} exceeds the {n_views} views; use at most that.")
        self.step_voxels = checks.number("FastSettings.step_voxels", self.step_voxels, 0.05, 8.0)
        self.lr_final_factor = checks.number("FastSettings.lr_final_factor", self.lr_final_factor, 0, 1, low_open=True)
        self.coarse_fraction = checks.number("FastSettings.coarse_fraction", self.coarse_fraction, 0.0, 0.99)
        c = self.coarse_volume_size = checks.integer("FastSettings.coarse_volume_size", self.coarse_volume_size, 0)
        msg = f"coarse_volume_size must be 0 (off) or 2 to {self.volume_size}, got {c}."
        checks.require(c == 0 or 2 <= c <= self.volume_size, msg)
        self.tv_weight = checks.number("FastSettings.tv_weight", self.tv_weight, 0.0)
        self.early_stop = checks.number("FastSettings.early_stop", self.early_stop, 0.0, 0.5)
        self.init_density = checks.number("FastSettings.init_density", self.init_density, -30.0, 10.0)

    @property
    def coarse_iters(self) -> int:
        """How many of the ``n_iter`` steps run on the ``coarse_volume_size^3`` grid (0: none)."""
        return int(self.coarse_fraction * self.n_iter) if self.coarse_volume_size else 0

    @property
    def start_volume_size(self) -> int:
        """The grid size of the first step: the coarse one when there is a coarse stage."""
        return self.coarse_volume_size if self.coarse_iters else self.volume_size

    def lr_at(self, iteration: int) -> float:
        """The lr of ``iteration``: ``"exp"`` decays to ``lr * lr_final_factor``, ``"step"`` is Chapter 4's."""
        if self.schedule == "exp":
            return self.lr * self.lr_final_factor ** (iteration / max(self.n_iter - 1, 1))
        if self.schedule == "step":
            return self.lr * (0.1 if iteration >= round(0.75 * self.n_iter) else 1.0)
        return self.lr


def _draw(rays: TrainRays, settings: FastSettings, n_views: int, gen: torch.Generator) -> torch.Tensor:
    device = rays.origins.device
    if settings.random_rays:
        return torch.randint(rays.origins.shape[0], (settings.rays_per_step,), generator=gen, device=device)
    # whole-image batches, as Chapter 4 does: pick images, then pixels (of the hull) in them
    picked = torch.randperm(n_views, generator=gen, device=device)[: settings.images_per_step]
    per_image = settings.rays_per_step // settings.images_per_step
    out = []
    for v in picked.tolist():
        idx = (rays.view == v).nonzero()[:, 0]
        out.append(idx[torch.randint(idx.shape[0], (per_image,), generator=gen, device=device)])
    return torch.cat(out)


def fit(
    train,
    heldout=None,
    settings: FastSettings | None = None,
    progress: bool = False,
    callback=None,
    occupancy: Occupancy | None = None,
):
    """As ``fitting.fit``, for a :class:`FastVolume`; ``occupancy`` reuses a hull (then untimed). Defined in §5.13.

    Without ``occupancy`` the hull is carved at the grid's size, so the coarse stage starts
    after a cheap coarse carve and the fine hull is carved when the fine stage begins.
    """
    _check_views("train", train)
    device = train.images.device
    settings = settings if settings is not None else FastSettings.for_device(device)
    checks.kind("settings", settings, FastSettings, "for FitSettings use fitting.fit")
    settings.check(n_views=len(train))
    _check_occupancy(occupancy, optional=True)
    if occupancy is not None and not settings.hull:
        raise ValueError(
            "occupancy= was given with FastSettings.hull=False; pass occupancy=None to fit without a hull."
        )
    if heldout is not None:
        check_views("heldout", heldout)
        heldout = heldout.to(device)
        # the model renders at the training views' size, and is scored against these images
        if heldout.images.shape[1:3] != train.images.shape[1:3]:
            sizes = f"{tuple(heldout.images.shape[1:3])} against {tuple(train.images.shape[1:3])}"
            raise ValueError(
                f"heldout images must be as large as the training images, got {sizes}; render both at one size."
            )
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    history = FitHistory()
    given = occupancy.to(device) if occupancy is not None else None

    def hull_for(volume_size):
        if given is not None:
            return given
        if settings.hull:
            return carve(train.silhouettes, train.cameras(), volume_size)
        return Occupancy.full(volume_size, device)

    def make_optimizer(volume):
        if settings.sparse_adam:
            return MaskedAdam(volume.grid, active_voxels(occupancy, volume.volume_size), settings.lr)
        return torch.optim.Adam(volume.parameters(), lr=settings.lr)

    start = clock(device)
    coarse_iters, size = settings.coarse_iters, settings.start_volume_size
    occupancy = hull_for(size)
    rays = prepare_rays(train, occupancy)
    unit, image_size = VOLUME_EXTENT / settings.volume_size, train.images.shape[1]
    kw = dict(unit=unit, image_size=image_size, step_voxels=settings.step_voxels)
    hull = occupancy if settings.hull else None
    volume = FastVolume(size, settings.density, settings.fused, settings.init_density, occupancy=hull, **kw).to(device)
    optimizer = make_optimizer(volume)
    lo, hi = occupancy.bounds()
    fit_seconds = clock(device) - start  # carving the hull and clipping the rays count as fitting

    def log_eval(it):
        if heldout is None:
            return
        result = evaluate(volume, heldout)
        history.log_eval(it, fit_seconds, result)
        if progress:
            print(f"iter {it:4d}  {fit_seconds:6.1f} s  held-out PSNR {result['psnr']:.2f} dB  IoU {result['iou']:.3f}")
        if callback is not None:
            callback(it, volume, result)

    for it in range(settings.n_iter):
        t0 = clock(device)
        if it == coarse_iters and coarse_iters:
            if given is None and occupancy.volume_size != settings.volume_size:  # the fine hull, tighter rays
                occupancy = hull_for(settings.volume_size)
                rays, (lo, hi) = prepare_rays(train, occupancy), occupancy.bounds()
            volume = volume.upsample(settings.volume_size, occupancy if settings.hull else None)
            optimizer = make_optimizer(volume)
        for group in optimizer.param_groups:
            group["lr"] = settings.lr_at(it)
        idx = _draw(rays, settings, len(train), gen)
        batch = (rays.origins[idx], rays.directions[idx], rays.near[idx], rays.far[idx])
        step = settings.step_voxels * volume.voxel_size
        rgb, opacity = render_rays(volume, *batch, step, volume.occupancy, settings.early_stop)
        loss = _huber(rgb, rays.rgb[idx]).mean() + _huber(opacity, rays.silhouette[idx]).mean()
        if settings.tv_weight:
            # only the density, only inside the hull's bounding box: the rest is never rendered
            n = volume.volume_size
            a = ((lo / volume.half + 1) * 0.5 * (n - 1)).floor().long().clamp(0, n - 1).tolist()
            b = ((hi / volume.half + 1) * 0.5 * (n - 1)).ceil().long().clamp(0, n - 1).tolist()
            box = volume.grid[:, :1, a[2] : b[2] + 1, a[1] : b[1] + 1, a[0] : b[0] + 1]
            loss = loss + settings.tv_weight * total_variation(box)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fit_seconds += clock(device) - t0
        history.log_step(it + 1, loss.item(), fit_seconds)
        _check_divergence(history, lr=settings.lr)
        if (settings.eval_every and (it + 1) % settings.eval_every == 0) or it == settings.n_iter - 1:
            log_eval(it + 1)
    return volume, history
