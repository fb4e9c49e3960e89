"""Chapter 4's model, target sampling, settings, training loop, turntable and saved volumes."""

import math

import numpy as np
import pytest
import torch
from pytorch3d.renderer import FoVPerspectiveCameras, NDCMultinomialRaysampler, look_at_view_transform

from helpers import data, fast, fitting, metrics, rays


def _cameras(n, elev=0.0):
    R, T = look_at_view_transform(dist=2.7, elev=elev, azim=torch.arange(n) * (360.0 / n))
    return FoVPerspectiveCameras(R=R, T=T)


# --- reading targets at the rays' NDC coordinates -------------------------------------------


@pytest.mark.parametrize("h, w", [(6, 6), (5, 9), (9, 5)])
def test_sampling_at_pixel_centres_returns_the_pixels(h, w):
    """A grid raysampler's xys are the pixel centres: sampling there must give the image back.

    A flipped axis (or align_corners=True) mirrors or shifts the result and fails this.
    """
    images = torch.rand(2, h, w, 3)
    sampler = NDCMultinomialRaysampler(image_width=w, image_height=h, n_pts_per_ray=2, min_depth=1, max_depth=2)
    xys = sampler(_cameras(2)).xys  # (2, h, w, 2)
    assert torch.allclose(fitting.sample_at_xys(images, xys), images, atol=1e-6)


def test_sampling_random_rays_matches_their_pixels():
    """Random rays: each ray's colour is the pixel whose centre it passes through, found independently."""
    h, w = 16, 16
    images = torch.rand(3, h, w, 4)
    sampler = NDCMultinomialRaysampler(
        image_width=w, image_height=h, n_pts_per_ray=2, min_depth=1, max_depth=2, n_rays_per_image=40
    )
    xys = sampler(_cameras(3)).xys  # (3, 40, 1, 2); NDC +X left, +Y up
    col = ((1 - xys[..., 0]) * w / 2 - 0.5).round().long()
    row = ((1 - xys[..., 1]) * h / 2 - 0.5).round().long()
    expected = torch.stack([images[i, row[i], col[i]] for i in range(3)])
    assert torch.allclose(fitting.sample_at_xys(images, xys), expected, atol=1e-6)
    assert (
        len({(r, c) for r, c in zip(row[0, :, 0].tolist(), col[0, :, 0].tolist(), strict=True)}) == 40
    )  # distinct pixels


def test_sampling_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="xys"):
        fitting.sample_at_xys(torch.zeros(2, 4, 4, 3), torch.zeros(3, 5, 1, 2))


# --- the model ------------------------------------------------------------------------------


def test_model_initialisation_and_output_shapes():
    model = fitting.VolumeModel(fitting.make_renderer(12, n_pts_per_ray=20), (8, 8, 8), 3.0 / 8)
    assert torch.allclose(model.densities, torch.full((1, 8, 8, 8), 1 / (1 + math.exp(4))))
    assert torch.allclose(model.colors, torch.full((3, 8, 8, 8), 0.5))
    cams = _cameras(3)
    assert model(cams).shape == (3, 12, 12, 4)
    rays, bundle = fitting.make_renderer(12, n_pts_per_ray=20, n_rays_per_image=7)(
        cameras=cams, volumes=model.volumes(3)
    )
    assert rays.shape == (3, 7, 1, 4) and bundle.xys.shape == (3, 7, 1, 2)


def test_uniform_colour_renders_colour_times_opacity():
    """Emission-absorption with one colour c: the weights sum to the opacity 1 - prod(1 - sigma), so RGB = c x opacity.

    The density is zero in the grid's outer two voxels, where the colour's trilinear interpolation would mix
    in the zero padding; everywhere density is non-zero the colour is then exactly c.
    """
    renderer = fitting.make_renderer(10, n_pts_per_ray=40, min_depth=1.0, max_depth=2.7)
    model = fitting.VolumeModel(renderer, (16, 16, 16), 3.0 / 16)
    colour = torch.tensor([0.2, 0.5, 0.8])
    with torch.no_grad():
        model.log_colors.copy_(torch.logit(colour)[:, None, None, None].expand_as(model.log_colors))
        model.log_densities.fill_(-40.0)
        model.log_densities[:, 2:-2, 2:-2, 2:-2] = math.log(0.05 / 0.95)  # sigma = 0.05
        out = model(_cameras(2))
    assert out[..., 3].max() > 0.5 and out[..., 3].min() >= 0
    assert torch.allclose(out[..., :3], colour * out[..., 3:], atol=1e-5)


def test_expanded_grid_gets_the_summed_gradient():
    """One grid, expanded to the batch: its gradient is the sum of the per-camera gradients."""
    torch.manual_seed(0)
    model = fitting.VolumeModel(fitting.make_renderer(8, n_pts_per_ray=16), (8, 8, 8), 3.0 / 8)
    with torch.no_grad():
        model.log_densities.normal_()
    cams = _cameras(2)
    model(cams).sum().backward()
    both = model.log_densities.grad.clone()
    parts = torch.zeros_like(both)
    for i in range(2):
        model.zero_grad()
        model(cams[[i]]).sum().backward()
        parts += model.log_densities.grad
    assert both.abs().sum() > 0 and torch.allclose(both, parts, atol=1e-5)


# --- settings -------------------------------------------------------------------------------


def test_default_settings_are_the_tutorial_recipe_on_a_gpu():
    gpu = fitting.FitSettings.for_device("cuda")
    assert (
        gpu.volume_size,
        gpu.n_pts_per_ray,
        gpu.batch_size,
        gpu.n_iter,
        gpu.lr,
        gpu.lr_drop_at,
        gpu.n_rays_per_image,
        gpu.min_depth,
        gpu.max_depth,
    ) == (128, 150, 10, 300, 0.1, 0.75, None, 0.1, 3.0)
    cpu = fitting.FitSettings.for_device("cpu")
    assert cpu.n_rays_per_image is not None and cpu.volume_size == 128
    # the CPU's points must span every depth at which a camera 2.7 away can meet the volume's box
    # (the seed's 0.1-3.0 stops short of the cow's far side), at about one point per voxel or denser
    half = rays.VOLUME_EXTENT / 2
    assert cpu.min_depth <= data.CAMERA_DIST - half and cpu.max_depth >= data.CAMERA_DIST + half
    assert (cpu.max_depth - cpu.min_depth) / cpu.n_pts_per_ray <= 1.5 * cpu.voxel_size
    cpu.check(n_views=40, n_pixels=128 * 128)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(batch_size=41), "batch_size"),
        (dict(n_iter=0), "n_iter"),
        (dict(volume_size=7), "volume_size"),
        (dict(lr=float("nan")), "lr"),
        (dict(lr=-0.1), "lr"),
        (dict(n_iter=np.int64(0)), "n_iter"),
        (dict(n_pts_per_ray=2.5), "n_pts_per_ray"),
        (dict(n_rays_per_image=128 * 128 + 1), "n_rays_per_image"),
        (dict(min_depth=3.0, max_depth=1.0), "min_depth"),
    ],
)
def test_impossible_settings_are_rejected_before_training(bad, match, monkeypatch):
    views = data.generate_cow_renders(num_views=40, image_size=128, device="cpu")
    monkeypatch.setattr(fitting, "VolumeModel", None)  # fails loudly if training were to start
    with pytest.raises(ValueError, match=match):
        fitting.fit(views, None, fitting.FitSettings(**bad), progress=False)


def test_nan_training_data_is_refused_before_training():
    views = data.generate_cow_renders(num_views=4, image_size=16, device="cpu")
    views.images = views.images.clone()
    views.images[:, 0, 0, 0] = float("nan")
    settings = fitting.FitSettings(volume_size=8, n_pts_per_ray=8, batch_size=2, n_iter=3, eval_every=0)
    with pytest.raises(ValueError, match=r"train.images contains 4 NaN"):
        fitting.fit(views, None, settings, progress=False)


def test_a_huge_learning_rate_stops_the_fit():
    views = data.generate_cow_renders(num_views=40, image_size=32, device="cpu")
    settings = fitting.FitSettings(
        volume_size=16,
        n_pts_per_ray=24,
        batch_size=4,
        n_iter=200,
        eval_every=0,
        n_rays_per_image=64,
        min_depth=1.2,
        max_depth=4.2,
        lr=50.0,
    )
    with pytest.raises(metrics.DivergenceError, match="lr=50"):
        fitting.fit(views, None, settings, progress=False)


# --- the loop -------------------------------------------------------------------------------


def test_a_small_fit_learns_the_cow():
    """A 32^3 grid fitted to 32 x 32 views with random rays: the loss falls and held-out PSNR/IoU rise well
    above the untrained fog's."""
    train = data.generate_cow_renders(num_views=40, image_size=32, device="cpu")
    heldout = data.generate_heldout_renders(image_size=32, n_between=8, n_elevated=4, device="cpu")
    settings = fitting.FitSettings(
        volume_size=32, n_pts_per_ray=40, batch_size=6, n_iter=60, n_rays_per_image=192, eval_every=30
    )
    calls = []
    model, history = fitting.fit(
        train, heldout, settings, progress=False, callback=lambda it, m, ev: calls.append((it, ev["images"].shape))
    )
    assert history.iterations == list(range(1, 61)) and len(history.losses) == 60
    assert history.eval_iterations == [0, 30, 60] and [c[0] for c in calls] == [0, 30, 60]
    assert calls[0][1] == (12, 32, 32, 3)
    assert all(b >= a for a, b in zip(history.seconds, history.seconds[1:], strict=False))
    first, last = sum(history.losses[:5]) / 5, sum(history.losses[-5:]) / 5
    assert last < 0.5 * first
    assert history.psnr[-1] > history.psnr[0] + 6  # at least four times less squared error than the fog
    assert history.iou[-1] > 0.85 > history.iou[0]
    out = model(heldout.cameras()[[0]])  # the returned model renders whole images
    assert out.shape == (1, 32, 32, 4)


def test_whole_image_training_runs():
    views = data.generate_cow_renders(num_views=4, image_size=16, device="cpu")
    settings = fitting.FitSettings(volume_size=8, n_pts_per_ray=8, batch_size=2, n_iter=2, eval_every=0)
    _, history = fitting.fit(views, views, settings, progress=False)
    assert history.eval_iterations == [0, 2] and all(map(math.isfinite, history.losses))


# --- turntable and saved volumes -------------------------------------------------------------


@pytest.mark.parametrize("elevation", [0.0, 30.0, -20.0])
def test_rotating_cameras_are_a_full_turn_of_look_at_cameras(elevation):
    cams = fitting.rotating_cameras(6, elevation=elevation)
    R, T = look_at_view_transform(dist=2.7, elev=elevation, azim=180.0 + torch.arange(6) * 60.0)
    assert torch.allclose(cams.R, R, atol=1e-5) and torch.allclose(cams.T, T, atol=1e-5)
    centres = cams.get_camera_center()
    assert torch.allclose(centres[:, 1], torch.full((6,), 2.7 * math.sin(math.radians(elevation))), atol=1e-5)
    assert (centres[1:] - centres[0]).norm(dim=1).min() > 1.0  # the first frame is not repeated


def test_save_and_load_round_trip(tmp_path):
    model = fitting.VolumeModel(fitting.make_renderer(8, n_pts_per_ray=16), (8, 8, 8), 3.0 / 8)
    with torch.no_grad():
        model.log_densities.normal_()
        model.log_colors.normal_()
    settings = fitting.FitSettings(volume_size=8, n_pts_per_ray=16)
    history = metrics.FitHistory(iterations=[1], losses=[0.5], seconds=[1.0])
    fitting.save_volume(tmp_path / "v.pt", model, settings, history, psnr=27.5)
    loaded = fitting.load_volume(tmp_path / "v.pt")
    assert torch.equal(loaded.log_densities, model.log_densities) and loaded.voxel_size == model.voxel_size
    assert loaded.settings == settings and loaded.history == history and loaded.info == {"psnr": 27.5}
    cams = _cameras(1)
    with torch.no_grad():
        assert torch.equal(loaded(cams), model(cams))
    with pytest.raises(FileNotFoundError, match="Chapter 4"):
        fitting.load_volume(tmp_path / "missing.pt")


def test_fast_volume_round_trip_with_its_hull(tmp_path):
    occupancy = torch.zeros(8, 8, 8, dtype=torch.bool)
    occupancy[2:6, 3:5, 1:7] = True
    from helpers.hull import Occupancy

    model = fast.FastVolume(8, occupancy=Occupancy(occupancy), image_size=10, step_voxels=0.5)
    with torch.no_grad():
        model.grid.normal_()
    fitting.save_volume(tmp_path / "f.pt", model, fast.FastSettings(volume_size=8))
    loaded = fitting.load_volume(tmp_path / "f.pt")
    assert isinstance(loaded, fast.FastVolume) and loaded.settings == fast.FastSettings(volume_size=8)
    assert torch.equal(loaded.occupancy.grid, occupancy) and loaded.step_voxels == 0.5
    cams = _cameras(2)
    assert torch.equal(loaded(cams), model(cams)) and loaded(cams)[..., 3].max() > 0


def test_damaged_or_foreign_fit_files_are_refused(tmp_path):
    model = fitting.VolumeModel(fitting.make_renderer(8, n_pts_per_ray=16), (8, 8, 8), 3.0 / 8)
    path = tmp_path / "v.pt"
    fitting.save_volume(path, model)
    raw = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.pt"
    at = raw.index(b"data/0") + 200  # inside the first tensor's bytes
    flipped.write_bytes(bytes(raw[:at]) + bytes(b ^ 0xFF for b in raw[at : at + 64]) + bytes(raw[at + 64 :]))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(bytes(raw[: len(raw) // 2]))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for bad, message in [(flipped, "corrupted|not a readable"), (truncated, "not a readable"), (foreign, "format")]:
        with pytest.raises(ValueError, match=message) as err:
            fitting.load_volume(bad)
        assert str(bad) in str(err.value) and "re-run" in str(err.value)


def test_a_failed_save_leaves_no_file(tmp_path):
    model = fitting.VolumeModel(fitting.make_renderer(8, n_pts_per_ray=16), (8, 8, 8), 3.0 / 8)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="VOLRENDER_CACHE"):
        fitting.save_volume(blocker / "sub" / "v.pt", model)  # a folder inside a file cannot exist
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_saved_fits_live_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path))
    assert fitting.fit_path(4).parent.parent == tmp_path and fitting.fit_path(5).name == "chapter5_volume.pt"
