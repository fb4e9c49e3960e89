"""``helpers.mesh`` (Chapter 6): marching cubes checked against closed forms, metrics, export."""

import dataclasses
import math

import pytest
import torch

from helpers import mesh as M

N = 128
VOXEL = 3.0 / N


def world_axes(n=N, voxel=VOXEL):
    axis = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * voxel
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return x, y, z


def soft_occupancy(signed, width=VOXEL):
    """A density-like field in [0, 1]: 0.5 exactly on the surface ``signed == 0``, ~1 inside (signed > 0)."""
    return torch.sigmoid(signed / width).float()


@pytest.fixture(scope="module")
def sphere():
    x, y, z = world_axes()
    r = 0.8
    field = soft_occupancy(r - (x**2 + y**2 + z**2).sqrt())
    return r, field, M.extract_mesh(field, 0.5, VOXEL)


@pytest.fixture(scope="module")
def torus():
    x, y, z = world_axes()
    big, small = 0.9, 0.3
    ring = ((x**2 + z**2).sqrt() - big) ** 2 + y**2
    field = soft_occupancy(small - ring.sqrt())
    return big, small, field, M.extract_mesh(field, 0.5, VOXEL)


# --- marching cubes: conventions and closed forms ---------------------------------------------------


def test_pytorch3d_marching_cubes_orders_vertices_x_y_z_along_w_h_d():
    # What extract_mesh relies on, checked on PyTorch3D itself: a blob at index (z, y, x) = (5, 10, 30)
    # of a (20, 30, 40) grid comes back at (30, 10, 5), and local coordinates divide by (W-1, H-1, D-1).
    from pytorch3d.ops.marching_cubes import marching_cubes

    z, y, x = torch.meshgrid(torch.arange(20.0), torch.arange(30.0), torch.arange(40.0), indexing="ij")
    vol = torch.exp(-((x - 30) ** 2 + (y - 10) ** 2 + (z - 5) ** 2) / 8)
    raw, _ = marching_cubes(vol[None], 0.5, return_local_coords=False)
    assert torch.allclose(raw[0].mean(0), torch.tensor([30.0, 10.0, 5.0]), atol=1e-3)
    local, _ = marching_cubes(vol[None], 0.5, return_local_coords=True)
    expected = torch.tensor([30 / 39, 10 / 29, 5 / 19]) * 2 - 1
    assert torch.allclose(local[0].mean(0), expected, atol=1e-4)


def test_extract_mesh_puts_the_surface_at_its_world_position_in_a_non_cubic_grid():
    d, h, w, voxel = 24, 32, 40, 0.05
    axis = lambda n: (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * voxel  # noqa: E731
    z, y, x = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    centre = torch.tensor([0.4, -0.3, 0.1], dtype=torch.float64)  # (x, y, z), deliberately all different
    field = soft_occupancy(0.25 - ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2).sqrt(), voxel)
    mesh = M.extract_mesh(field, 0.5, voxel)
    radii = (mesh.verts_packed().double() - centre).norm(dim=1)
    assert (radii - 0.25).abs().max() < 0.1 * voxel


def test_sphere_area_within_one_percent_at_128(sphere):
    r, _, mesh = sphere
    assert abs(M.area(mesh) / (4 * math.pi * r**2) - 1) < 0.01


def test_sphere_enclosed_volume_and_outward_faces(sphere):
    r, _, mesh = sphere
    volume = M.enclosed_volume(mesh)
    assert volume > 0, "faces must point out of the object"
    assert abs(volume / (4 / 3 * math.pi * r**3) - 1) < 0.01
    # outward: each face normal points away from the centre
    normals = mesh.faces_normals_packed()
    centres = mesh.verts_packed()[mesh.faces_packed()].mean(1)
    assert ((normals * centres).sum(1) > 0).float().mean() > 0.999


def test_vertices_lie_on_the_iso_surface(sphere):
    r, field, mesh = sphere
    verts = mesh.verts_packed()
    # on the true sphere to a small fraction of a voxel ...
    assert ((verts.double().norm(dim=1) - r).abs().max() / VOXEL) < 0.05
    # ... and on the sampled field's level set: vertices sit on grid edges, where trilinear = linear
    assert (M.sample_field(field, verts, VOXEL) - 0.5).abs().max() < 1e-3


def test_torus_is_watertight_with_the_closed_form_area_and_volume(torus):
    big, small, _, mesh = torus
    counts = M.edge_face_counts(mesh.faces_packed())
    assert (counts == 2).all(), f"edges shared by {sorted(set(counts.tolist()))} faces"
    assert M.is_watertight(mesh)
    assert abs(M.area(mesh) / (4 * math.pi**2 * big * small) - 1) < 0.01
    assert abs(M.enclosed_volume(mesh) / (2 * math.pi**2 * big * small**2) - 1) < 0.01


def test_watertight_check_sees_a_hole(torus):
    from pytorch3d.structures import Meshes

    *_, mesh = torus
    holed = Meshes([mesh.verts_packed()], [mesh.faces_packed()[1:]])
    assert not M.is_watertight(holed)
    assert (M.edge_face_counts(holed.faces_packed()) == 1).sum() == 3


def test_a_surface_cut_by_the_grid_border_is_closed():
    field = torch.zeros(16, 16, 16)
    field[:, 4:12, 4:12] = 1.0  # a bar running through the whole depth
    mesh = M.extract_mesh(field, 0.5, 0.1)
    assert M.is_watertight(mesh) and M.enclosed_volume(mesh) > 0


@pytest.mark.parametrize(
    "field, level, message",
    [
        (torch.zeros(8, 8, 8), 0.5, "level"),
        (torch.rand(8, 8, 8), 1.5, "level"),
        (torch.rand(8, 8), 0.5, r"\(D, H, W\)"),
        (torch.full((8, 8, 8), float("nan")), 0.5, "NaN"),
    ],
)
def test_extract_mesh_refuses_bad_input(field, level, message):
    with pytest.raises(ValueError, match=message):
        M.extract_mesh(field, level, 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        M.extract_mesh(torch.rand(8, 8, 8), 0.5, -1.0)


# --- colours ----------------------------------------------------------------------------------------


def test_vertex_colours_follow_the_colour_grid(sphere):
    _r, field, mesh = sphere
    x, _y, _z = world_axes()
    red = ((x + 1.5) / 3).float()  # a colour ramp along x, the other channels constant
    colors = torch.stack([red, torch.full_like(red, 0.25), torch.full_like(red, 0.75)])
    got = M.vertex_colors(field, colors, mesh, VOXEL, inward=0.5)
    inside = mesh.verts_packed() - 0.5 * VOXEL * mesh.verts_normals_packed()
    assert torch.allclose(got[:, 0], (inside[:, 0] + 1.5) / 3, atol=2e-3)
    assert torch.allclose(got[:, 1:], torch.tensor([0.25, 0.75]).expand(len(got), 2), atol=1e-3)


def test_vertex_colours_ignore_the_colour_of_empty_space():
    # Empty voxels hold an untrained grey: a density-weighted read must not blend it into the surface.
    field = torch.zeros(16, 16, 16)
    field[4:12, 4:12, 4:12] = 1.0
    colors = torch.full((3, 16, 16, 16), 0.5)
    colors[:, 4:12, 4:12, 4:12] = torch.tensor([1.0, 0.0, 0.0])[:, None, None, None]
    mesh = M.extract_mesh(field, 0.5, 0.1)
    got = M.vertex_colors(field, colors, mesh, 0.1)
    assert torch.allclose(got, torch.tensor([1.0, 0.0, 0.0]).expand_as(got), atol=1e-4)


# --- metrics against closed forms -------------------------------------------------------------------


def icosphere(radius, level=5):
    from pytorch3d.utils import ico_sphere

    m = ico_sphere(level)
    return m.update_padded(m.verts_padded() * radius)


def test_fscore_of_concentric_spheres():
    # Every point of one sphere is exactly |r1 - r2| from the other; sampled nearest distances can only be
    # longer. So below the gap nothing matches, and well above it everything does.
    inner, outer = icosphere(1.0), icosphere(1.05)
    d_io = M.nearest_distances(M.sample_surface(inner, 8000), M.sample_surface(outer, 8000, seed=1))
    d_oi = M.nearest_distances(M.sample_surface(outer, 8000, seed=2), M.sample_surface(inner, 8000, seed=3))
    assert d_io.min() >= 0.05 - 2e-3 and d_oi.min() >= 0.05 - 2e-3
    assert M.precision_recall_fscore(d_io, d_oi, 0.045) == (0.0, 0.0, 0.0)
    assert M.precision_recall_fscore(d_io, d_oi, 0.09) == (1.0, 1.0, 1.0)


def test_chamfer_of_concentric_spheres_is_twice_the_squared_gap_plus_the_sampling_term():
    # Each way, the squared distance to the nearest sample is the gap squared plus the squared in-surface
    # offset to the nearest of n points spread over area A, whose mean is A / (pi n) (a 2-D Poisson process).
    n, gap = 8000, 0.05
    result = M.compare(icosphere(1 + gap), icosphere(1.0), n_points=n)
    areas = [4 * math.pi * r**2 for r in (1.0, 1 + gap)]
    expected = sum(gap**2 + a / (math.pi * n) for a in areas)
    assert result["chamfer"] == pytest.approx(expected, rel=0.05)
    assert result["chamfer"] > 2 * gap**2  # the sampling term is real: denser samples, smaller Chamfer
    assert result["mean_distance"] == pytest.approx(gap, rel=0.15)


def square(x0, x1, n=60):
    """The rectangle [x0, x1] x [0, 1] in the plane z = 0, as a triangulated grid."""
    from pytorch3d.structures import Meshes

    xs, ys = torch.linspace(x0, x1, n), torch.linspace(0, 1, n)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    verts = torch.stack([gx, gy, torch.zeros_like(gx)], -1).reshape(-1, 3)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return Meshes([verts], [faces])


def test_precision_recall_of_a_reconstruction_twice_too_long():
    # Truth: the unit square. Reconstruction: [0, 2] x [0, 1]. A reconstructed point (x, y) with x > 1 is
    # x - 1 from the truth, so precision = (1 + tau) / 2 exactly, recall = 1, F = 2PR / (P + R).
    tau = 0.2
    pred = M.sample_surface(square(0, 2), 20000)
    true = M.sample_surface(square(0, 1), 20000, seed=1)
    p, r, f = M.precision_recall_fscore(M.nearest_distances(pred, true), M.nearest_distances(true, pred), tau)
    expected_p = (1 + tau) / 2
    assert p == pytest.approx(expected_p, abs=0.015)
    assert r == 1.0
    assert f == pytest.approx(2 * expected_p / (expected_p + 1), abs=0.015)


def test_compare_uses_the_true_mesh_diagonal():
    truth = icosphere(1.0)
    result = M.compare(icosphere(1.0), truth, n_points=2000, fractions=(0.01, 0.02))
    assert result["diagonal"] == pytest.approx(2 * math.sqrt(3), rel=0.01)
    assert result["thresholds"] == pytest.approx([0.01 * result["diagonal"], 0.02 * result["diagonal"]])
    assert result["fscore"][1] > 0.9


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        M.precision_recall_fscore(torch.zeros(3), torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        M.nearest_distances(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(TypeError, match="Meshes"):
        M.area(torch.zeros(3, 3))


# --- export -----------------------------------------------------------------------------------------


def test_export_round_trip(tmp_path, torus):
    *_, mesh = torus
    colors = torch.rand(mesh.verts_packed().shape[0], 3, generator=torch.Generator().manual_seed(0))
    paths = M.export(mesh, colors, tmp_path, "torus")
    obj, obj_colors = M.load(paths["obj"])
    assert obj_colors is None  # PyTorch3D's OBJ writer keeps no vertex colours: that is why there is a PLY
    assert torch.equal(obj.faces_packed(), mesh.faces_packed())
    assert torch.allclose(obj.verts_packed(), mesh.verts_packed(), atol=1e-6)
    ply, ply_colors = M.load(paths["ply"])
    assert torch.equal(ply.faces_packed(), mesh.faces_packed())
    assert torch.equal(ply.verts_packed(), mesh.verts_packed())  # binary float32: exact
    assert (ply_colors - colors).abs().max() <= 0.5 / 255 + 1e-6  # stored as bytes
    assert M.is_watertight(ply)


def test_export_refuses_mismatched_colours(tmp_path, torus):
    *_, mesh = torus
    with pytest.raises(ValueError, match="one RGB triple per vertex"):
        M.export(mesh, torch.rand(3, 3), tmp_path, "bad")


# --- the adapter ------------------------------------------------------------------------------------


def test_grids_reads_chapter_5_volumes():
    from helpers import fast

    grid = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    volume = fast.FastVolume(grid=grid)
    densities, colors, voxel = M.grids(volume)
    assert densities.shape == (1, 8, 8, 8) and colors.shape == (3, 8, 8, 8)
    assert torch.allclose(densities[0], 1 - torch.exp(-torch.nn.functional.softplus(grid[0, 0])))
    assert torch.allclose(colors, torch.sigmoid(grid[0, 1:]))
    assert voxel == pytest.approx(3.0 / 8)


def test_grids_converts_chapter_4_opacities_per_sample_to_per_voxel():
    from helpers import fitting

    model = fitting.VolumeModel(None, (4, 4, 4), voxel_size=0.1)
    with torch.no_grad():
        model.log_densities.fill_(0.0)  # opacity 0.5 per sample
    # two samples per voxel: a voxel lets through 0.5 * 0.5 of the light
    densities, _, _ = M.grids(model, sample_step=0.05)
    assert torch.allclose(densities, torch.full_like(densities, 0.75))
    assert torch.allclose(M.grids(model, sample_step=0.1)[0], torch.full_like(densities, 0.5))
    with pytest.raises(TypeError, match="grids"):
        M.grids(object())


def test_grids_takes_the_sample_step_from_the_models_own_renderer():
    """A fit with other depths than the CPU default (a GPU's) converts with its own spacing."""
    from helpers import fitting

    # 31 samples between depths 1.0 and 4.0: 0.1 apart, as many as the voxel is wide (0.1 = 0.8 / 8)
    model = fitting.VolumeModel(fitting.make_renderer(8, n_pts_per_ray=31, min_depth=1.0, max_depth=4.0), 8, 0.1)
    with torch.no_grad():
        model.log_densities.fill_(0.0)
    densities = M.grids(model)[0]
    assert torch.allclose(densities, torch.full_like(densities, 0.5))
    # and a model made without voxel_size spans the book's cube
    assert fitting.VolumeModel(None, 64).voxel_size == pytest.approx(3.0 / 64)


def test_splat_shows_the_nearer_of_two_spheres_where_they_overlap():
    from helpers import data

    near, far = icosphere(0.3, level=4), icosphere(0.3, level=4)
    far = far.offset_verts(torch.tensor([0.0, 0.0, -0.5]))  # behind `near` seen from azimuth 0 (camera on +Z)
    from pytorch3d.structures import join_meshes_as_scene

    both = join_meshes_as_scene([near, far])
    n = near.verts_packed().shape[0]
    colors = torch.cat([torch.tensor([[1.0, 0, 0]]).expand(n, 3), torch.tensor([[0, 0, 1.0]]).expand(n, 3)])
    camera = data.make_cameras(torch.tensor([0.0]), torch.tensor([0.0]))  # on +Z looking at the origin
    image = M.splat(both, colors, camera, image_size=64)[0]
    centre = image[30:34, 30:34].reshape(-1, 3)
    assert (centre[:, 2] < 0.05).all() and (centre[:, 0] > 0.3).all()  # red: the sphere nearer the camera at +Z
    assert (image[0, 0] == 1).all()  # background


def test_cached_fast_fit_keeps_the_fit_and_an_early_snapshot(tmp_path):
    from helpers import data, fast

    train = data.generate_cow_renders(num_views=40, image_size=128, device="cpu")
    settings = fast.FastSettings(
        n_iter=6, rays_per_step=512, coarse_volume_size=16, coarse_fraction=0.5, volume_size=32
    )
    cache = tmp_path / "fit.pt"
    model, seconds, early = M.cached_fast_fit(train, settings, cache, snapshot=2)
    assert seconds > 0 and cache.is_file()
    assert model.volume_size == 32 and early.volume_size == 16  # the snapshot is from the coarse stage
    again, seconds_again, early_again = M.cached_fast_fit(train, settings, cache, snapshot=2)
    assert seconds_again == 0.0
    assert torch.equal(again.grid, model.grid) and torch.equal(early_again.grid, early.grid)
    assert torch.equal(M.grids(again)[0], M.grids(model)[0])
    changed = dataclasses.replace(settings, seed=1)
    assert M.cached_fast_fit(train, changed, cache)[1] > 0  # other settings: fitted again
    with pytest.raises(ValueError, match="snapshot"):
        M.cached_fast_fit(train, settings, cache, snapshot=6)


def test_coarsen_means_or_maxes_blocks_and_keeps_the_grid_centred():
    field = torch.zeros(4, 4, 4)
    field[0, 0, 0] = 0.8
    mean, voxel = M.coarsen(field, 0.5, 2)
    top, _ = M.coarsen(field, 0.5, 2, reduce="max")
    assert voxel == 1.0 and mean.shape == (2, 2, 2)
    assert (
        mean[0, 0, 0] == pytest.approx(0.1) and top[0, 0, 0] == pytest.approx(0.8) and top.sum() == pytest.approx(0.8)
    )
    # block centres: fine voxels 0 and 1 sit at -0.75 and -0.25, the coarse voxel 0 at -0.5
    assert M.index_to_world(torch.zeros(1, 3), mean.shape, voxel).tolist() == [[-0.5, -0.5, -0.5]]
    with pytest.raises(ValueError, match="factor"):
        M.coarsen(torch.zeros(5, 5, 5), 0.1, 2)
    with pytest.raises(ValueError, match="reduce"):
        M.coarsen(field, 0.1, 2, reduce="median")


def test_grids_default_step_is_the_raysamplers_depth_step():
    """Chapter 4's samples are as far apart as PyTorch3D's raysampler puts them (linspace: n - 1 steps)."""
    from pytorch3d.renderer import FoVPerspectiveCameras, NDCMultinomialRaysampler

    from helpers import fitting

    settings = fitting.FitSettings.for_device("cpu")
    sampler = NDCMultinomialRaysampler(
        image_width=2, image_height=2, n_pts_per_ray=settings.n_pts_per_ray,
        min_depth=settings.min_depth, max_depth=settings.max_depth,
    )  # fmt: skip
    step = sampler(FoVPerspectiveCameras()).lengths[0, 0, 0].diff().mean().item()
    depths = dict(n_pts_per_ray=settings.n_pts_per_ray, min_depth=settings.min_depth, max_depth=settings.max_depth)
    model = fitting.VolumeModel(fitting.make_renderer(2, **depths), (4, 4, 4), voxel_size=0.1)
    with torch.no_grad():
        model.log_densities.fill_(0.0)
    assert torch.allclose(M.grids(model)[0], M.grids(model, sample_step=step)[0], atol=1e-5)


def test_density_at_median_depth_of_a_uniform_grid_is_its_density():
    """Every ray through a grid of one opacity per voxel loses half its light inside it, where it reads that
    opacity; and rays that miss the grid are an error that says so, not an empty result."""
    densities = torch.full((6, 8, 10), 0.3)  # (D, H, W): not a cube
    origins = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.1, -2.0], [3.0, 0.05, 0.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    got = M.density_at_median_depth(densities, 0.1, origins, directions, min_opacity=0.8)
    torch.testing.assert_close(got, torch.full((3,), 0.3))
    with pytest.raises(ValueError, match=r"none of the 3 rays reaches opacity 0\.8"):
        M.density_at_median_depth(densities, 0.1, origins, -directions, min_opacity=0.8)


def test_an_opaque_grid_stops_each_ray_at_its_own_face():
    """Opaque voxels take all the light at a ray's first sample, on the face of the box of voxel centres.
    Its half-size, (n - 1) / 2 voxels, differs per axis: marching from the longest axis's face instead
    would first read a faded value outside the grid."""
    densities = torch.ones(6, 8, 11)  # (D, H, W) = (z, y, x): half-sizes 0.25, 0.35, 0.5
    origins = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.1, -2.0], [3.0, 0.05, 0.0], [0.02, 2.0, 0.03]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    got = M.density_at_median_depth(densities, 0.1, origins, directions, min_opacity=0.8)
    torch.testing.assert_close(got, torch.ones(4))


def test_cached_fast_fit_keeps_no_scores_of_a_training_view_as_held_out(tmp_path):
    """With a snapshot the fit scores one training view to call back; those are not held-out scores."""
    from helpers import data, fast, fitting

    train = data.generate_cow_renders(num_views=8, image_size=32, device="cpu")
    settings = fast.FastSettings(n_iter=4, rays_per_step=256, volume_size=16, coarse_volume_size=0)
    _, _, early = M.cached_fast_fit(train, settings, tmp_path / "fit.pt", snapshot=2)
    saved = fitting.load_volume(tmp_path / "fit.pt").history
    assert early is not None and saved.psnr == saved.eval_iterations == [] and len(saved.losses) == 4
    with pytest.raises(ValueError, match="sample_step"):
        M.grids(fitting.VolumeModel(None, 4))
