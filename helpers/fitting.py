"""Chapter 4: fitting a voxel grid to the multi-view images, and keeping the fit (of Chapter 5's too)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from . import checks
from .data import _load_payload, _save_atomic
from .data import _tensors_sha256 as _digest  # one checksum for datasets and fits
from .metrics import FitHistory, _check_divergence, _huber, clock, evaluate
from .rays import VOLUME_EXTENT, _check_depths


class VolumeModel(torch.nn.Module):
    """A grid of density ``(1, D, H, W)`` and colour ``(3, D, H, W)`` *logits*. Defined in §4.1."""

    def __init__(self, renderer, volume_size=128, voxel_size: float | None = None):
        """``voxel_size`` defaults to the book's cube: ``VOLUME_EXTENT`` across the longest side."""
        super().__init__()
        size = (volume_size,) * 3 if not isinstance(volume_size, (tuple, list)) else tuple(volume_size)
        checks.require(len(size) == 3, f"volume_size must be an int or three ints (D, H, W), got {volume_size!r}.")
        size = tuple(checks.integer("volume_size", n, minimum=2) for n in size)
        voxel_size = VOLUME_EXTENT / max(size) if voxel_size is None else voxel_size
        self.voxel_size = checks.number("voxel_size", voxel_size, 0.0, low_open=True)
        self.log_densities = torch.nn.Parameter(torch.full((1, *size), -4.0))  # 0.018: almost empty, has gradients
        self.log_colors = torch.nn.Parameter(torch.zeros(3, *size))
        self.renderer = renderer

    @property
    def densities(self) -> torch.Tensor:
        """``(1, D, H, W)``: the opacity of one sample."""
        return torch.sigmoid(self.log_densities)

    @property
    def colors(self) -> torch.Tensor:
        """RGB colours in [0, 1], ``(3, D, H, W)``."""
        return torch.sigmoid(self.log_colors)

    def volumes(self, batch_size: int = 1):
        """The grid as a ``Volumes`` batch of ``batch_size`` (expanded views of one grid)."""
        from pytorch3d.structures import Volumes

        densities = self.densities[None].expand(batch_size, *self.log_densities.shape)
        features = self.colors[None].expand(batch_size, *self.log_colors.shape)
        return Volumes(densities=densities, features=features, voxel_size=self.voxel_size)

    def forward(self, cameras) -> torch.Tensor:
        return self.renderer(cameras=cameras, volumes=self.volumes(len(cameras)))[0]

    def config(self) -> dict:
        """What :func:`load_volume` needs to rebuild the model (besides its tensors)."""
        rs = self.renderer.renderer.raysampler  # a VolumeRenderer from make_renderer
        render = dict(image_size=tuple(rs._xy_grid.shape[:2]), n_pts_per_ray=rs._n_pts_per_ray)
        render.update(min_depth=rs._min_depth, max_depth=rs._max_depth)
        return {"volume_size": tuple(self.log_densities.shape[1:]), "voxel_size": self.voxel_size, "render": render}

    @classmethod
    def from_config(cls, config: dict) -> VolumeModel:
        return cls(make_renderer(**config["render"]), config["volume_size"], config["voxel_size"])


def make_renderer(
    image_size,
    n_pts_per_ray: int = 150,
    min_depth: float = 0.1,
    max_depth: float = VOLUME_EXTENT,
    n_rays_per_image: int | None = None,
):
    """The tutorial's ``VolumeRenderer``; ``n_rays_per_image=None``: all pixels, or that many. Defined in §4.2."""
    from pytorch3d.renderer import EmissionAbsorptionRaymarcher, NDCMultinomialRaysampler, VolumeRenderer

    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
    checks.require(len(size) == 2, f"image_size must be an integer or (H, W), got {image_size!r}; pass e.g. 128.")
    h, w = (checks.integer("image_size", n) for n in size)
    n_pts_per_ray, min_depth, max_depth = _check_depths(n_pts_per_ray, min_depth, max_depth)
    n_rays = None if n_rays_per_image is None else checks.integer("n_rays_per_image", n_rays_per_image)
    checks.require((n_rays or 0) <= h * w, f"n_rays_per_image={n_rays} exceeds the {h * w} pixels; use fewer, or None.")
    depth = dict(n_pts_per_ray=n_pts_per_ray, min_depth=min_depth, max_depth=max_depth)
    raysampler = NDCMultinomialRaysampler(image_width=w, image_height=h, n_rays_per_image=n_rays, **depth)
    return VolumeRenderer(raysampler=raysampler, raymarcher=EmissionAbsorptionRaymarcher())


def sample_at_xys(images: torch.Tensor, xys: torch.Tensor) -> torch.Tensor:
    """Read ``images`` ``(B, H, W, C)`` at NDC points ``xys`` ``(B, ..., 2)`` -> ``(B, ..., C)``. Defined in §4.4."""
    checks.shape("images", images, "(B, H, W, C)", lambda t: t.dim() == 4)
    b, h, w, c = images.shape
    checks.shape("xys", xys, f"(B={b}, ..., 2)", xys.shape[0] == b and xys.shape[-1] == 2)
    short = min(h, w)
    scale = xys.new_tensor([w / short, h / short])
    grid = -(xys / scale).reshape(b, -1, 1, 2)  # grid_sample's x points right, y down, [-1, 1] edge to edge
    # align_corners=False reads pixel centres exactly (PyTorch3D's NeRF tutorial's True is half a pixel off)
    out = torch.nn.functional.grid_sample(images.permute(0, 3, 1, 2), grid, align_corners=False)
    return out[..., 0].permute(0, 2, 1).reshape(*xys.shape[:-1], c)


@dataclass
class Settings:
    """What every fit has; ``for_device(device)`` applies the class attribute ``CPU`` or ``GPU``. Defined in §4.5."""

    volume_size: int = 128
    n_iter: int = 300
    lr: float = 0.1
    eval_every: int = 50
    seed: int = 0
    CPU: ClassVar[dict] = {}
    GPU: ClassVar[dict] = {}

    @classmethod
    def for_device(cls, device) -> Settings:
        return cls(**(cls.GPU if torch.device(device).type == "cuda" else cls.CPU))

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot work, before any training starts."""
        name = type(self).__name__
        self.volume_size = checks.integer(f"{name}.volume_size", self.volume_size, minimum=8)
        self.n_iter = checks.integer(f"{name}.n_iter", self.n_iter)
        self.eval_every = checks.integer(f"{name}.eval_every", self.eval_every, minimum=0)
        self.seed = checks.integer(f"{name}.seed", self.seed, minimum=0)
        self.lr = checks.number(f"{name}.lr", self.lr, 0.0, 100.0, low_open=True)


@dataclass
class FitSettings(Settings):
    """A Chapter 4 fit; the tutorial's recipe, ``lr`` dropping tenfold at ``lr_drop_at * n_iter``. Defined in §4.5."""

    n_pts_per_ray: int = 150
    batch_size: int = 10
    lr_drop_at: float = 0.75
    n_rays_per_image: int | None = None
    min_depth: float = 0.1
    max_depth: float = VOLUME_EXTENT
    # CPU: 96 points over the depths where the cow can be (it spans 1.7 to 3.8 from every camera, at 2.7);
    # the tutorial's 0.1 to 3.0 misses its far side (§2)
    CPU: ClassVar[dict] = dict(
        n_rays_per_image=1024, n_iter=120, eval_every=30, n_pts_per_ray=96, min_depth=1.2, max_depth=4.2
    )

    @property
    def voxel_size(self) -> float:
        return VOLUME_EXTENT / self.volume_size

    def check(self, n_views: int | None = None, n_pixels: int | None = None) -> None:
        super().check()
        depths = _check_depths(self.n_pts_per_ray, self.min_depth, self.max_depth, "FitSettings.", minimum=2)
        self.n_pts_per_ray, self.min_depth, self.max_depth = depths
        self.batch_size = checks.integer("FitSettings.batch_size", self.batch_size)
        self.lr_drop_at = checks.number("FitSettings.lr_drop_at (a fraction of n_iter)", self.lr_drop_at, 0.0, 1.0)
        if self.n_rays_per_image is not None:
            n_rays = self.n_rays_per_image = checks.integer("FitSettings.n_rays_per_image", self.n_rays_per_image)
            msg = f"n_rays_per_image={n_rays} exceeds the {n_pixels} pixels; use None (whole images)."
            checks.require(n_pixels is None or n_rays <= n_pixels, msg)
        msg = f"batch_size={self.batch_size} exceeds the {n_views} training views; use at most that."
        checks.require(n_views is None or self.batch_size <= n_views, msg)


def check_views(name: str, views) -> None:
    """Refuse views whose images, silhouettes or cameras are mis-shaped or not finite, before a fit. Defined in §4.7."""
    msg = f"{name} must be a data.CowViews, got {type(views).__name__}; pass what data.generate_* return."
    checks.require(all(hasattr(views, k) for k in ("images", "silhouettes", "R", "T", "cameras")), msg, TypeError)
    pixels = "re-render the views (delete the dataset's cache file) before fitting"
    cams = "make the views' cameras from finite angles and distances"
    checks.shape(f"{name}.images", views.images, "(N, H, W, 3)", lambda t: t.dim() == 4 and t.shape[-1] == 3, pixels)
    nhw, n = tuple(views.images.shape[:3]), len(views.images)
    checks.shape(f"{name}.silhouettes", views.silhouettes, f"(N, H, W) = {nhw}", lambda t: t.shape == nhw, pixels)
    checks.shape(f"{name}.R", views.R, f"(N, 3, 3) with N = {n} images", lambda t: t.shape == (n, 3, 3), cams)
    checks.shape(f"{name}.T", views.T, f"(N, 3) with N = {n} images", lambda t: t.shape == (n, 3), cams)


def fit(train, heldout=None, settings: FitSettings | None = None, progress: bool = True, callback=None):
    """Fit a :class:`VolumeModel` to ``train`` (a ``data.CowViews``); return ``(model, history)``. Defined in §4.7."""
    check_views("train", train)
    device = train.images.device
    settings = settings if settings is not None else FitSettings.for_device(device)
    checks.kind("settings", settings, FitSettings, "for FastSettings use fast.fit")
    n_views, height, width = train.images.shape[:3]
    settings.check(n_views=n_views, n_pixels=height * width)
    if heldout is not None:
        check_views("heldout", heldout)
        heldout = heldout.to(device)
    torch.manual_seed(settings.seed)  # the raysampler draws its rays from the global generator
    depth = dict(n_pts_per_ray=settings.n_pts_per_ray, min_depth=settings.min_depth, max_depth=settings.max_depth)
    train_renderer = make_renderer((height, width), n_rays_per_image=settings.n_rays_per_image, **depth)
    full_size = tuple(heldout.images.shape[1:3]) if heldout is not None else (height, width)
    model = VolumeModel(make_renderer(full_size, **depth), settings.volume_size, settings.voxel_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    cameras = train.cameras()
    targets = torch.cat([train.images, train.silhouettes[..., None]], dim=-1)  # (N, H, W, 4)
    drop_at = round(settings.n_iter * settings.lr_drop_at)
    history = FitHistory()

    def run_eval(iteration, seconds):
        if heldout is not None:
            result = evaluate(model, heldout)
            history.log_eval(iteration, seconds, result)
            if callback is not None:
                callback(iteration, model, result)

    run_eval(0, 0.0)
    from tqdm import tqdm  # the text bar: tqdm.auto makes a Jupyter widget, whose state the book pages would carry

    bar = tqdm(total=settings.n_iter, desc="fitting", unit="it", disable=not progress)
    elapsed = 0.0
    for iteration in range(settings.n_iter):
        start = clock(device)
        if iteration == drop_at:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.1
        optimizer.zero_grad()
        batch_idx = torch.randperm(n_views, device=device)[: settings.batch_size]
        rendered, bundle = train_renderer(cameras=cameras[batch_idx], volumes=model.volumes(len(batch_idx)))
        target = targets[batch_idx]
        if settings.n_rays_per_image is not None:  # (B, n_rays, 1, 4): the targets at the rays' pixels
            target = sample_at_xys(target, bundle.xys)
        loss = _huber(rendered[..., :3], target[..., :3]).mean() + _huber(rendered[..., 3], target[..., 3]).mean()
        loss.backward()
        optimizer.step()
        elapsed += clock(device) - start
        history.log_step(iteration + 1, loss.item(), elapsed)
        bar.update(1)
        bar.set_postfix(loss=f"{history.losses[-1]:.4f}", refresh=False)
        try:
            _check_divergence(history, lr=settings.lr)
        except FloatingPointError:
            bar.close()
            raise
        done = iteration + 1
        if done == settings.n_iter or (settings.eval_every and done % settings.eval_every == 0):
            run_eval(done, elapsed)
    bar.close()
    return model, history


def rotating_cameras(n_frames: int, dist: float = 2.7, elevation: float = 0.0, device="cpu"):
    """A camera turn about +Y: frame k is ``look_at_view_transform(dist, elevation, 180 + 360k/n)``. Defined in §4.8."""
    from pytorch3d.renderer import FoVPerspectiveCameras
    from pytorch3d.transforms import so3_exp_map

    n_frames = checks.integer("n_frames", n_frames)
    dist = checks.number("dist", dist, 0.0, low_open=True)
    elevation = checks.number("elevation (degrees)", elevation, -90.0, 90.0)
    log_rotations = torch.zeros(n_frames, 3, device=device)
    log_rotations[:, 1] = torch.arange(n_frames, device=device) * (2 * math.pi / n_frames)
    R = so3_exp_map(log_rotations)
    if elevation:  # tilt about each camera's own X axis first
        R = R @ so3_exp_map(torch.tensor([[math.radians(elevation), 0.0, 0.0]], device=device))
    T = torch.zeros(n_frames, 3, device=device)
    T[:, 2] = dist
    return FoVPerspectiveCameras(R=R, T=T, device=device)


FORMAT_VERSION = 2  # bump when the saved layout changes: older files are then refused


def fit_path(chapter: int) -> Path:
    """Where Chapter ``chapter`` (4 or 5) saves its fitted volume for later chapters. Defined in §4.9."""
    from .data import cache_dir

    if checks.integer("chapter", chapter) not in (4, 5):
        raise ValueError(f"Only Chapters 4 and 5 save a fitted volume, got chapter={chapter}; pass 4 or 5.")
    return cache_dir() / "fits" / f"chapter{int(chapter)}_volume.pt"


def _file_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or pathlib.Path), got {path!r}; e.g. fit_path(4).")
    return Path(path)


def _check_info(name: str, value) -> None:
    """``info`` must hold what ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, (list, tuple, dict)):
        for k, v in value.items() if isinstance(value, dict) else enumerate(value):
            _check_info(f"{name}[{k!r}]", v)
    elif not isinstance(value, (int, float, str, bool, type(None), torch.Tensor)):
        msg = f"save_volume's info {name}={value!r} ({type(value).__name__}) could not be loaded back"
        raise TypeError(f"{msg}; pass numbers, strings, tensors, or lists and dicts of them.")


def save_volume(path, model, settings: Settings | None = None, history: FitHistory | None = None, **info) -> None:
    """Save a fitted model, its SHA-256, ``settings``, ``history`` and ``info`` (never partially). Defined in §4.9."""
    from . import fast

    checks.kind("model", model, (VolumeModel, fast.FastVolume), "pass the model a fit returns, not its state_dict()")
    for name, value, kind in (("settings", settings, Settings), ("history", history, FitHistory)):
        checks.kind(name, value, (kind, type(None)), "pass the fit's own, or leave it out")
    for key, value in info.items():
        _check_info(key, value)
    path = _file_path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        checks.finite(f"the model's {key}", value, "this fit diverged; fit again with a lower lr before saving")
    payload = dict(format=FORMAT_VERSION, kind=type(model).__name__, state=state, sha256=_digest(state), info=info)
    payload.update(config=model.config(), settings_kind=type(settings).__name__ if settings is not None else None)
    for key, value in (("settings", settings), ("history", history)):
        payload[key] = dataclasses.asdict(value) if value is not None else None
    _save_atomic(payload, path, "Could not save the fit to", "Choose a writable path or VOLRENDER_CACHE.")


def load_volume(path, device="cpu"):
    """Load a model saved by :func:`save_volume` on ``device``; ``settings`` etc. become attributes. Defined in §4.9."""
    from . import fast

    path, device = _file_path(path), checks.device("device", device)
    remake = "Delete it and re-run the chapter that saves it (Chapter 4 or 5), or save_volume again."
    if not path.is_file():
        raise FileNotFoundError(f"No fitted volume at {path}; run Chapter 4 (or 5), or save_volume, to make it.")
    try:
        payload = _load_payload(path, FORMAT_VERSION)
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable fit: {exc}. {remake}") from exc
    state = payload.get("state")
    if not isinstance(state, dict) or _digest(state) != payload.get("sha256"):
        raise ValueError(f"{path} is corrupted: its tensors do not match their stored SHA-256. {remake}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    checks.require(not bad, f"{path} holds NaN or infinite values in {bad}: the fit it saved had diverged. {remake}")
    kinds = {"VolumeModel": (VolumeModel, FitSettings), "FastVolume": (fast.FastVolume, fast.FastSettings)}
    try:
        model_kind, settings_kind = kinds[payload["kind"]]
        model = model_kind.from_config(payload["config"])
        model.load_state_dict(state)
        if payload["settings"] is not None and payload["settings_kind"] != settings_kind.__name__:
            raise ValueError(f"a {payload['kind']} comes with {settings_kind.__name__}, not {payload['settings_kind']}")
        model.settings = settings_kind(**payload["settings"]) if payload["settings"] else None
        model.history = FitHistory(**payload["history"]) if payload["history"] else None
        model.info = payload["info"] or {}
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} holds a fit whose description does not match its tensors ({exc}). {remake}") from exc
    grid = tuple(model.grid.shape[2:] if isinstance(model, fast.FastVolume) else model.log_densities.shape[1:])
    size = model.settings.volume_size if model.settings is not None else None
    msg = f"{path} holds settings of volume_size={size} for a grid {grid}. {remake}"
    checks.require(size is None or set(grid) == {size}, msg)
    return model.to(device)
