"""Chapter 5: a fast, CPU-friendly recipe for fitting the voxel grid.

Same data, loss and metrics as Chapter 4; what changes is how much work a step does:

* **empty-space skipping**: rays are clipped to the volume's box and to a visual
  hull carved from the training silhouettes (:func:`carve_hull`); samples outside
  the hull are never looked up and rays that miss it are never drawn;
* **random ray batches** drawn across all training views instead of whole images;
* **one fused lookup**: density and colour live in one ``(1, 4, D, H, W)`` tensor
  sampled by a single ``grid_sample`` (no batch-expanded copies of the grid);
* **step-length-aware density**: ``alpha = 1 - exp(-softplus(raw) * delta)`` with
  ``raw`` interpolated *before* the activation, so the number of samples per ray
  is not baked into the model;
* **coarse-to-fine** (64^3 upsampled to 128^3), total-variation regularisation
  and a smooth (exponential) learning-rate decay.

Conventions are PyTorch3D's: world +Y up; a grid ``(1, C, D, H, W)`` covers the
cube whose *voxel centres* span ``[-c, c]^3`` with ``c = HALF_EXTENT * (R-1)/R``
(``Volumes`` with ``voxel_size = 2 * HALF_EXTENT / R`` and ``align_corners=True``),
and ``grid_sample``'s ``(x, y, z)`` index ``(W, H, D)``. Images are ``(N, H, W, C)``
with row 0 at the top; NDC has +X left and +Y up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from . import fitting

#: Half the side of the cube the volume fills, in world units (the seed's 3.0 extent).
HALF_EXTENT = 1.5


# ----------------------------------------------------------------------------- rays
def camera_rays(cameras, image_size: int):
    """One ray per pixel centre of every camera: ``origins, directions`` of shape ``(B, H, W, 3)``.

    Directions have unit length, so a ray's parameter ``t`` is a distance in world
    units. Pixel order is PyTorch3D's renderer's (row 0 at the top), obtained from
    its ``NDCMultinomialRaysampler`` so the images line up with the dataset's.
    """
    from pytorch3d.renderer import NDCMultinomialRaysampler

    sampler = NDCMultinomialRaysampler(image_width=image_size, image_height=image_size,
                                       n_pts_per_ray=1, min_depth=1.0, max_depth=1.0)
    bundle = sampler(cameras)
    return bundle.origins, F.normalize(bundle.directions, dim=-1)


def grid_half(resolution: int) -> float:
    """Half-width ``c`` of the cube spanned by the voxel centres of an ``R^3`` grid."""
    return HALF_EXTENT * (resolution - 1) / resolution


def ray_box(origins: torch.Tensor, directions: torch.Tensor, half, lo=None):
    """Entry and exit distances ``(N,)`` of rays ``(N, 3)`` through the box ``[lo, half]``.

    ``half`` is a number (the cube ``[-half, half]^3``) or the box's upper corner
    ``(3,)`` with ``lo`` its lower corner. The slab method; a ray that misses the
    box gets ``far <= near``.
    """
    hi = torch.as_tensor(half, dtype=origins.dtype, device=origins.device)
    lo = -hi if lo is None else torch.as_tensor(lo, dtype=origins.dtype, device=origins.device)
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


# ----------------------------------------------------------------------------- hull
@dataclass
class Occupancy:
    """A boolean grid ``(R, R, R)`` indexed ``[z, y, x]`` whose voxel centres span ``[-half, half]^3``."""

    grid: torch.Tensor
    half: float

    @property
    def resolution(self) -> int:
        return self.grid.shape[0]

    def lookup(self, points: torch.Tensor) -> torch.Tensor:
        """Nearest-voxel occupancy of ``points`` ``(..., 3)``; False outside the grid."""
        r = self.resolution
        scale = 0.5 * (r - 1) / self.half
        idx = torch.round(points * scale + 0.5 * (r - 1))
        inside = ((idx >= 0) & (idx <= r - 1)).all(-1)
        # the flat index as a float dot product: exact below 2^24 voxels, and one cast instead of three
        strides = torch.tensor([1.0, r, r * r], device=points.device, dtype=points.dtype)
        flat = (idx.clamp_(0, r - 1) @ strides).long()
        return self.grid.reshape(-1)[flat] & inside

    def bounds(self):
        """Lower and upper corners ``(3,)`` of the occupied voxels' box, grown by one voxel."""
        r = self.resolution
        idx = self.grid.nonzero()  # (K, 3) as (z, y, x)
        if idx.shape[0] == 0:
            zero = torch.zeros(3, device=self.grid.device)
            return zero, zero
        voxel = 2 * self.half / (r - 1)
        lo = idx.amin(0).flip(0).float() * voxel - self.half - voxel
        hi = idx.amax(0).flip(0).float() * voxel - self.half + voxel
        return lo.clamp(-self.half, self.half), hi.clamp(-self.half, self.half)

    @classmethod
    def full(cls, resolution: int = 128, device="cpu") -> "Occupancy":
        """Everything occupied: no hull, only the box."""
        return cls(torch.ones(resolution, resolution, resolution, dtype=torch.bool, device=device), grid_half(resolution))


def voxel_centres(resolution: int, half: float, device="cpu") -> torch.Tensor:
    """World positions ``(R, R, R, 3)`` of the voxel centres, indexed ``[z, y, x]``, last dim ``(x, y, z)``."""
    lin = torch.linspace(-half, half, resolution, device=device)
    z, y, x = torch.meshgrid(lin, lin, lin, indexing="ij")
    return torch.stack([x, y, z], -1)


def project(cameras, points: torch.Tensor, image_size: int):
    """Pixel ``(row, col)`` coordinates ``(B, M)`` of world ``points`` ``(M, 3)`` in each camera.

    One 4x4 matrix per camera instead of PyTorch3D's per-call transform
    composition; NDC has +X left and +Y up, pixel ``(0, 0)`` is the top-left one
    and pixel centres sit at integers.
    """
    matrix = cameras.get_full_projection_transform().get_matrix()  # (B, 4, 4), row vectors
    homo = torch.cat([points, torch.ones_like(points[:, :1])], 1)
    clip = homo @ matrix  # (B, M, 4)
    ndc = clip[..., :2] / clip[..., 3:]
    col = (1 - ndc[..., 0]) * (image_size / 2) - 0.5
    row = (1 - ndc[..., 1]) * (image_size / 2) - 0.5
    return row, col


@torch.no_grad()
def footprint(occupancy: "Occupancy", cameras, image_size: int, margin: int = 3) -> torch.Tensor:
    """Pixels ``(B, H, W)`` whose rays may meet an occupied voxel: its projection grown by ``margin``.

    A sample counts as occupied when its *nearest* voxel centre is, so a ray can
    meet the hull up to half a voxel diagonal from a centre; for this book's
    cameras (focal length 111 px, every voxel farther than 1.1 from the camera)
    that is under 2 px of the centre's projection, plus half a pixel of rounding.
    """
    centres = voxel_centres(occupancy.resolution, occupancy.half, occupancy.grid.device)[occupancy.grid]
    mask = torch.zeros(len(cameras), image_size * image_size, device=centres.device)
    for i in range(len(cameras)):
        row, col = project(cameras[i], centres, image_size)
        row, col = row[0].round().long(), col[0].round().long()
        ok = (row >= 0) & (row < image_size) & (col >= 0) & (col < image_size)
        mask[i, row[ok] * image_size + col[ok]] = 1.0
    mask = mask.view(-1, 1, image_size, image_size)
    return F.max_pool2d(mask, 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0.5


@torch.no_grad()
def carve_hull(views, resolution: int = 128, dilate: int = 2) -> Occupancy:
    """Visual hull {cite}`laurentini1994visual`: keep a voxel iff it projects inside every silhouette.

    Each silhouette is first grown by ``dilate`` pixels (a max-pool) so that a voxel
    whose centre falls just outside a silhouette while part of it is inside is
    kept: the hull must contain the object, never cut into it. A voxel that
    projects outside a view's image is not judged by that view.
    """
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}.")
    device = views.silhouettes.device
    half = grid_half(resolution)
    points = voxel_centres(resolution, half, device).reshape(-1, 3)
    keep = torch.ones(points.shape[0], dtype=torch.bool, device=device)
    sil = F.max_pool2d(views.silhouettes[:, None].float(), 2 * dilate + 1, stride=1, padding=dilate)[:, 0] > 0.5
    _, h, w = sil.shape
    if h != w:
        raise ValueError(f"carve_hull expects square images, got {h} x {w}.")
    cameras = views.cameras(device)
    for i in range(len(views)):
        alive = keep.nonzero()[:, 0]
        row, col = project(cameras[i], points[alive], w)
        row, col = row[0].round().long(), col[0].round().long()
        seen = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        inside = sil[i][row.clamp(0, h - 1), col.clamp(0, w - 1)]
        keep[alive[seen & ~inside]] = False
    return Occupancy(keep.reshape(resolution, resolution, resolution), half)


@torch.no_grad()
def clip_to_hull(origins, directions, occupancy: Occupancy, step: float | None = None, chunk: int = 8192):
    """Per-ray interval ``near, far`` ``(N,)`` outside which the ray meets no occupied voxel.

    The ray is probed every ``step`` (default: one voxel of ``occupancy``) from
    where it enters the occupied voxels' bounding box; the interval runs from one
    step before the first occupied probe to one step after the last, so that an
    occupied stretch shorter than a step between two probes is not cut off.
    Rays that meet no occupied probe get ``far = near``.
    """
    step = step or 2 * occupancy.half / (occupancy.resolution - 1)
    lo, hi = occupancy.bounds()
    box_near, box_far = ray_box(origins, directions, hi, lo)
    near, far = box_near.clone(), box_near.clone()
    for s in range(0, origins.shape[0], chunk):
        o, d, n0, f0 = origins[s:s + chunk], directions[s:s + chunk], box_near[s:s + chunk], box_far[s:s + chunk]
        n_steps = max(int(math.ceil((f0 - n0).max().item() / step)), 1)
        t = n0[:, None] + (torch.arange(n_steps, device=o.device) + 0.5) * step
        occ = occupancy.lookup(o[:, None] + t[..., None] * d[:, None]) & (t < f0[:, None])
        hit = occ.any(1)
        first = occ.float().argmax(1)
        last = n_steps - 1 - occ.flip(1).float().argmax(1)
        near[s:s + chunk] = torch.where(hit, torch.maximum(n0 + (first - 1) * step, n0), n0)
        far[s:s + chunk] = torch.where(hit, torch.minimum(n0 + (last + 2) * step, f0), n0)
    return near, far


# ----------------------------------------------------------------------------- model
@dataclass
class FastSettings:
    """Every knob of the fast recipe; :func:`default_settings` gives the CPU default.

    The switches let Chapter 5 turn each technique on one at a time:
    ``hull`` (empty-space skipping beyond the box), ``random_rays`` (rays drawn
    across all views instead of ``images_per_step`` whole-image batches of
    ``rays_per_step / images_per_step`` pixels), ``fused`` (one 4-channel lookup),
    ``density`` (``"softplus"``: step-aware, activation after interpolation;
    ``"sigmoid"``: the seed's opacity-per-sample, activation before interpolation),
    ``coarse_size``/``coarse_fraction`` (coarse-to-fine; 0 disables), ``tv_weight``,
    ``schedule`` (``"exp"`` decays smoothly to ``lr * lr_final_factor``; ``"step"`` is the
    seed's 10x drop at 75 %), ``early_stop`` (transmittance below which samples are dropped; 0 disables),
    ``sparse_adam`` (update only voxels a hull sample can touch). ``step_voxels`` is the
    sample spacing in voxels of the grid being fitted (so the coarse stage takes longer steps).
    """

    volume_size: int = 128
    n_iter: int = 300
    rays_per_step: int = 8192
    step_voxels: float = 1.0
    lr: float = 0.05
    lr_final_factor: float = 0.1
    schedule: str = "exp"
    hull: bool = True
    hull_resolution: int = 128
    random_rays: bool = True
    images_per_step: int = 10
    fused: bool = True
    density: str = "softplus"
    coarse_size: int = 64
    coarse_fraction: float = 0.5
    tv_weight: float = 1e-4
    tv_every: int = 1
    early_stop: float = 0.0
    sparse_adam: bool = True
    init_density: float = -4.0
    eval_every: int = 25
    seed: int = 0

    def __post_init__(self):
        if self.density not in ("softplus", "sigmoid"):
            raise ValueError(f"density must be 'softplus' or 'sigmoid', got {self.density!r}.")
        if self.schedule not in ("exp", "step", "constant"):
            raise ValueError(f"schedule must be 'exp', 'step' or 'constant', got {self.schedule!r}.")
        for name in ("volume_size", "n_iter", "rays_per_step", "images_per_step", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= self.coarse_fraction < 1:
            raise ValueError(f"coarse_fraction must be in [0, 1), got {self.coarse_fraction}.")


def default_settings(device=None) -> FastSettings:
    """The CPU default of the fast recipe (the GPU can afford more rays per step)."""
    device = torch.device(device or "cpu")
    return FastSettings() if device.type == "cpu" else FastSettings(rays_per_step=32768, n_iter=600)


class FastVolume(torch.nn.Module):
    """A voxel grid of raw density and colour, ``(1, 4, R, R, R)`` in one tensor.

    Channel 0 is the raw density, channels 1-3 the colour logits. With
    ``density="softplus"`` a sample's opacity over a step of ``delta`` world units is
    ``1 - exp(-softplus(raw) * delta / unit)``, where ``unit`` is the side of a voxel
    of the 128^3 grid, so the density means "optical depth per fine voxel".
    With ``density="sigmoid"`` it is ``sigmoid(raw)`` whatever the step (the seed's).
    """

    unit = 2 * HALF_EXTENT / 128

    def __init__(self, resolution: int = 128, density: str = "softplus", fused: bool = True,
                 init_density: float = -4.0, grid: torch.Tensor | None = None):
        super().__init__()
        if grid is None:
            grid = torch.zeros(1, 4, resolution, resolution, resolution)
            grid[:, 0] = init_density
        self.grid = torch.nn.Parameter(grid)
        self.density, self.fused = density, fused

    @property
    def resolution(self) -> int:
        return self.grid.shape[-1]

    @property
    def half(self) -> float:
        return grid_half(self.resolution)

    @property
    def voxel(self) -> float:
        """Side of one voxel of this grid, in world units."""
        return 2 * HALF_EXTENT / self.resolution

    def sample(self, points: torch.Tensor):
        """Density-to-be ``(M,)`` and colour ``(M, 3)`` at world ``points`` ``(M, 3)``.

        For ``"softplus"`` the first output is ``softplus(raw)`` (per unit length);
        for ``"sigmoid"`` it is the opacity of the sample itself.
        """
        loc = (points / self.half).view(1, -1, 1, 1, 3)
        if self.density == "sigmoid":  # the seed: activate the whole grid, then interpolate
            act = torch.cat([torch.sigmoid(self.grid[:, :1]), torch.sigmoid(self.grid[:, 1:])], 1)
        else:
            act = self.grid
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
    def upsample(self, resolution: int) -> "FastVolume":
        """A copy trilinearly resampled to ``resolution^3`` (raw values, so the same field)."""
        grid = F.interpolate(self.grid, size=(resolution,) * 3, mode="trilinear", align_corners=True)
        return FastVolume(density=self.density, fused=self.fused, grid=grid.contiguous())

    @torch.no_grad()
    def densities_colors(self):
        """Activated ``(1, R, R, R)`` densities (opacity per fine voxel) and ``(3, R, R, R)`` colours."""
        dens = self.grid[0, :1]
        dens = torch.sigmoid(dens) if self.density == "sigmoid" else 1 - torch.exp(-F.softplus(dens))
        return dens, torch.sigmoid(self.grid[0, 1:])


# ----------------------------------------------------------------------------- rendering
def render_rays(volume: FastVolume, origins, directions, near, far, step: float,
                occupancy: Occupancy | None = None, early_stop: float = 0.0):
    """Emission-absorption render of rays ``(N, 3)`` between ``near`` and ``far`` ``(N,)``.

    Samples are at ``near + (k + 1/2) step`` while below ``far``; only those inside
    ``occupancy`` (if given) are looked up, the rest count as empty. Compositing
    uses the exclusive cumulative sum of optical depths,
    ``T_k = exp(-sum_{j<k} tau_j)``, ``w_k = T_k (1 - exp(-tau_k))``.
    With ``early_stop > 0`` a first, gradient-free pass finds where the
    transmittance drops below it and later samples are skipped.
    Returns ``rgb`` ``(N, 3)`` and ``opacity`` ``(N,)``; background is black.
    """
    n = origins.shape[0]
    span = (far - near).clamp_min(0)
    n_steps = max(int(math.ceil(span.max().item() / step)) if n else 0, 1)
    t = near[:, None] + (torch.arange(n_steps, device=origins.device) + 0.5) * step  # (N, S)
    valid = t < far[:, None]
    points = origins[:, None] + t[..., None] * directions[:, None]
    if occupancy is not None:
        valid &= occupancy.lookup(points)
    if early_stop > 0:
        with torch.no_grad():
            dens, _ = volume.sample(points[valid])
            tau = torch.zeros(n, n_steps, device=origins.device).masked_scatter(valid, volume.optical_depth(dens, step))
            trans = torch.exp(-(torch.cumsum(tau, 1) - tau))
            valid &= trans > early_stop
    dens, rgb = volume.sample(points[valid])
    tau = torch.zeros(n, n_steps, device=origins.device, dtype=dens.dtype).masked_scatter(
        valid, volume.optical_depth(dens, step))
    cum = torch.cumsum(tau, 1)
    weights = torch.exp(-(cum - tau)) * -torch.expm1(-tau)  # T_k * alpha_k
    ray_index = valid.nonzero()[:, 0]
    color = torch.zeros(n, 3, device=origins.device, dtype=rgb.dtype).index_add(0, ray_index, weights[valid][:, None] * rgb)
    opacity = -torch.expm1(-cum[:, -1])
    return color, opacity


def render_plain(densities, colors, origins, directions, t, half: float):
    """The straightforward twin of :func:`render_rays`, for tests: every sample, two lookups.

    ``densities`` ``(1, 1, R, R, R)`` holds optical depth per sample (already
    multiplied by the step), ``colors`` ``(1, 3, R, R, R)`` activated colours;
    samples at ``origins + t * directions`` with ``t`` ``(N, S)``, composited with
    a product of ``(1 - alpha)`` instead of a cumulative sum.
    """
    points = origins[:, None] + t[..., None] * directions[:, None]
    loc = (points / half).view(1, -1, 1, 1, 3)
    tau = F.grid_sample(densities, loc, align_corners=True, padding_mode="border").view(*t.shape)
    rgb = F.grid_sample(colors, loc, align_corners=True, padding_mode="border").view(3, *t.shape).permute(1, 2, 0)
    alpha = 1 - torch.exp(-tau)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    weights = alpha * trans
    return (weights[..., None] * rgb).sum(1), 1 - torch.prod(1 - alpha, 1)


class FastRenderer:
    """Renders whole images of a :class:`FastVolume` for any cameras, e.g. for ``fitting.evaluate``.

    Samples are ``step_voxels`` voxels of the current grid apart. The per-ray
    intervals clipped to the hull depend only on the cameras and the hull, so they
    are cached per camera batch: evaluating the same held-out views again costs
    only the compositing.
    """

    def __init__(self, volume: FastVolume, occupancy: Occupancy | None, image_size: int = 128,
                 step_voxels: float = 1.0, chunk: int = 32768):
        self.volume, self.occupancy, self.image_size, self.chunk = volume, occupancy, image_size, chunk
        self.step_voxels = step_voxels
        self._cache = {}

    def _rays(self, cameras):
        key = (cameras.R.cpu().numpy().tobytes(), cameras.T.cpu().numpy().tobytes(), self.volume.resolution)
        if key not in self._cache:
            origins, directions = camera_rays(cameras, self.image_size)
            origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
            if self.occupancy is None:
                near, far = ray_box(origins, directions, self.volume.half)
            else:
                near, far = torch.zeros_like(origins[:, 0]), torch.zeros_like(origins[:, 0])
                cand = footprint(self.occupancy, cameras, self.image_size).reshape(-1).nonzero()[:, 0]
                near[cand], far[cand] = clip_to_hull(origins[cand], directions[cand], self.occupancy)
            hit = (far > near).nonzero()[:, 0]
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = (origins.shape[0], hit, origins[hit], directions[hit], near[hit], far[hit])
        return self._cache[key]

    @torch.no_grad()
    def __call__(self, cameras) -> torch.Tensor:
        """``(B, H, W, 4)``: RGB then opacity."""
        n, hit, origins, directions, near, far = self._rays(cameras)
        out = torch.zeros(n, 4, device=origins.device)
        step = self.step_voxels * self.volume.voxel
        for s in range(0, hit.shape[0], self.chunk):
            sl = slice(s, s + self.chunk)
            rgb, opacity = render_rays(self.volume, origins[sl], directions[sl], near[sl], far[sl], step, self.occupancy)
            out[hit[sl]] = torch.cat([rgb, opacity[:, None]], 1)
        return out.reshape(len(cameras), self.image_size, self.image_size, 4)


# ----------------------------------------------------------------------------- fitting
def total_variation(grid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring voxels of ``(1, C, D, H, W)``, summed over axes {cite}`rudin1992nonlinear`."""
    return sum(grid.diff(dim=d).pow(2).mean() for d in (2, 3, 4))


def active_voxels(occupancy: Occupancy, resolution: int) -> torch.Tensor:
    """Flat indices ``(K,)`` of the voxels of an ``R^3`` grid that a sample inside the hull can touch.

    Trilinear interpolation reads the 8 voxel centres around a sample, so the hull
    (resampled to ``R``) is grown by one voxel.
    """
    occ = occupancy.grid[None, None].float()
    occ = F.interpolate(occ, size=(resolution,) * 3, mode="trilinear", align_corners=True) > 0
    occ = F.max_pool3d(occ.float(), 3, stride=1, padding=1) > 0
    return occ.reshape(-1).nonzero()[:, 0]


class MaskedAdam:
    """Adam {cite}`kingma2015adam` on the voxels listed in ``active`` only, of a ``(1, C, D, H, W)`` parameter.

    Voxels that no sample can reach get no gradient from the renderer, so their
    Adam state would only be decayed zeros: skipping them turns an update of all
    ``C R^3`` values into one of ``C K``.
    """

    def __init__(self, param: torch.nn.Parameter, active: torch.Tensor, lr: float,
                 betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.active, self.betas, self.eps = param, active, betas, eps
        self.param_groups = [{"lr": lr}]
        channels = param.shape[1]
        self.m = torch.zeros(channels, active.shape[0], device=param.device)
        self.v = torch.zeros_like(self.m)
        self.t = 0

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
    """All training rays that meet the hull, precomputed once: ``(N, 3)``/``(N,)`` tensors plus ``view`` ``(N,)``."""

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
    """Rays of every pixel of ``views``, clipped to ``occupancy``; rays that miss it are dropped.

    A dropped ray renders black with zero opacity whatever the grid holds, and its
    target is black background too (the hull projects inside every silhouette),
    so it carries no gradient: drawing it would be wasted work.
    """
    image_size = views.images.shape[1]
    cameras = views.cameras()
    origins, directions = camera_rays(cameras, image_size)
    n_views = origins.shape[0]
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    if occupancy.grid.all():  # no hull: the box is all there is
        near, far = ray_box(origins, directions, occupancy.half)
    else:
        near, far = torch.zeros_like(origins[:, 0]), torch.zeros_like(origins[:, 0])
        cand = footprint(occupancy, cameras, image_size).reshape(-1).nonzero()[:, 0]  # skip rays that cannot hit
        near[cand], far[cand] = clip_to_hull(origins[cand], directions[cand], occupancy)
    keep = far > near
    view = torch.arange(n_views, device=origins.device).repeat_interleave(image_size * image_size)
    return TrainRays(origins[keep], directions[keep], near[keep], far[keep], views.images.reshape(-1, 3)[keep],
                     views.silhouettes.reshape(-1)[keep], view[keep], origins.shape[0])


def _draw(rays: TrainRays, settings: FastSettings, n_views: int, gen: torch.Generator) -> torch.Tensor:
    if settings.random_rays:
        return torch.randint(rays.origins.shape[0], (settings.rays_per_step,), generator=gen, device=rays.origins.device)
    # whole-image batches, as Chapters 4 does: pick images, then pixels (of the hull) in them
    picked = torch.randperm(n_views, generator=gen)[: settings.images_per_step]
    per_image = settings.rays_per_step // settings.images_per_step
    out = []
    for v in picked.tolist():
        idx = (rays.view == v).nonzero()[:, 0]
        out.append(idx[torch.randint(idx.shape[0], (per_image,), generator=gen)])
    return torch.cat(out)


def _lr_at(settings: FastSettings, it: int) -> float:
    if settings.schedule == "exp":
        return settings.lr * settings.lr_final_factor ** (it / max(settings.n_iter - 1, 1))
    if settings.schedule == "step":
        return settings.lr * (0.1 if it >= round(0.75 * settings.n_iter) else 1.0)
    return settings.lr


def fit(train, heldout=None, settings: FastSettings | None = None, device=None, progress: bool = False,
        callback=None, occupancy: Occupancy | None = None):
    """Fit a :class:`FastVolume` to ``train`` (a ``data.CowViews``); returns ``(renderer, FitHistory)``.

    The returned :class:`FastRenderer` holds the volume (``.volume``) and hull
    (``.occupancy``) and renders ``(B, H, W, 4)`` for any cameras. ``heldout`` views
    are rendered and scored every ``settings.eval_every`` iterations and at the end
    (outside the fitting time). ``callback(iteration, renderer)`` runs after each
    evaluation. Pass ``occupancy`` to reuse a hull already carved (its carving is
    then not counted in the fitting time).
    """
    settings = settings or default_settings(device)
    device = torch.device(device or train.images.device)
    train = train.to(device)
    heldout = heldout.to(device) if heldout is not None else None
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    history = fitting.FitHistory()

    start = time.perf_counter()
    if occupancy is None:
        occupancy = carve_hull(train, settings.hull_resolution) if settings.hull else Occupancy.full(settings.hull_resolution, device)
    rays = prepare_rays(train, occupancy)
    use_occ = occupancy if settings.hull else None
    coarse_iters = int(settings.coarse_fraction * settings.n_iter) if settings.coarse_size else 0

    def make_optimizer(volume):
        if settings.sparse_adam:
            return MaskedAdam(volume.grid, active_voxels(occupancy, volume.resolution), settings.lr)
        return torch.optim.Adam(volume.parameters(), lr=settings.lr)

    volume = FastVolume(settings.coarse_size if coarse_iters else settings.volume_size,
                        settings.density, settings.fused, settings.init_density).to(device)
    optimizer = make_optimizer(volume)
    renderer = FastRenderer(volume, use_occ, train.images.shape[1], settings.step_voxels)
    lo, hi = occupancy.bounds()
    fit_seconds = time.perf_counter() - start  # carving the hull and clipping the rays count as fitting

    def log_eval(it):
        if heldout is None:
            return
        result = fitting.evaluate(renderer, heldout)
        history.eval_iterations.append(it)
        history.eval_seconds.append(fit_seconds)
        history.psnr.append(result["psnr"])
        history.iou.append(result["iou"])
        if progress:
            print(f"iter {it:4d}  {fit_seconds:6.1f} s  held-out PSNR {result['psnr']:.2f} dB  IoU {result['iou']:.3f}")
        if callback is not None:
            callback(it, renderer)

    for it in range(settings.n_iter):
        t0 = time.perf_counter()
        if it == coarse_iters and coarse_iters:
            volume = volume.upsample(settings.volume_size)
            optimizer = make_optimizer(volume)
            renderer.volume = volume
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(settings, it)
        idx = _draw(rays, settings, len(train), gen)
        rgb, opacity = render_rays(volume, rays.origins[idx], rays.directions[idx], rays.near[idx], rays.far[idx],
                                   settings.step_voxels * volume.voxel, use_occ, settings.early_stop)
        loss = fitting.huber(rgb, rays.rgb[idx]).mean() + fitting.huber(opacity, rays.silhouette[idx]).mean()
        if settings.tv_weight and it % settings.tv_every == 0:
            # only the density, only inside the hull's bounding box: the rest is never rendered
            r = volume.resolution
            a = ((lo / volume.half + 1) * 0.5 * (r - 1)).floor().long().clamp(0, r - 1).tolist()
            b = ((hi / volume.half + 1) * 0.5 * (r - 1)).ceil().long().clamp(0, r - 1).tolist()
            crop = volume.grid[:, :1, a[2]:b[2] + 1, a[1]:b[1] + 1, a[0]:b[0] + 1]
            loss = loss + settings.tv_weight * total_variation(crop)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fit_seconds += time.perf_counter() - t0
        history.iterations.append(it)
        history.losses.append(loss.item())
        history.seconds.append(fit_seconds)
        if (it + 1) % settings.eval_every == 0 or it == settings.n_iter - 1:
            log_eval(it + 1)
    return renderer, history
