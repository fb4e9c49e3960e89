"""Chapter 3's from-scratch volume sampling, raymarching and renderer against PyTorch3D and closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch3d.renderer import (
    AbsorptionOnlyRaymarcher,
    EmissionAbsorptionRaymarcher,
    NDCMultinomialRaysampler,
    VolumeRenderer,
)
from pytorch3d.renderer.implicit.renderer import VolumeSampler
from pytorch3d.structures import Volumes

from helpers import data, marching, rays

TOL = 1e-5


def random_volume(batch=2, channels=3, size=(9, 10, 11), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, *size, generator=g, dtype=dtype), torch.rand(
        batch, channels, *size, generator=g, dtype=dtype
    )


def cameras(n=2):
    return data.make_cameras(torch.tensor([10.0, 35.0, -20.0])[:n], torch.tensor([20.0, 200.0, 110.0])[:n])


def raysampler(width=16, height=12, n_pts=40, min_depth=1.0, max_depth=4.5):
    return NDCMultinomialRaysampler(
        image_width=width, image_height=height, n_pts_per_ray=n_pts, min_depth=min_depth, max_depth=max_depth
    )


# ---------------------------------------------------------------- volume sampling


@pytest.mark.parametrize("voxel_size, translation", [(0.2, (0.0, 0.0, 0.0)), ((0.1, 0.2, 0.3), (0.3, -0.2, 0.5))])
def test_world_to_local_matches_volumes(voxel_size, translation):
    dens, _ = random_volume()
    vol = Volumes(densities=dens, voxel_size=voxel_size, volume_translation=translation)
    pts = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(1))
    ours = marching.world_to_local(pts, dens.shape[2:], voxel_size, translation)
    torch.testing.assert_close(ours, vol.world_to_local_coords(pts), atol=TOL, rtol=0)
    # the voxel-centre grid maps to evenly spaced local coordinates from -1 to 1
    centres = vol.get_coord_grid(world_coordinates=True)
    torch.testing.assert_close(
        marching.world_to_local(centres, dens.shape[2:], voxel_size, translation),
        vol.get_coord_grid(world_coordinates=False),
        atol=TOL,
        rtol=0,
    )


@pytest.mark.parametrize("align_corners", [True, False])
def test_trilinear_matches_grid_sample_in_float64(align_corners):
    grid, _ = random_volume(channels=1, dtype=torch.float64)
    grid.requires_grad_(True)
    # points inside, at the border and well outside the volume
    local = (
        torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2.6 - 1.3
    ).requires_grad_(True)
    ours = marching.trilinear(grid, local, align_corners)
    ref = F.grid_sample(
        grid, local[:, :, None, None], mode="bilinear", padding_mode="zeros", align_corners=align_corners
    )[:, :, :, 0, 0].transpose(1, 2)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    w = torch.randn_like(ref)
    g_ours = torch.autograd.grad((ours * w).sum(), (grid, local))
    g_ref = torch.autograd.grad((ref * w).sum(), (grid, local))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("align_corners", [True, False])
def test_sample_volume_matches_volume_sampler(align_corners):
    dens, feats = random_volume()
    dens.requires_grad_(True)
    feats.requires_grad_(True)
    vol = Volumes(
        densities=dens,
        features=feats,
        voxel_size=0.25,
        volume_translation=(0.1, -0.2, 0.3),
        align_corners=align_corners,
    )
    bundle = raysampler()(cameras=cameras())
    ref_d, ref_f = VolumeSampler(vol)(bundle)
    ours_d, ours_f = marching.sample_volume(
        dens, feats, rays.ray_points(bundle), 0.25, (0.1, -0.2, 0.3), align_corners=align_corners
    )
    assert ours_d.shape == ref_d.shape == (2, 12, 16, 40, 1) and ours_f.shape == ref_f.shape == (2, 12, 16, 40, 3)
    assert ref_d.std() > 0.1  # the rays do cross the volume
    torch.testing.assert_close(ours_d, ref_d, atol=TOL, rtol=0)
    torch.testing.assert_close(ours_f, ref_f, atol=TOL, rtol=0)
    wd, wf = torch.randn_like(ref_d), torch.randn_like(ref_f)
    g_ref = torch.autograd.grad((ref_d * wd).sum() + (ref_f * wf).sum(), (dens, feats))
    g_ours = torch.autograd.grad((ours_d * wd).sum() + (ours_f * wf).sum(), (dens, feats))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_sample_volume_gradcheck_float64():
    dens, feats = random_volume(batch=1, channels=2, size=(3, 4, 5), dtype=torch.float64)
    pts = torch.rand(1, 2, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.6 - 0.8
    inputs = (dens.requires_grad_(True), feats.requires_grad_(True), pts.requires_grad_(True))

    def f(d, c, p):
        return marching.sample_volume(d, c, p, voxel_size=0.4, volume_translation=(0.05, 0.0, -0.1))

    assert torch.autograd.gradcheck(f, inputs)


def test_sample_volume_without_features():
    dens, _ = random_volume()
    d, f = marching.sample_volume(dens, None, torch.zeros(2, 7, 3), 0.2)
    assert d.shape == (2, 7, 1) and f.shape == (2, 7, 0)
    # the origin is the centre of the volume, between voxels (4, 4.5, 5) of a 9 x 10 x 11 grid
    torch.testing.assert_close(d[:, 0, 0], dens[:, 0, 4, 4:6, 5].mean(-1), atol=TOL, rtol=0)


# ---------------------------------------------------------------- raymarching


def random_rays(shape=(3, 5), n_pts=12, channels=3, dtype=torch.float64, seed=4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(*shape, n_pts, 1, generator=g, dtype=dtype),
        torch.rand(*shape, n_pts, channels, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emission_absorption_matches_pytorch3d(dtype):
    dens, feats = random_rays(dtype=dtype)
    dens.requires_grad_(True)
    feats.requires_grad_(True)
    ref = EmissionAbsorptionRaymarcher()(dens, feats)
    ours = marching.EmissionAbsorption()(rays_densities=dens, rays_features=feats)
    assert ours.shape == ref.shape == (3, 5, 4)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
    w = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad((ours * w).sum(), (dens, feats)),
        torch.autograd.grad((ref * w).sum(), (dens, feats)),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_emission_absorption_gradcheck_float64():
    dens, feats = random_rays(shape=(2,), n_pts=5, channels=2)
    assert torch.autograd.gradcheck(
        marching.emission_absorption, (dens.requires_grad_(True), feats.requires_grad_(True))
    )


def test_weights_follow_the_shifted_product():
    # w_i = d_i * prod_{j<i} (1 - d_j), written out sample by sample
    d = torch.tensor([0.2, 0.5, 0.1, 0.7], dtype=torch.float64)
    feats = torch.eye(4, dtype=torch.float64)  # feature i picks out weight i
    out = marching.emission_absorption(d[:, None], feats, eps=0.0)
    expected = [0.2, 0.8 * 0.5, 0.8 * 0.5 * 0.1, 0.8 * 0.5 * 0.9 * 0.7]
    torch.testing.assert_close(out[:4], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(out[4], torch.tensor(1 - 0.8 * 0.5 * 0.9 * 0.3, dtype=torch.float64))
    # the weights sum to the opacity: what is not transmitted is emitted
    torch.testing.assert_close(out[:4].sum(), out[4])


def test_absorption_only_matches_pytorch3d():
    dens, _ = random_rays()
    torch.testing.assert_close(
        marching.AbsorptionOnly()(rays_densities=dens), AbsorptionOnlyRaymarcher()(dens), atol=TOL, rtol=0
    )
    torch.testing.assert_close(marching.absorption_only(dens), marching.emission_absorption(dens, dens)[..., -1:])


def test_opaque_first_sample_hides_everything_behind_it():
    dens, feats = random_rays(dtype=torch.float64)
    dens = dens.clone()
    dens[..., 0, 0] = 1.0
    feats.requires_grad_(True)
    out = marching.emission_absorption(dens, feats)
    torch.testing.assert_close(out[..., :3], feats[..., 0, :], atol=1e-8, rtol=0)
    torch.testing.assert_close(out[..., 3], torch.ones_like(out[..., 3]), atol=0, rtol=0)
    grad = torch.autograd.grad(out[..., :3].sum(), feats)[0]
    assert grad[..., 1:, :].abs().max() < 1e-8  # nothing behind the wall is seen


def test_step_length_aware_form_has_the_closed_form_and_ignores_sample_count():
    sigma, a, b = 0.8, 1.0, 2.5  # a slab of density sigma between depths a and b
    for n in (32, 64, 128):
        t = torch.linspace(0.0, 4.0, n + 1, dtype=torch.float64)[
            :-1
        ]  # step h = 4/n: the slab holds (b - a) / h samples
        half = 2.0 / n  # half a step, so no sample sits on the slab's faces where rounding decides
        inside = (t > a - half) & (t < b - half)
        sig = inside.double()[:, None] * sigma
        alpha = marching.alpha_from_sigma(sig, t)
        out = marching.emission_absorption(alpha, torch.ones(n, 1, dtype=torch.float64), eps=0.0)
        torch.testing.assert_close(out[-1], torch.tensor(1 - math.exp(-sigma * (b - a)), dtype=torch.float64))
        # PyTorch3D's form used with the same number as a per-sample opacity depends on n
        k = int(inside.sum())
        assert k == round((b - a) * n / 4)
        pt3 = marching.emission_absorption(sig.clamp(max=1), torch.ones(n, 1, dtype=torch.float64))
        torch.testing.assert_close(pt3[-1], torch.tensor(1 - (1 - sigma) ** k, dtype=torch.float64))


def test_alpha_from_sigma_measures_steps_in_world_units():
    t = torch.linspace(1.0, 2.0, 11)
    sigma = torch.full((11, 1), 0.5)
    direction = torch.tensor([0.0, 3.0, 4.0])  # length 5: each step of 0.1 covers 0.5 world units
    alpha = marching.alpha_from_sigma(sigma, t, direction)
    torch.testing.assert_close(alpha, torch.full((11, 1), 1 - math.exp(-0.25)), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- the full renderer


def test_renderer_matches_volume_renderer_and_needs_the_shift():
    dens, feats = random_volume()
    dens, feats = dens * 0.3, feats  # half-transparent: every sample along a ray contributes
    dens.requires_grad_(True)
    feats.requires_grad_(True)
    vol = Volumes(densities=dens, features=feats, voxel_size=0.25, volume_translation=(0.1, -0.2, 0.3))
    cams, rs = cameras(), raysampler()
    ref, ref_bundle = VolumeRenderer(rs, EmissionAbsorptionRaymarcher())(cameras=cams, volumes=vol)
    ours, bundle = marching.Renderer(rs, marching.EmissionAbsorption())(cams, vol)
    assert ours.shape == ref.shape == (2, 12, 16, 4)
    torch.testing.assert_close(bundle.lengths, ref_bundle.lengths)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
    w = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * w).sum(), (dens, feats))
    g_ours = torch.autograd.grad((ours * w).sum(), (dens, feats))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    # the comparison can tell: without the one-sample shift the colours are far off
    unshifted, _ = marching.Renderer(rs, marching.EmissionAbsorption(surface_thickness=0))(cams, vol)
    assert (unshifted[..., :3] - ref[..., :3]).abs().max() > 100 * TOL


def test_renderer_takes_pytorch3d_raymarchers():
    dens, _ = random_volume()
    vol = Volumes(densities=dens * 0.2, voxel_size=0.25)
    cams, rs = cameras(), raysampler()
    ref, _ = VolumeRenderer(rs, AbsorptionOnlyRaymarcher())(cameras=cams, volumes=vol)
    ours, _ = marching.Renderer(rs, AbsorptionOnlyRaymarcher())(cams, vol)
    twin, _ = marching.Renderer(rs, marching.AbsorptionOnly())(cams, vol)
    assert ref.shape == (2, 12, 16, 1) and ref.max() > 0.5
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
    torch.testing.assert_close(twin, ref, atol=TOL, rtol=0)


def slab_scene(density, colour=(0.2, 0.5, 0.9)):
    """A camera on +Z at distance 2.7 looking at a constant block 9 voxels (2.7 units) deep.

    The block spans world z in [-1.2, 1.2] (voxel centres every 0.3) and is wide enough to
    cover every ray; samples every 0.3 from depth 0.3 to 5.1 fall on voxel-centre planes,
    so exactly 9 of them lie in the block and the others sample exact zeros.
    """
    size = (9, 25, 25)
    dens = torch.full((1, 1, *size), float(density))
    feats = torch.tensor(colour).reshape(1, 3, 1, 1, 1).expand(1, 3, *size)
    vol = Volumes(densities=dens, features=feats, voxel_size=0.3)
    cams = data.make_cameras(torch.tensor([0.0]), torch.tensor([0.0]))
    rs = raysampler(width=8, height=8, n_pts=17, min_depth=0.3, max_depth=5.1)
    return vol, cams, rs


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_constant_slab_has_the_predicted_opacity(density):
    vol, cams, rs = slab_scene(density)
    for renderer in (
        marching.Renderer(rs, marching.EmissionAbsorption()),
        VolumeRenderer(rs, EmissionAbsorptionRaymarcher()),
    ):
        image, _ = renderer(cameras=cams, volumes=vol)
        expected = 1 - (1 - density) ** 9
        torch.testing.assert_close(image[..., 3], torch.full((1, 8, 8), expected), atol=TOL, rtol=0)
        # the colour is the block's colour times the light it stopped
        torch.testing.assert_close(image[..., :3], torch.tensor([0.2, 0.5, 0.9]) * image[..., 3:], atol=TOL, rtol=0)


def test_empty_volume_renders_to_nothing():
    vol, cams, rs = slab_scene(0.0)
    image, _ = marching.Renderer(rs, marching.EmissionAbsorption())(cams, vol)
    assert torch.equal(image, torch.zeros_like(image))


def test_pixel_gradient_reaches_only_voxels_near_its_ray():
    n, voxel = 16, 3.0 / 16
    dens = torch.full((1, 1, n, n, n), 0.05, requires_grad=True)
    vol = Volumes(densities=dens, features=torch.ones(1, 3, n, n, n), voxel_size=voxel)
    rs = raysampler(width=9, height=9, n_pts=64, min_depth=1.0, max_depth=4.5)
    image, bundle = marching.Renderer(rs, marching.EmissionAbsorption())(cameras(1), vol)
    image[0, 4, 6, 3].backward()
    support = dens.grad[0, 0].abs() > 0
    centres = vol.get_coord_grid(world_coordinates=True)[0]  # (D, H, W, 3)
    pts = rays.ray_points(bundle)[0, 4, 6]  # (P, 3)
    nearest = torch.cdist(centres.reshape(-1, 3), pts).min(1).values.reshape(n, n, n)
    # a trilinear sample touches the 8 corners of its cell: at most sqrt(3) voxels away
    assert support.any()
    assert nearest[support].max() < math.sqrt(3) * voxel + 1e-5
    # and every cell a sample fell in got a gradient
    assert support[nearest < 0.49 * voxel].all()


# ---------------------------------------------------------------- bad input


def test_bad_shapes_are_rejected():
    dens, feats = random_volume()
    pts = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="features must have shape"):
        marching.sample_volume(dens, feats[:, :, :-1], pts, 0.2)
    with pytest.raises(ValueError, match="densities must have shape"):
        marching.sample_volume(dens[:, 0], feats, pts, 0.2)
    with pytest.raises(ValueError, match="volumes"):
        marching.sample_volume(dens, feats, pts[:1], 0.2)
    with pytest.raises(ValueError, match="voxel_size"):
        marching.sample_volume(dens, feats, pts, (0.1, 0.2))
    d, f = random_rays()
    with pytest.raises(ValueError, match="must agree"):
        marching.emission_absorption(d, f[..., :-1, :])
    with pytest.raises(ValueError, match=r"\(\.\.\., P, 1\)"):
        marching.emission_absorption(f, f)


@pytest.mark.parametrize("bad", [1.5, -0.2])
def test_densities_outside_unit_interval_are_rejected(bad):
    d, f = random_rays()
    d[0, 0, 3] = bad
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        marching.emission_absorption(d, f)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        marching.absorption_only(d)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values_are_rejected(value):
    dens, feats = random_volume()
    bad = dens.clone()
    bad[0, 0, 1, 2, 3] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        marching.sample_volume(bad, feats, torch.zeros(2, 5, 3), 0.2)
    d, f = random_rays()
    f[1, 2, 3, 0] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        marching.emission_absorption(d, f)
    with pytest.raises(TypeError, match="Volumes"):
        marching.Renderer(raysampler(), marching.EmissionAbsorption())(cameras(), dens)
    vol = Volumes(densities=bad, features=feats, voxel_size=0.25)
    with pytest.raises(ValueError, match="NaN or infinite"):
        marching.Renderer(raysampler(), marching.EmissionAbsorption())(cameras(), vol)


def test_complete_from_scratch_renderer_with_chapter_2_raysampler():
    """Chapter 2's raysampler + this chapter's sampler and raymarcher = PyTorch3D's VolumeRenderer."""
    rays = pytest.importorskip("helpers.rays", reason="Chapter 2 (helpers/rays.py) is not merged on this branch")
    dens, feats = random_volume()
    vol = Volumes(densities=dens * 0.3, features=feats, voxel_size=0.25, volume_translation=(0.1, -0.2, 0.3))
    settings = dict(image_width=16, image_height=12, n_pts_per_ray=40, min_depth=1.0, max_depth=4.5)
    ref, _ = VolumeRenderer(NDCMultinomialRaysampler(**settings), EmissionAbsorptionRaymarcher())(
        cameras=cameras(), volumes=vol
    )
    ours, _ = marching.Renderer(rays.GridRaysampler(**settings), marching.EmissionAbsorption())(cameras(), vol)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
