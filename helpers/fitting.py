"""Chapter 4: fitting a voxel grid to the multi-view images.

What every fitting chapter shares: the robust loss, the metrics measured on
held-out views, and the history a training loop returns; then Chapter 4's
model (``VolumeModel``), renderer, settings, training loop (``fit``),
turntable cameras and saving/loading of a fitted volume. Chapter 5's fast
recipe returns the same ``FitHistory`` so the two can be compared on one plot,
and can start from the volume Chapter 4 saves at ``chapter4_volume_path()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The seed's pseudo-Huber loss, elementwise: ``scaling * (sqrt(1 + (x-y)^2 / scaling^2) - 1)``.

    Quadratic, ``(x-y)^2 / (2 scaling)``, for residuals much smaller than
    ``scaling`` and linear, ``|x-y|``, for larger ones, so a few badly wrong
    pixels cannot dominate the gradient. The clamp keeps the square root's
    argument away from zero (it is at least 1 anyway; kept from the seed).
    """
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / scaling**2).clamp(1e-4).sqrt() - 1) * float(scaling)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image, ``(N, H, W, C)`` in [0, 1] -> ``(N,)``.

    ``-10 log10(MSE)`` over all pixels and channels of an image, background included.
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}.")
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of ``pred > threshold`` and ``target > 0.5``, pooled over all pixels.

    Shapes ``(N, H, W)``; ``pred`` is a rendered opacity in [0, 1], ``target`` a binary silhouette.
    """
    if pred.shape != target.shape:
        raise ValueError(f"silhouette_iou needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}.")
    p, t = pred > threshold, target > 0.5
    union = (p | t).sum().item()
    return (p & t).sum().item() / union if union else 1.0


@torch.no_grad()
def evaluate(render, views, batch_size: int = 10) -> dict:
    """Render every view of ``views`` (a ``data.CowViews``) and score it.

    ``render(cameras)`` must return ``(B, H, W, 4)``: RGB then opacity.
    Returns ``{"psnr": mean per-view PSNR in dB, "iou": pooled silhouette IoU,
    "images": (N, H, W, 3), "silhouettes": (N, H, W)}``.
    """
    cameras = views.cameras()
    outs = [render(cameras[list(range(i, min(i + batch_size, len(views))))]) for i in range(0, len(views), batch_size)]
    out = torch.cat(outs)
    if not torch.isfinite(out).all():
        raise FloatingPointError("The render contains NaN or infinite values; the fitted volume is broken.")
    images, silhouettes = out[..., :3].clamp(0, 1), out[..., 3]
    return {
        "psnr": psnr(images, views.images).mean().item(),
        "iou": silhouette_iou(silhouettes, views.silhouettes),
        "images": images,
        "silhouettes": silhouettes,
    }


@dataclass
class FitHistory:
    """What a training loop records, for plots and for comparing recipes.

    ``seconds`` is cumulative wall time spent fitting (evaluation excluded),
    measured after each logged iteration.
    """

    iterations: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    eval_iterations: list = field(default_factory=list)
    eval_seconds: list = field(default_factory=list)
    psnr: list = field(default_factory=list)
    iou: list = field(default_factory=list)

    def time_to_reach(self, target_psnr: float) -> float:
        """Fitting seconds at the first evaluation reaching ``target_psnr`` (``inf`` if never)."""
        for seconds, value in zip(self.eval_seconds, self.psnr):
            if value >= target_psnr:
                return seconds
        return math.inf


# ---------------------------------------------------------------------------
# The model, the renderers and the loop (Chapter 4)
# ---------------------------------------------------------------------------

#: Side of the cube of world space the voxel grid covers, as in the seed: the
#: cow fits in [-1, 1]^3, and 3 leaves half a unit of empty margin around it.
VOLUME_EXTENT_WORLD = 3.0


class VolumeModel(torch.nn.Module):
    """A voxel grid of densities and RGB colours, rendered by a PyTorch3D ``VolumeRenderer``.

    The parameters are the *logits* of densities ``(1, D, H, W)`` and colours
    ``(3, D, H, W)``; a sigmoid maps them to [0, 1], so no optimiser step can
    leave the valid range. Densities start at ``sigmoid(-4) ~ 0.018`` (almost
    empty space that still passes gradients) and colours at ``sigmoid(0) = 0.5``.
    The grid is centred on the world origin with ``voxel_size`` world units
    per voxel (``Volumes``' default translation and ``align_corners=True``).

    ``forward(cameras)`` expands the single grid to the batch of ``B`` cameras
    (``expand`` makes views, not copies) and returns the renderer's first
    output: ``(B, H, W, 4)`` for a grid raysampler, ``(B, n_rays, 1, 4)`` when
    the raysampler draws ``n_rays`` random rays per image; the last axis is
    RGB then opacity. The rays' NDC coordinates of the last call are kept in
    ``last_xys`` (``(B, H, W, 2)`` or ``(B, n_rays, 1, 2)``; NDC +X left, +Y up)
    so that targets can be sampled at the same places.
    """

    def __init__(self, renderer, volume_size=(128, 128, 128), voxel_size: float = VOLUME_EXTENT_WORLD / 128):
        super().__init__()
        volume_size = tuple(int(s) for s in volume_size)
        if len(volume_size) != 3 or min(volume_size) < 1:
            raise ValueError(f"volume_size must be three positive integers (D, H, W), got {volume_size}.")
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}.")
        self.log_densities = torch.nn.Parameter(torch.full((1, *volume_size), -4.0))
        self.log_colors = torch.nn.Parameter(torch.zeros(3, *volume_size))
        self.voxel_size = float(voxel_size)
        self.renderer = renderer
        self.last_xys = None

    @property
    def densities(self) -> torch.Tensor:
        """Densities in [0, 1], ``(1, D, H, W)``."""
        return torch.sigmoid(self.log_densities)

    @property
    def colors(self) -> torch.Tensor:
        """RGB colours in [0, 1], ``(3, D, H, W)``."""
        return torch.sigmoid(self.log_colors)

    def volumes(self, batch_size: int = 1):
        """The grid as a PyTorch3D ``Volumes`` batch of ``batch_size`` (expanded views of one grid)."""
        from pytorch3d.structures import Volumes

        return Volumes(
            densities=self.densities[None].expand(batch_size, *self.log_densities.shape),
            features=self.colors[None].expand(batch_size, *self.log_colors.shape),
            voxel_size=self.voxel_size,
        )

    def forward(self, cameras, renderer=None) -> torch.Tensor:
        """Render ``cameras`` with ``renderer`` (default: the model's own); see the class docstring."""
        renderer = renderer if renderer is not None else self.renderer
        images, ray_bundle = renderer(cameras=cameras, volumes=self.volumes(len(cameras)))
        self.last_xys = ray_bundle.xys
        return images


def make_renderer(image_size, n_pts_per_ray: int = 150, min_depth: float = 0.1,
                  max_depth: float = VOLUME_EXTENT_WORLD, n_rays_per_image: int | None = None):
    """The seed's ``VolumeRenderer``: an ``NDCMultinomialRaysampler`` and an ``EmissionAbsorptionRaymarcher``.

    ``image_size`` is an int or ``(H, W)``. With ``n_rays_per_image=None`` the
    raysampler shoots one ray through every pixel centre (the seed's
    ``NDCGridRaysampler``, the deprecated name of the same class); with an int
    it draws that many distinct pixels per image at random (multinomial
    sampling without replacement) on every call. ``min_depth``/``max_depth``
    bound the view-space depth (z) of the ``n_pts_per_ray`` evenly spaced points.
    """
    from pytorch3d.renderer import EmissionAbsorptionRaymarcher, NDCMultinomialRaysampler, VolumeRenderer

    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    raysampler = NDCMultinomialRaysampler(
        image_width=w, image_height=h, n_pts_per_ray=n_pts_per_ray,
        min_depth=min_depth, max_depth=max_depth, n_rays_per_image=n_rays_per_image,
    )
    return VolumeRenderer(raysampler=raysampler, raymarcher=EmissionAbsorptionRaymarcher())


def sample_at_xys(images: torch.Tensor, xys: torch.Tensor) -> torch.Tensor:
    """Read ``images`` ``(B, H, W, C)`` at NDC points ``xys`` ``(B, ..., 2)`` -> ``(B, ..., C)``.

    PyTorch3D's NDC has +X pointing left and +Y up, with the shorter image side
    spanning [-1, 1]; ``grid_sample``'s x points right and y down, each side
    spanning [-1, 1] edge to edge (``align_corners=False``). So both
    coordinates are negated (and divided by the aspect range on the longer
    side). At the pixel centres an ``NDCMultinomialRaysampler`` uses, the
    bilinear interpolation returns the pixels exactly. (PyTorch3D's NeRF
    tutorial passes ``align_corners=True``, which is half a pixel off for
    these centres.)
    """
    b, h, w, c = images.shape
    if xys.shape[0] != b or xys.shape[-1] != 2:
        raise ValueError(f"xys must be (B={b}, ..., 2), got {tuple(xys.shape)}.")
    short = min(h, w)
    scale = xys.new_tensor([w / short, h / short])
    grid = -(xys / scale).reshape(b, -1, 1, 2)
    out = torch.nn.functional.grid_sample(images.permute(0, 3, 1, 2), grid, align_corners=False)
    return out[..., 0].permute(0, 2, 1).reshape(*xys.shape[:-1], c)


@dataclass
class FitSettings:
    """Everything that defines a fit. ``n_rays_per_image=None`` renders whole images (the seed).

    ``lr`` drops tenfold after ``round(lr_drop_at * n_iter)`` iterations;
    ``eval_every`` iterations (and at the start and the end) the held-out
    views are rendered and scored; ``eval_every=0`` evaluates only at the end.
    """

    volume_size: int = 128
    n_pts_per_ray: int = 150
    batch_size: int = 10
    n_iter: int = 300
    lr: float = 0.1
    lr_drop_at: float = 0.75
    n_rays_per_image: int | None = None
    seed: int = 0
    eval_every: int = 50
    min_depth: float = 0.1
    max_depth: float = VOLUME_EXTENT_WORLD
    volume_extent: float = VOLUME_EXTENT_WORLD

    @property
    def voxel_size(self) -> float:
        return self.volume_extent / self.volume_size

    def check(self, n_views: int | None = None, n_pixels: int | None = None) -> None:
        """Raise ``ValueError`` for settings that cannot work, before any training starts."""
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"FitSettings.{name} must be an integer >= {minimum}, got {value!r}.")

        positive_int("volume_size", 8)
        positive_int("n_pts_per_ray", 2)
        positive_int("batch_size")
        positive_int("n_iter")
        positive_int("eval_every", 0)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"FitSettings.lr must be a positive finite number, got {self.lr!r}.")
        if not 0 <= self.lr_drop_at <= 1:
            raise ValueError(f"FitSettings.lr_drop_at is a fraction of n_iter in [0, 1], got {self.lr_drop_at!r}.")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"Need 0 <= min_depth < max_depth, got {self.min_depth} and {self.max_depth}.")
        if self.n_rays_per_image is not None:
            positive_int("n_rays_per_image")
            if n_pixels is not None and self.n_rays_per_image > n_pixels:
                raise ValueError(f"n_rays_per_image={self.n_rays_per_image} exceeds the {n_pixels} pixels of an "
                                 "image; use None to render whole images.")
        if n_views is not None and self.batch_size > n_views:
            raise ValueError(f"batch_size={self.batch_size} is larger than the {n_views} training views; "
                             f"use at most {n_views}.")


#: The CPU default (Chapter 4 explains the choice): the seed's grid, renderer,
#: loss and optimiser, but each step renders 1,024 random rays from each of
#: its 10 images instead of all 16,384, and there are fewer steps.
# On a CPU: 1,024 random rays per image, and the 96 points of each ray spread over the depths
# where the volume can be seen from 2.7 away (2.7 -/+ 1.5) instead of the seed's 0.1 to 3.0,
# which wastes its first 25 points and stops short of the cow's far side (Chapter 2).
CPU_SETTINGS = dict(n_rays_per_image=1024, n_iter=120, eval_every=30, n_pts_per_ray=96, min_depth=1.2, max_depth=4.2)


def default_settings(device=None) -> FitSettings:
    """The seed's exact recipe on a GPU; on a CPU the faster random-ray variant (``CPU_SETTINGS``)."""
    device = torch.device(device) if device is not None else _pick_device()
    if device.type == "cuda":
        return FitSettings()
    return FitSettings(**CPU_SETTINGS)


def _pick_device():
    from .data import pick_device

    return pick_device()


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fitting", unit="it")


def fit(train, heldout=None, settings: FitSettings | None = None, device=None, progress: bool = True,
        callback=None):
    """Fit a ``VolumeModel`` to the views ``train`` (a ``data.CowViews``); return ``(model, history)``.

    Each iteration renders a random minibatch of ``settings.batch_size``
    training cameras (whole images, or ``n_rays_per_image`` random rays of each),
    scores it with the Huber loss on colours plus the Huber loss on
    silhouettes (opacity), and takes an Adam step. The learning rate drops
    tenfold at ``lr_drop_at``. With ``heldout`` views, full images are rendered
    and scored (:func:`evaluate`) before training, every ``eval_every``
    iterations and at the end; ``callback(iteration, model, evaluation)`` is
    then called with ``evaluation`` the dict :func:`evaluate` returns.

    The returned model renders whole images (its renderer is a grid
    raysampler with the training depth range and points per ray), whatever
    the training sampled. ``history.seconds`` excludes evaluation time.
    Raises ``ValueError`` for impossible settings and ``FloatingPointError``
    if the loss stops being finite.
    """
    import time

    device = torch.device(device) if device is not None else _pick_device()
    settings = settings if settings is not None else default_settings(device)
    n_views, height, width = train.images.shape[:3]
    settings.check(n_views=n_views, n_pixels=height * width)
    if train.silhouettes.shape != train.images.shape[:3]:
        raise ValueError(f"Silhouettes {tuple(train.silhouettes.shape)} do not match images {tuple(train.images.shape)}.")

    torch.manual_seed(settings.seed)
    train = train.to(device)
    heldout = heldout.to(device) if heldout is not None else None
    depth = dict(n_pts_per_ray=settings.n_pts_per_ray, min_depth=settings.min_depth, max_depth=settings.max_depth)
    train_renderer = make_renderer((height, width), n_rays_per_image=settings.n_rays_per_image, **depth)
    full_renderer = make_renderer((height, width), **depth) if heldout is None else \
        make_renderer(tuple(heldout.images.shape[1:3]), **depth)
    model = VolumeModel(train_renderer, (settings.volume_size,) * 3, settings.voxel_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    cameras = train.cameras()
    targets = torch.cat([train.images, train.silhouettes[..., None]], dim=-1)  # (N, H, W, 4)
    drop_at = round(settings.n_iter * settings.lr_drop_at)
    history = FitHistory()

    def run_eval(iteration, seconds):
        if heldout is None:
            return
        ev = evaluate(lambda cams: model(cams, renderer=full_renderer), heldout)
        history.eval_iterations.append(iteration)
        history.eval_seconds.append(seconds)
        history.psnr.append(ev["psnr"])
        history.iou.append(ev["iou"])
        if callback is not None:
            callback(iteration, model, ev)

    run_eval(0, 0.0)
    bar = _progress_bar(settings.n_iter, progress)
    elapsed = 0.0
    for iteration in range(settings.n_iter):
        start = time.perf_counter()
        if iteration == drop_at:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.1
        optimizer.zero_grad()
        batch_idx = torch.randperm(n_views, device=device)[: settings.batch_size]
        rendered = model(cameras[batch_idx])  # (B, H, W, 4) or (B, n_rays, 1, 4)
        target = targets[batch_idx]
        if settings.n_rays_per_image is not None:
            target = sample_at_xys(target, model.last_xys)
        color_err = huber(rendered[..., :3], target[..., :3]).abs().mean()
        sil_err = huber(rendered[..., 3], target[..., 3]).abs().mean()
        loss = color_err + sil_err
        if not torch.isfinite(loss):
            if bar is not None:
                bar.close()
            raise FloatingPointError(
                f"The loss became {loss.item()} at iteration {iteration} (colour {color_err.item()}, silhouette "
                f"{sil_err.item()}). Likely cause: non-finite target images or a learning rate too high "
                f"(lr={settings.lr}) that pushed the logits to overflow; check the data and lower lr."
            )
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        history.iterations.append(iteration + 1)
        history.losses.append(loss.item())
        history.seconds.append(elapsed)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        done = iteration + 1
        if done == settings.n_iter or (settings.eval_every and done % settings.eval_every == 0):
            run_eval(done, elapsed)
    if bar is not None:
        bar.close()
    model.renderer = full_renderer
    return model, history


def rotating_cameras(n_frames: int, dist: float = 2.7, elevation: float = 0.0, device="cpu"):
    """``n_frames`` ``FoVPerspectiveCameras`` on a full turn around the world's +Y axis.

    The seed's construction: rotations ``so3_exp_map`` of axis-angle vectors
    ``(0, theta, 0)`` and the translation ``(0, 0, dist)``, so every camera looks
    at the origin from ``dist``. Angles are ``2 pi k / n_frames`` (the seed went
    to 2 x 3.14 and included the end point, so its loop repeated, almost, its
    first frame). ``elevation`` (degrees, positive = looking down from above)
    tilts every camera about its own X axis first. Frame ``k`` equals
    ``look_at_view_transform(dist, elevation, azim=180 + 360 k / n_frames)``:
    the turn starts in front of the cow's face. Same intrinsics as the
    training views (PyTorch3D's defaults).
    """
    from pytorch3d.renderer import FoVPerspectiveCameras
    from pytorch3d.transforms import so3_exp_map

    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}.")
    log_rotations = torch.zeros(n_frames, 3, device=device)
    log_rotations[:, 1] = torch.arange(n_frames, device=device) * (2 * math.pi / n_frames)
    R = so3_exp_map(log_rotations)
    if elevation:
        tilt = torch.zeros(1, 3, device=device)
        tilt[0, 0] = math.radians(elevation)
        R = R @ so3_exp_map(tilt)
    T = torch.zeros(n_frames, 3, device=device)
    T[:, 2] = dist
    return FoVPerspectiveCameras(R=R, T=T, device=device)


def save_volume(path, model_or_tensors, settings: FitSettings | None = None, history: FitHistory | None = None,
                **info) -> None:
    """Save a fitted grid to ``path`` (written atomically).

    ``model_or_tensors`` is a ``VolumeModel`` or a dict with ``log_densities``
    ``(1, D, H, W)``, ``log_colors`` ``(3, D, H, W)`` and ``voxel_size``.
    ``settings``, ``history`` and any keyword ``info`` (numbers, strings) are
    stored alongside for whoever loads it.
    """
    import dataclasses
    import os
    from pathlib import Path

    if isinstance(model_or_tensors, VolumeModel):
        tensors = {"log_densities": model_or_tensors.log_densities, "log_colors": model_or_tensors.log_colors,
                   "voxel_size": model_or_tensors.voxel_size}
    else:
        missing = {"log_densities", "log_colors", "voxel_size"} - set(model_or_tensors)
        if missing:
            raise ValueError(f"save_volume needs a VolumeModel or a dict with {sorted(missing)}.")
        tensors = model_or_tensors
    payload = {
        "log_densities": tensors["log_densities"].detach().cpu().clone(),
        "log_colors": tensors["log_colors"].detach().cpu().clone(),
        "voxel_size": float(tensors["voxel_size"]),
        "settings": dataclasses.asdict(settings) if settings is not None else None,
        "history": dataclasses.asdict(history) if history is not None else None,
        "info": info,
    }
    if payload["log_densities"].shape[1:] != payload["log_colors"].shape[1:]:
        raise ValueError("log_densities and log_colors must cover the same grid.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_volume(path, renderer=None, device="cpu") -> VolumeModel:
    """Load a grid saved by :func:`save_volume` as a ``VolumeModel`` on ``device``.

    Without ``renderer`` the model gets a whole-image renderer for 128 x 128
    images using the stored settings' depth range and points per ray. The
    stored ``settings`` (a ``FitSettings``), ``history`` (a ``FitHistory``) and
    ``info`` are attached to the model as attributes (``None`` if absent).
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No fitted volume at {path}. Run Chapter 4 (or helpers.fitting.fit and "
                                "save_volume) to create it.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    settings = FitSettings(**payload["settings"]) if payload.get("settings") else None
    if renderer is None:
        s = settings or FitSettings()
        renderer = make_renderer(128, n_pts_per_ray=s.n_pts_per_ray, min_depth=s.min_depth, max_depth=s.max_depth)
    model = VolumeModel(renderer, tuple(payload["log_densities"].shape[1:]), payload["voxel_size"])
    with torch.no_grad():
        model.log_densities.copy_(payload["log_densities"])
        model.log_colors.copy_(payload["log_colors"])
    model.settings = settings
    model.history = FitHistory(**payload["history"]) if payload.get("history") else None
    model.info = payload.get("info") or {}
    return model.to(device)


def chapter4_volume_path():
    """Where Chapter 4 saves its fitted volume and Chapter 5 (or you) can load it from."""
    from .data import cache_dir

    return cache_dir() / "fits" / "chapter4_volume.pt"
