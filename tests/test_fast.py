"""Chapter 5's fast path: it must give Chapter 3's answer where its shortcuts should not change it."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import data, fast, hull, marching, metrics, rays


@pytest.fixture(scope="module")
def train():
    return data.generate_cow_renders(num_views=40, image_size=128, device="cpu")


@pytest.fixture(scope="module")
def cow_hull(train):
    return hull.carve(train.silhouettes, train.cameras(), volume_size=128)


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
    near, far = rays.ray_box(origins, directions, 1.0)
    t = torch.linspace(0, 6, 6001)
    pts = origins[:, None] + t[None, :, None] * directions[:, None]
    inside = (pts.abs() <= 1.0).all(-1)
    for i in range(len(origins)):
        if inside[i].any():
            ts = t[inside[i]]
            assert abs(ts.min() - near[i]) < 2e-3 and abs(ts.max() - far[i]) < 2e-3
        else:
            assert far[i] <= near[i]


def test_fused_renderer_matches_chapter_3():
    """The fused, clipped renderer equals Chapter 3's sample_volume + alpha_from_sigma + emission_absorption.

    Samples on voxel centres, hull = the whole cube: there interpolating raw values and then
    activating equals activating and then interpolating, so any difference left is a bug.
    """
    volume = _random_volume(16)
    n, voxel = volume.volume_size, volume.voxel_size
    # rays along +X through voxel-centre rows, starting half a voxel before the first centre
    ys = torch.linspace(-volume.half, volume.half, n)
    y, z = torch.meshgrid(ys, ys, indexing="ij")
    origins = torch.stack([torch.full_like(y, -volume.half - voxel / 2), y, z], -1).reshape(-1, 3)
    directions = torch.tensor([[1.0, 0.0, 0.0]]).expand_as(origins)
    near, far = torch.zeros(origins.shape[0]), torch.full((origins.shape[0],), n * voxel)
    rgb, opacity = fast.render_rays(volume, origins, directions, near, far, voxel, hull.Occupancy.full(n))
    # Chapter 3: sigma in inverse world units, sampled with Volumes' conventions, then marched
    lengths = ((torch.arange(n) + 0.5) * voxel).expand(origins.shape[0], n)
    points = origins[:, None] + lengths[..., None] * directions[:, None]
    sigma = F.softplus(volume.grid[:, :1]) / volume.unit
    dens, feats = marching.sample_volume(sigma, torch.sigmoid(volume.grid[:, 1:]), points[None], voxel)
    alpha = marching.alpha_from_sigma(dens[0], lengths, directions)
    ref = marching.emission_absorption(alpha, feats[0], eps=0.0)
    torch.testing.assert_close(rgb, ref[:, :3], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(opacity, ref[:, 3], atol=1e-5, rtol=1e-4)


def test_camera_rays_are_the_grid_raysamplers_normalised(train):
    cameras = train.cameras()[[3, 17]]
    origins, directions = rays.camera_rays(cameras, 24)
    bundle = rays.GridRaysampler(image_width=24, image_height=24, n_pts_per_ray=2, min_depth=1, max_depth=2)(cameras)
    torch.testing.assert_close(origins, bundle.origins)
    torch.testing.assert_close(directions, F.normalize(bundle.directions, dim=-1))
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(2, 24, 24))


def test_fused_equals_separate_lookups():
    volume = _random_volume()
    origins, directions = _rays()
    near, far = rays.ray_box(origins, directions, volume.half)
    out = []
    for fused in (True, False):
        volume.fused = fused
        out.append(fast.render_rays(volume, origins, directions, near, far, 0.5 * volume.voxel_size))
    torch.testing.assert_close(out[0], out[1])


def test_skipping_empty_space_changes_nothing_when_it_is_empty(cow_hull):
    """A volume empty outside the hull renders the same with and without skipping."""
    volume = fast.FastVolume(grid=torch.randn(1, 4, 128, 128, 128, generator=torch.Generator().manual_seed(1)))
    # a sample skipped because its nearest voxel is outside the hull still interpolates from
    # its 8 neighbours: give density only to voxels whose whole 3x3x3 neighbourhood is in the hull
    inside = F.max_pool3d((~cow_hull.grid)[None, None].float(), 3, 1, 1)[0, 0] == 0
    with torch.no_grad():
        volume.grid[0, 0][~inside] = -60.0  # softplus(-60) ~ 1e-26: numerically no density
    cameras = data.make_cameras(torch.tensor([15.0]), torch.tensor([40.0]))
    origins, directions = rays.camera_rays(cameras, 32)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    near, far = rays.ray_box(origins, directions, volume.half)
    step = volume.voxel_size
    plain = fast.render_rays(volume, origins, directions, near, far, step)
    skipped = fast.render_rays(volume, origins, directions, near, far, step, cow_hull)
    torch.testing.assert_close(skipped[0], plain[0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(skipped[1], plain[1], atol=1e-4, rtol=1e-3)


def test_ndc_to_pixel_matches_pytorch3d_projection(train):
    cameras = train.cameras()[[0, 7]]
    points = torch.rand(1, 50, 3) * 2 - 1
    xy, _ = rays.project(cameras, points.expand(2, -1, -1))
    row, col = rays.ndc_to_pixel(xy, 128, 128)
    ndc = cameras.transform_points(points.expand(2, -1, -1))
    torch.testing.assert_close(col, (1 - ndc[..., 0]) * 64 - 0.5, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(row, (1 - ndc[..., 1]) * 64 - 0.5, atol=1e-3, rtol=1e-4)


def test_hull_contains_every_silhouette_ray(train, cow_hull):
    """Every training pixel on the cow has a ray that meets the hull."""
    assert 0.01 < cow_hull.grid.float().mean() < 0.2  # carved, but not to nothing
    kept = fast.prepare_rays(train, cow_hull)
    assert kept.silhouette.sum() == train.silhouettes.sum()
    # and independently of prepare_rays' shortcuts: march silhouette rays of a few views densely
    origins, directions = rays.camera_rays(train.cameras()[[0, 27]], 128)
    sil = train.silhouettes[[0, 27]].reshape(-1) > 0.5
    o, d = origins.reshape(-1, 3)[sil], directions.reshape(-1, 3)[sil]
    t = torch.linspace(1.1, 4.3, 400)  # 0.008 apart, under half a voxel
    hit = torch.zeros(o.shape[0], dtype=torch.bool)
    for s in range(0, o.shape[0], 2048):
        hit[s : s + 2048] = cow_hull.lookup(o[s : s + 2048, None] + t[None, :, None] * d[s : s + 2048, None]).any(1)
    assert hit.all()


def test_hull_excludes_space_outside_a_silhouette(train, cow_hull):
    """A voxel whose centre projects well outside view 0's silhouette is carved away."""
    centres = hull.voxel_centers(128).reshape(1, -1, 3)
    xy, _ = rays.project(train.cameras()[[0]], centres)
    row, col = rays.ndc_to_pixel(xy[0], 128, 128)
    far_out = F.max_pool2d(train.silhouettes[:1, None], 9, 1, 4)[0, 0] < 0.5
    r, c = row.round().long(), col.round().long()
    seen = (r >= 0) & (r < 128) & (c >= 0) & (c < 128)
    outside = torch.zeros_like(seen)
    outside[seen] = far_out[r[seen], c[seen]]
    assert outside.any()
    assert not cow_hull.grid.reshape(-1)[outside].any()


def test_step_aware_density_does_not_depend_on_the_step():
    """Halving the step through a constant medium leaves the opacity unchanged (Beer-Lambert)."""
    grid = torch.zeros(1, 4, 8, 8, 8)
    grid[:, 0] = -6.0  # optical depth about 0.2 over the 2 units crossed: far from saturation
    volume = fast.FastVolume(grid=grid, unit=0.02)
    origins = torch.tensor([[0.0, 0.0, -3.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0]])
    near, far = torch.tensor([2.0]), torch.tensor([4.0])
    ops = [fast.render_rays(volume, origins, directions, near, far, step)[1] for step in (0.1, 0.05, 0.01)]
    expected = 1 - math.exp(-F.softplus(torch.tensor(-6.0)).item() * 2.0 / 0.02)
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
            (p**3).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b)


def test_fast_fit_beats_an_untrained_volume(train):
    heldout = data.generate_heldout_renders(device="cpu")
    small = data.CowViews(*(getattr(heldout, k)[:4] for k in data.CowViews.__dataclass_fields__))
    settings = fast.FastSettings(
        n_iter=60, rays_per_step=4096, coarse_volume_size=32, coarse_fraction=0.5, volume_size=64, eval_every=60, lr=0.1
    )
    model, history = fast.fit(train, small, settings)
    untrained = fast.FastVolume(64, occupancy=model.occupancy, unit=model.unit)
    base = metrics.evaluate(untrained, small)
    # the untrained volume is a faint, uniform fog filling the hull: black images (about
    # 20 dB on this dark background) and the hull's blurry silhouette
    assert history.psnr[-1] > base["psnr"] + 4.0
    assert history.iou[-1] > base["iou"] + 0.3
    assert history.iou[-1] > 0.85
    assert len(history.seconds) == settings.n_iter


def test_each_stage_renders_with_a_hull_carved_at_its_own_size(train):
    """Without a given hull the coarse stage gets one carved at the coarse size, the fine stage the fine one."""
    settings = fast.FastSettings(
        n_iter=4, rays_per_step=256, coarse_volume_size=16, coarse_fraction=0.5, volume_size=32, eval_every=1
    )
    seen = {}

    def spy(it, volume, result):  # called at every evaluation, here after each iteration
        seen[it] = (volume.volume_size, volume.occupancy.volume_size)

    heldout = data.CowViews(*(getattr(train, k)[:1] for k in data.CowViews.__dataclass_fields__))
    model, _ = fast.fit(train, heldout, settings, callback=spy)
    assert seen == {1: (16, 16), 2: (16, 16), 3: (32, 32), 4: (32, 32)}
    fine = hull.carve(train.silhouettes, train.cameras(), 32)
    assert torch.equal(model.occupancy.grid, fine.grid)
    # carved on its own grid, the coarse hull must still keep every fine voxel centre that all
    # silhouettes cover (its dilation is what makes that true: an undilated 16^3 hull loses some)
    kept = hull.voxel_centers(32)[hull.carve(train.silhouettes, train.cameras(), 32, dilate=0).grid]
    assert hull.carve(train.silhouettes, train.cameras(), 16).lookup(kept).all()
    assert not hull.carve(train.silhouettes, train.cameras(), 16, dilate=0).lookup(kept).all()
    # a given hull is used as it is, in both stages
    seen.clear()
    fast.fit(train, heldout, settings, callback=spy, occupancy=fine)
    assert seen == {1: (16, 32), 2: (16, 32), 3: (32, 32), 4: (32, 32)}


def test_upsample_keeps_the_field_and_can_take_a_new_hull():
    """A field linear in x, y, z is the same field after upsampling: trilinear lookups reproduce it exactly."""
    centres = hull.voxel_centers(8)  # (z, y, x, 3) world coordinates
    grid = torch.einsum("zyxc,kc->kzyx", centres, torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.2, 0.0]]))
    volume = fast.FastVolume(grid=torch.cat([grid, grid[:1] * 0 + 0.3, grid[:1] * 0 - 0.7])[None])
    finer = volume.upsample(16)
    # inside the coarse centres, a fine voxel's width away from them (beyond, the border value holds)
    points = (torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * (volume.half - finer.voxel_size)
    for a, b in zip(finer.sample(points), volume.sample(points), strict=True):
        torch.testing.assert_close(a, b)
    occupancy = hull.Occupancy.full(15)
    assert finer.occupancy is None and volume.upsample(15, occupancy).occupancy is occupancy


def test_bad_settings_are_rejected(train):
    for bad, message in [
        (dict(density="relu"), "density"),
        (dict(n_iter=0), "n_iter"),
        (dict(random_rays=False, rays_per_step=5), "rays_per_step"),
        (dict(lr=float("nan")), "lr"),
    ]:
        with pytest.raises(ValueError, match=message):
            fast.fit(train, settings=fast.FastSettings(**bad))


def test_densities_are_the_opacity_the_renderer_sees():
    """Per voxel: 1 - exp(-softplus(raw)) on the final grid, and 0 where the hull makes the renderer skip."""
    grid = torch.zeros(8, 8, 8, dtype=torch.bool)
    grid[2:5, 3:6, 1:4] = True
    volume = _random_volume(8)
    expected = 1 - torch.exp(-F.softplus(volume.grid[0, :1]))
    torch.testing.assert_close(volume.densities, expected)
    volume.occupancy = hull.Occupancy(grid)
    torch.testing.assert_close(volume.densities[0][grid], expected[0][grid])
    assert (volume.densities[0][~grid] == 0).all()
    # a ray through an empty voxel only (no hull voxel on its way) renders nothing
    o, d = torch.tensor([[1.3, 1.3, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    near, far = rays.ray_box(o, d, volume.half)
    assert fast.render_rays(volume, o, d, near, far, volume.voxel_size, volume.occupancy)[1].item() == 0


def test_footprint_of_one_voxel_is_its_projected_pixel_grown_by_the_margin(train):
    """Per view, the pixel that rays.project (one camera at a time) gives the voxel's centre, then
    ``margin`` pixels around it: the views are projected several at a time, and must not mix."""
    grid = torch.zeros(16, 16, 16, dtype=torch.bool)
    grid[9, 5, 11] = True  # [z, y, x], off-centre so every view sees it at another pixel
    occupancy = hull.Occupancy(grid)
    cameras = train.cameras()[[0, 7, 13, 26, 39]]
    margin, size = 2, 64
    got = fast.footprint(occupancy, cameras, size, margin=margin)
    centre = hull.voxel_centers(16)[9, 5, 11]
    pixels = set()
    for i in range(len(cameras)):
        xy, depth = rays.project(cameras[i], centre[None, None])
        row, col = (round(c.item()) for c in rays.ndc_to_pixel(xy[0, 0], size, size))
        want = torch.zeros(size, size, dtype=torch.bool)
        want[max(row - margin, 0) : row + margin + 1, max(col - margin, 0) : col + margin + 1] = True
        assert depth.item() > 0 and torch.equal(got[i], want), f"view {i}"
        pixels.add((row, col))
    assert len(pixels) >= 4  # the views see the voxel at different pixels, so a mix-up would show


def _meets_and_footprint(occupancy, cameras, size):
    origins, directions = (t.reshape(-1, 3) for t in rays.camera_rays(cameras, size))
    near, far = fast.clip_to_hull(origins, directions, occupancy)
    return (far > near).reshape(len(cameras), size, size), fast.footprint(occupancy, cameras, size)


@pytest.mark.parametrize("volume_size", [16, 64])
def test_footprint_holds_every_pixel_whose_ray_meets_the_hull(train, volume_size):
    """Conservative: a pixel whose ray meets an occupied voxel (marched voxel by voxel) is in the footprint,
    also where a voxel covers several pixels (16^3: a fixed margin of a few pixels would miss some)."""
    cameras = train.cameras()[list(range(0, 40, 8))]
    occupancy = hull.carve(train.silhouettes, train.cameras(), volume_size=volume_size)
    meets, got = _meets_and_footprint(occupancy, cameras, 128)
    assert meets.any() and not (meets & ~got).any()
    assert got.sum() < 2 * meets.sum()  # and it stays a footprint, not the whole image


def test_footprint_of_several_views_per_call_matches_one_view_at_a_time(train):
    """A ball in a 128^3 grid is projected four views per call: the views of a call must not mix."""
    ball = hull.voxel_centers(128).norm(dim=-1) < 0.9
    occupancy = hull.Occupancy(ball)
    cameras = train.cameras()[[0, 9, 17, 25, 33]]
    together = fast.footprint(occupancy, cameras, 32, margin=1)
    apart = torch.cat([fast.footprint(occupancy, cameras[[i]], 32, margin=1) for i in range(len(cameras))])
    assert torch.equal(together, apart) and together.any() and not together.all()


def test_footprint_holds_the_border_pixels_of_a_cell_whose_centre_is_outside_the_view():
    """A narrow view (20 degrees) sees the edge of a cell whose centre projects outside the image."""
    from pytorch3d.renderer import FoVPerspectiveCameras, look_at_view_transform

    grid = torch.zeros(8, 8, 8, dtype=torch.bool)
    grid[4, 4, 5] = True  # [z, y, x]: centre x = 0.5625, cell from 0.375 to 0.75
    R, T = look_at_view_transform(dist=2.7, elev=0.0, azim=0.0)
    centre = hull.voxel_centers(8)[4, 4, 5]
    cameras = FoVPerspectiveCameras(R=R, T=T, fov=20.0)
    xy, _ = rays.project(cameras, centre[None, None])
    assert xy.abs().max() > 1  # the centre is outside the image
    meets, got = _meets_and_footprint(hull.Occupancy(grid), cameras, 48)
    assert meets.any() and not (meets & ~got).any()


def test_footprint_of_a_camera_inside_the_grid_leaves_out_no_pixel():
    from pytorch3d.renderer import FoVPerspectiveCameras, look_at_view_transform

    occupancy = hull.Occupancy(torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.3)
    R, T = look_at_view_transform(dist=0.3, elev=torch.tensor([20.0, -35.0]), azim=torch.tensor([30.0, 200.0]))
    meets, got = _meets_and_footprint(occupancy, FoVPerspectiveCameras(R=R, T=T), 48)
    assert meets.any() and not (meets & ~got).any()


def test_footprint_of_an_empty_hull_is_empty(train):
    empty = hull.Occupancy(torch.zeros(8, 8, 8, dtype=torch.bool))
    assert not fast.footprint(empty, train.cameras()[[0, 1]], 32).any()


@pytest.mark.parametrize("size, volume_size", [(32, 16), (24, 16), (16, 40)])
def test_active_voxels_hold_every_voxel_a_hull_sample_interpolates_from(size, volume_size):
    """Shrinking or growing a thin, scattered hull: every grid centre that a trilinear lookup at a point
    inside an occupied cell reads from is active (sampling the hull instead of pooling it misses some)."""
    gen = torch.Generator().manual_seed(1)
    occupancy = hull.Occupancy(torch.rand((size,) * 3, generator=gen) < 0.02)
    cells = hull.voxel_centers(size)[occupancy.grid]  # (K, 3) as (x, y, z)
    points = cells[:, None] + (torch.rand(cells.shape[0], 8, 3, generator=gen) - 0.5) * occupancy.voxel_size
    # the lookup of FastVolume.sample: centres at (i - (n - 1) / 2) * extent / n, border-clamped
    pos = points.reshape(-1, 3) / (occupancy.extent / volume_size) + (volume_size - 1) / 2
    read = set()
    for corner in torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * 3):  # the 8 corners, as (x, y, z)
        x, y, z = (pos.floor() + corner).clamp(0, volume_size - 1).long().unbind(-1)
        read |= set(((z * volume_size + y) * volume_size + x).tolist())
    active = set(fast.active_voxels(occupancy, volume_size).tolist())
    assert read <= active, f"{len(read - active)} of {len(read)} voxels read are not active"
    # and no more: an active centre is within a cell that overlaps an occupied one, or its neighbour
    centres = hull.voxel_centers(volume_size).reshape(-1, 3)[sorted(active)]
    reach = 1.5 * occupancy.extent / volume_size + 0.5 * occupancy.voxel_size
    assert ((centres[:, None] - cells[None]).abs().amax(-1).amin(1) <= reach + 1e-5).all()


def test_fast_fit_checks_what_it_is_given_before_it_starts(train):
    settings = fast.FastSettings(n_iter=2, rays_per_step=256, volume_size=16, coarse_volume_size=0, eval_every=0)
    small = data.generate_cow_renders(num_views=2, image_size=32, device="cpu")
    with pytest.raises(ValueError, match=r"heldout images must be as large.*\(32, 32\) against \(128, 128\)"):
        fast.fit(train, small, settings)
    occupancy = hull.Occupancy.full(16)
    with pytest.raises(ValueError, match="hull=False"):
        fast.fit(train, None, fast.FastSettings(**{**vars(settings), "hull": False}), occupancy=occupancy)
    # eval_every=0: scored once, at the end
    heldout = data.CowViews(*(getattr(train, k)[:1] for k in data.CowViews.__dataclass_fields__))
    _, history = fast.fit(train, heldout, settings)
    assert history.eval_iterations == [2]
