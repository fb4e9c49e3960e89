"""Chapter 2: the from-scratch raysampler against PyTorch3D and against closed forms."""

import pytest
import torch
from pytorch3d.renderer import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    NDCMultinomialRaysampler,
    PerspectiveCameras,
    VolumeRenderer,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)
from pytorch3d.structures import Volumes
from pytorch3d.transforms import random_rotations

from helpers import hull, rays

DEPTHS = dict(n_pts_per_ray=37, min_depth=0.1, max_depth=3.0)


def random_cameras(batch, seed, degrees=True, dtype=torch.float32):
    """Random rotations, centres 1 to 4 units from the origin, fov 20-100°, aspect 0.5-2.

    The same seed gives the same cameras in float32 and float64 (up to rounding)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # random_rotations draws from the global generator
    R = random_rotations(batch, dtype=torch.float64).to(dtype)
    T = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    T = (T / T.norm(dim=1, keepdim=True) * (1 + 3 * torch.rand(batch, 1, generator=g, dtype=torch.float64))).to(dtype)
    fov = 20 + 80 * torch.rand(batch, generator=g, dtype=torch.float64)
    if not degrees:
        fov = torch.deg2rad(fov)
    fov = fov.to(dtype)
    aspect = (0.5 + 1.5 * torch.rand(batch, generator=g, dtype=torch.float64)).to(dtype)
    znear = (0.05 + torch.rand(batch, generator=g, dtype=torch.float64)).to(dtype)
    zfar = znear + 5 + 50 * torch.rand(batch, generator=g, dtype=torch.float64).to(dtype)
    return FoVPerspectiveCameras(R=R, T=T, fov=fov, aspect_ratio=aspect, znear=znear, zfar=zfar, degrees=degrees)


def assert_matches_pytorch3d(mine, ref):
    """Origins, directions, lengths and xys agree to 1e-5; points to 1e-5 per unit of ray size.

    A point is ``origin + length * direction``; PyTorch3D computes it in float32 from a
    4x4 matrix inverse and loses about 1e-6 of the size of those terms, which reaches
    1.5e-5 on rays 8 units long (test_more_accurate_than_pytorch3d shows that ours is the
    one closer to float64). So the points' tolerance is 1e-5 times that size, never less
    than 1e-5.
    """
    for field in ("origins", "directions", "lengths", "xys"):
        a, b = getattr(mine, field), getattr(ref, field)
        assert a.shape == b.shape, f"{field}: {tuple(a.shape)} != {tuple(b.shape)}"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m, field=field: f"{field}: {m}")
    size = ref.origins.norm(dim=-1) + ref.lengths.abs().amax(-1) * ref.directions.norm(dim=-1)
    error = (rays.ray_points(mine) - ray_bundle_to_ray_points(ref)).abs().amax(dim=(-2, -1))
    worst = (error / size.clamp(min=1.0)).max()
    assert worst <= 1e-5, f"points differ by {float(worst):.2e} per unit of ray size (allowed 1e-5)"


@pytest.mark.parametrize("width,height", [(16, 16), (24, 10), (7, 19), (1, 1), (2, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_ndc_multinomial_raysampler(width, height, seed):
    cameras = random_cameras(5, seed)
    ref = NDCMultinomialRaysampler(image_width=width, image_height=height, **DEPTHS)(cameras)
    mine = rays.GridRaysampler(image_width=width, image_height=height, **DEPTHS)(cameras)
    assert_matches_pytorch3d(mine, ref)


def test_matches_with_fov_in_radians_and_a_single_camera():
    cameras = random_cameras(1, seed=7, degrees=False)
    ref = NDCMultinomialRaysampler(image_width=20, image_height=12, **DEPTHS)(cameras)
    mine = rays.GridRaysampler(image_width=20, image_height=12, **DEPTHS)(cameras)
    assert_matches_pytorch3d(mine, ref)


class FlippedX(rays.GridRaysampler):
    """The classic mistake: NDC +X pointing right (as in OpenGL) instead of left."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._xy_grid[..., 0] *= -1


def test_the_comparison_catches_a_flipped_x_axis():
    cameras = random_cameras(4, seed=3)
    ref = NDCMultinomialRaysampler(image_width=16, image_height=12, **DEPTHS)(cameras)
    with pytest.raises(AssertionError):
        assert_matches_pytorch3d(FlippedX(image_width=16, image_height=12, **DEPTHS)(cameras), ref)


def test_points_project_back_to_their_pixel_at_their_depth():
    """Closed form, no PyTorch3D raysampler: each sample projects to its ray's NDC pixel
    centre, and its view-space depth equals its length."""
    cameras = random_cameras(3, seed=4)
    bundle = rays.GridRaysampler(image_width=9, image_height=6, n_pts_per_ray=5, min_depth=2.0, max_depth=4.0)(cameras)
    pts = rays.ray_points(bundle).reshape(3, -1, 3)
    view = cameras.get_world_to_view_transform().transform_points(pts)
    torch.testing.assert_close(view[..., 2], bundle.lengths.reshape(3, -1), atol=1e-5, rtol=1e-5)
    ndc = cameras.transform_points(pts)[..., :2]  # all depths exceed znear (< 1.05)
    xys = bundle.xys[:, :, :, None, :].expand(-1, -1, -1, 5, -1).reshape(3, -1, 2)
    torch.testing.assert_close(ndc, xys, atol=1e-5, rtol=1e-5)
    # pixel centres: half a pixel in from the edges, the shorter side spanning [-1, 1]
    assert bundle.xys[0, 0, 0].tolist() == pytest.approx([1.5 * (1 - 1 / 9), 1 - 1 / 6])
    assert bundle.xys[0, -1, -1].tolist() == pytest.approx([-1.5 * (1 - 1 / 9), -(1 - 1 / 6)])


def test_more_accurate_than_pytorch3d():
    cameras = random_cameras(6, seed=5)
    # float64 cameras holding exactly the float32 cameras' numbers
    cameras64 = FoVPerspectiveCameras(
        R=cameras.R.double(), T=cameras.T.double(), fov=cameras.fov.double(), aspect_ratio=cameras.aspect_ratio.double()
    )
    kw = dict(image_width=24, image_height=16, n_pts_per_ray=50, min_depth=0.1, max_depth=3.0)
    truth = rays.ray_points(rays.GridRaysampler(**kw)(cameras64))
    assert truth.dtype == torch.float64
    mine = rays.ray_points(rays.GridRaysampler(**kw)(cameras)).double()
    ref = ray_bundle_to_ray_points(NDCMultinomialRaysampler(**kw)(cameras)).double()
    assert (mine - truth).abs().max() < 1e-5
    assert (mine - truth).abs().max() <= (ref - truth).abs().max()


def test_stratified_matches_pytorch3d_and_stays_in_its_bin():
    cameras = random_cameras(2, seed=6)
    kw = dict(image_width=8, image_height=5, n_pts_per_ray=11, min_depth=0.5, max_depth=2.5)
    torch.manual_seed(123)
    ref = NDCMultinomialRaysampler(**kw, stratified_sampling=True)(cameras)
    torch.manual_seed(123)
    mine = rays.GridRaysampler(**kw, stratified=True)(cameras)
    torch.testing.assert_close(mine.lengths, ref.lengths, atol=1e-6, rtol=0)
    centres = torch.linspace(0.5, 2.5, 11)
    edges = torch.cat([centres[:1], (centres[1:] + centres[:-1]) / 2, centres[-1:]])
    assert ((mine.lengths >= edges[:-1]) & (mine.lengths <= edges[1:])).all()
    assert not torch.allclose(mine.lengths[0, 0, 0], mine.lengths[0, 0, 1])  # each ray has its own jitter
    # the per-call override VolumeRenderer may pass
    uniform = rays.GridRaysampler(**kw, stratified=True)(cameras, stratified_sampling=False)
    assert torch.equal(uniform.lengths[0, 0, 0], centres)


def test_drop_in_for_volume_renderer():
    R, T = look_at_view_transform(2.7, torch.zeros(2), torch.tensor([30.0, 200.0]))
    cameras = FoVPerspectiveCameras(R=R, T=T)
    g = torch.Generator().manual_seed(0)
    volumes = Volumes(
        densities=0.3 * torch.rand(2, 1, 12, 12, 12, generator=g),
        features=torch.rand(2, 3, 12, 12, 12, generator=g),
        voxel_size=3.0 / 12,
    )
    kw = dict(image_width=14, image_height=10, n_pts_per_ray=40, min_depth=0.1, max_depth=3.0)
    marcher = EmissionAbsorptionRaymarcher()
    ref, _ = VolumeRenderer(raysampler=NDCMultinomialRaysampler(**kw), raymarcher=marcher)(
        cameras=cameras, volumes=volumes
    )
    mine, bundle = VolumeRenderer(raysampler=rays.GridRaysampler(**kw), raymarcher=marcher)(
        cameras=cameras, volumes=volumes
    )
    assert mine.shape == (2, 10, 14, 4)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    # overrides passed through the renderer reach the raysampler
    _, bundle = VolumeRenderer(raysampler=rays.GridRaysampler(**kw), raymarcher=marcher)(
        cameras=cameras, volumes=volumes, n_pts_per_ray=7
    )
    assert bundle.lengths.shape == (2, 10, 14, 7)


def test_ray_points_is_the_closed_form():
    o, d = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, -1.0, 2.0]])
    bundle = rays.RayBundle(origins=o, directions=d, lengths=torch.tensor([[0.0, 2.0]]), xys=torch.zeros(1, 2))
    assert rays.ray_points(bundle).tolist() == [[[1.0, 2.0, 3.0], [2.0, 0.0, 7.0]]]
    cameras = random_cameras(2, seed=8)
    b = rays.GridRaysampler(image_width=5, image_height=4, **DEPTHS)(cameras)
    torch.testing.assert_close(rays.ray_points(b), ray_bundle_to_ray_points(b))


def test_project_matches_pytorch3d_in_front_of_the_near_plane():
    cameras = random_cameras(4, seed=9)
    pts = torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(9))
    xy, depth = rays.project(cameras, pts)
    torch.testing.assert_close(depth, cameras.get_world_to_view_transform().transform_points(pts)[..., 2])
    front = depth > cameras.znear[:, None] + 0.05
    assert front.sum() > 50
    torch.testing.assert_close(xy[front], cameras.transform_points(pts)[..., :2][front], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "bad",
    [
        dict(image_width=0),
        dict(image_height=-3),
        dict(image_width=2.5),
        dict(image_height=True),
        dict(n_pts_per_ray=0),
        dict(n_pts_per_ray=2.0),
        dict(min_depth=3.0, max_depth=3.0),
        dict(min_depth=4.0, max_depth=3.0),
        dict(min_depth=-1.0),
        dict(max_depth=float("nan")),
    ],
)
def test_rejects_bad_settings(bad):
    kw = dict(image_width=8, image_height=8, n_pts_per_ray=10, min_depth=0.1, max_depth=3.0)
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        rays.GridRaysampler(**{**kw, **bad})


def test_rejects_bad_overrides_and_cameras():
    sampler = rays.GridRaysampler(image_width=8, image_height=8, n_pts_per_ray=10, min_depth=0.1, max_depth=3.0)
    cameras = random_cameras(2, seed=10)
    with pytest.raises(ValueError, match="min_depth"):
        sampler(cameras, min_depth=5.0)
    with pytest.raises(ValueError, match="n_pts_per_ray"):
        sampler(cameras, n_pts_per_ray=0)
    with pytest.raises(ValueError, match="mask"):
        sampler(cameras, mask=torch.ones(2, 8, 8))
    with pytest.raises(TypeError, match="FoVPerspectiveCameras"):
        sampler(PerspectiveCameras(R=cameras.R, T=cameras.T))
    with pytest.raises(ValueError, match="explicit projection matrix"):
        sampler(FoVPerspectiveCameras(K=cameras.get_projection_transform().get_matrix().transpose(1, 2)))


def test_rejects_cameras_on_another_device():
    # "meta" stands in for a GPU: the sampler's grid lives there, the cameras on the CPU
    sampler = rays.GridRaysampler(image_width=8, image_height=8, n_pts_per_ray=10, min_depth=0.1, max_depth=3.0).to(
        "meta"
    )
    with pytest.raises(ValueError, match=r"raysampler.to"):
        sampler(random_cameras(1, seed=11))


# --- where do the samples fall? -------------------------------------------------------------


def test_sample_budget_of_the_central_ray_is_a_closed_form():
    """A 1x1 image's only ray is the optical axis: from a camera 2.7 from the origin it is
    inside the box of side 3 for depths 1.2 to 4.2."""
    R, T = look_at_view_transform(2.7, 0.0, 0.0)
    bundle = rays.GridRaysampler(image_width=1, image_height=1, n_pts_per_ray=150, min_depth=0.1, max_depth=3.0)(
        FoVPerspectiveCameras(R=R, T=T)
    )
    depths = torch.linspace(0.1, 3.0, 150)
    in_box = int(((depths >= 1.2) & (depths <= 4.2)).sum())
    everything = hull.Occupancy(torch.ones(8, 8, 8, dtype=torch.bool))
    nothing = hull.Occupancy(torch.zeros(8, 8, 8, dtype=torch.bool))
    budget = rays.sample_budget(bundle, everything)
    assert budget["inside_hull"] == pytest.approx(in_box / 150)
    assert budget["outside_box"] == pytest.approx(1 - in_box / 150)
    assert budget["box_but_carved"] == 0
    assert sum(rays.sample_budget(bundle, nothing).values()) == pytest.approx(1.0)
    assert rays.sample_budget(bundle, nothing)["box_but_carved"] == pytest.approx(in_box / 150)
