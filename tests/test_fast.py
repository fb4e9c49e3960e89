"""Chapter 5's fast path: it must give the plain answer where its shortcuts should not change it."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import data, fast, fitting


@pytest.fixture(scope="module")
def train():
    return data.generate_cow_renders(num_views=40, image_size=128, device="cpu")


@pytest.fixture(scope="module")
def hull(train):
    return fast.carve_hull(train, resolution=128)


def _random_volume(resolution=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(1, 4, resolution, resolution, resolution, generator=gen)
    grid[:, 0] = grid[:, 0] * 2 - 1
    return fast.FastVolume(grid=grid)


def _rays(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=gen)
    origins = 2.7 * origins / origins.norm(dim=1, keepdim=True)
    targets = torch.rand(n, 3, generator=gen) - 0.5
    return origins, F.normalize(targets - origins, dim=1)


def test_ray_box_matches_dense_marching():
    origins, directions = _rays(200)
    near, far = fast.ray_box(origins, directions, 1.0)
    t = torch.linspace(0, 6, 6001)
    pts = origins[:, None] + t[None, :, None] * directions[:, None]
    inside = (pts.abs() <= 1.0).all(-1)
    for i in range(len(origins)):
        if inside[i].any():
            ts = t[inside[i]]
            assert abs(ts.min() - near[i]) < 2e-3 and abs(ts.max() - far[i]) < 2e-3
        else:
            assert far[i] <= near[i]


def test_renderer_matches_plain_one_on_voxel_centres():
    """Samples on voxel centres, hull = whole box: the fused, clipped renderer equals the plain one.

    On voxel centres interpolating raw values then activating equals activating then
    interpolating, so the only differences left would be bugs.
    """
    volume = _random_volume(16)
    r = volume.resolution
    voxel = 2 * volume.half / (r - 1)
    # rays along +X through voxel-centre rows, starting at the first centre
    ys = torch.linspace(-volume.half, volume.half, r)
    y, z = torch.meshgrid(ys, ys, indexing="ij")
    origins = torch.stack([torch.full_like(y, -volume.half - voxel / 2), y, z], -1).reshape(-1, 3)
    directions = torch.tensor([[1.0, 0.0, 0.0]]).expand_as(origins)
    near = torch.zeros(origins.shape[0])
    far = torch.full_like(near, r * voxel)
    # with the whole box as the "hull": clipping and masking must change nothing
    rgb, opacity = fast.render_rays(volume, origins, directions, near, far, voxel, fast.Occupancy.full(r))
    t = (torch.arange(r) + 0.5)[None].expand(origins.shape[0], r) * voxel
    dens = F.softplus(volume.grid[:, :1]) * voxel / fast.FastVolume.unit
    ref_rgb, ref_opacity = fast.render_plain(dens, torch.sigmoid(volume.grid[:, 1:]), origins, directions, t, volume.half)
    torch.testing.assert_close(rgb, ref_rgb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(opacity, ref_opacity, atol=1e-5, rtol=1e-4)


def test_fused_equals_separate_lookups():
    volume = _random_volume()
    origins, directions = _rays()
    near, far = fast.ray_box(origins, directions, volume.half)
    out = []
    for fused in (True, False):
        volume.fused = fused
        out.append(fast.render_rays(volume, origins, directions, near, far, 0.5 * volume.voxel))
    torch.testing.assert_close(out[0], out[1])


def test_skipping_empty_space_changes_nothing_when_it_is_empty(hull):
    """A volume empty outside the hull renders the same with and without skipping."""
    volume = fast.FastVolume(grid=torch.randn(1, 4, 128, 128, 128, generator=torch.Generator().manual_seed(1)))
    # a sample skipped because its nearest voxel is outside the hull still interpolates from
    # its 8 neighbours: give density only to voxels whose whole 3x3x3 neighbourhood is in the hull
    inside = F.max_pool3d((~hull.grid)[None, None].float(), 3, 1, 1)[0, 0] == 0
    with torch.no_grad():
        volume.grid[0, 0][~inside] = -60.0  # softplus(-60) ~ 1e-26: numerically no density
    cameras = data.make_cameras(torch.tensor([15.0]), torch.tensor([40.0]))
    origins, directions = fast.camera_rays(cameras, 32)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    near, far = fast.ray_box(origins, directions, volume.half)
    step = volume.voxel
    plain = fast.render_rays(volume, origins, directions, near, far, step)
    skipped = fast.render_rays(volume, origins, directions, near, far, step, hull)
    torch.testing.assert_close(skipped[0], plain[0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(skipped[1], plain[1], atol=1e-4, rtol=1e-3)


def test_projection_matches_pytorch3d(train):
    cameras = train.cameras()[[0, 7]]
    points = torch.rand(50, 3) * 2 - 1
    row, col = fast.project(cameras, points, 128)
    ndc = cameras.transform_points(points)
    torch.testing.assert_close(col, (1 - ndc[..., 0]) * 64 - 0.5, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(row, (1 - ndc[..., 1]) * 64 - 0.5, atol=1e-3, rtol=1e-4)


def test_hull_contains_every_silhouette_ray(train, hull):
    """Every training pixel on the cow has a ray that meets the hull."""
    assert 0.01 < hull.grid.float().mean() < 0.2  # carved, but not to nothing
    rays = fast.prepare_rays(train, hull)
    assert rays.silhouette.sum() == train.silhouettes.sum()
    # and independently of prepare_rays' shortcuts: march silhouette rays of a few views densely
    origins, directions = fast.camera_rays(train.cameras()[[0, 27]], 128)
    sil = train.silhouettes[[0, 27]].reshape(-1) > 0.5
    o, d = origins.reshape(-1, 3)[sil], directions.reshape(-1, 3)[sil]
    t = torch.linspace(1.1, 4.3, 400)  # 0.008 apart, under half a voxel
    hit = torch.zeros(o.shape[0], dtype=torch.bool)
    for s in range(0, o.shape[0], 2048):
        hit[s:s + 2048] = hull.lookup(o[s:s + 2048, None] + t[None, :, None] * d[s:s + 2048, None]).any(1)
    assert hit.all()


def test_hull_excludes_space_outside_a_silhouette(train, hull):
    """A voxel whose centre projects well outside view 0's silhouette is carved away."""
    centres = fast.voxel_centres(128, hull.half).reshape(-1, 3)
    row, col = fast.project(train.cameras()[[0]], centres, 128)
    far_out = F.max_pool2d(train.silhouettes[:1, None], 9, 1, 4)[0, 0] < 0.5
    r, c = row[0].round().long(), col[0].round().long()
    seen = (r >= 0) & (r < 128) & (c >= 0) & (c < 128)
    outside = torch.zeros_like(seen)
    outside[seen] = far_out[r[seen], c[seen]]
    assert outside.any()
    assert not hull.grid.reshape(-1)[outside].any()


def test_step_aware_density_does_not_depend_on_the_step():
    """Halving the step through a constant medium leaves the opacity unchanged (Beer-Lambert)."""
    grid = torch.zeros(1, 4, 8, 8, 8)
    grid[:, 0] = -6.0  # optical depth about 0.2 over the 2 units crossed: far from saturation
    volume = fast.FastVolume(grid=grid)
    origins = torch.tensor([[0.0, 0.0, -3.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0]])
    near, far = torch.tensor([2.0]), torch.tensor([4.0])
    ops = [fast.render_rays(volume, origins, directions, near, far, step)[1] for step in (0.1, 0.05, 0.01)]
    expected = 1 - math.exp(-F.softplus(torch.tensor(-6.0)).item() * 2.0 / fast.FastVolume.unit)
    assert 0.05 < expected < 0.5  # a real test only away from saturation
    for op in ops:
        assert abs(op.item() - expected) < 1e-5


def test_masked_adam_matches_adam_on_active_voxels():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(1, 2, 4, 4, 4))
    b = torch.nn.Parameter(a.detach().clone())
    active = torch.arange(64)  # all voxels: must equal torch's Adam
    opt_a = fast.MaskedAdam(a, active, lr=0.1)
    opt_b = torch.optim.Adam([b], lr=0.1)
    for _ in range(5):
        for p, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            (p ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b)


def test_fast_fit_beats_an_untrained_volume(train):
    heldout = data.generate_heldout_renders(device="cpu")
    small = data.CowViews(*(getattr(heldout, k)[:4] for k in data.CowViews.__dataclass_fields__))
    settings = fast.FastSettings(n_iter=60, rays_per_step=4096, coarse_size=32, coarse_fraction=0.5,
                                 volume_size=64, hull_resolution=64, eval_every=60, lr=0.1)
    renderer, history = fast.fit(train, small, settings)
    untrained = fast.FastRenderer(fast.FastVolume(64), renderer.occupancy, 128)
    base = fitting.evaluate(untrained, small)
    # the untrained volume is a faint, uniform fog filling the hull: black images (about
    # 20 dB on this dark background) and the hull's blurry silhouette
    assert history.psnr[-1] > base["psnr"] + 4.0
    assert history.iou[-1] > base["iou"] + 0.3
    assert history.iou[-1] > 0.85
    assert len(history.seconds) == settings.n_iter


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="density"):
        fast.FastSettings(density="relu")
    with pytest.raises(ValueError, match="n_iter"):
        fast.FastSettings(n_iter=0)
