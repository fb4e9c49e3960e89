"""Chapter 1's helpers: the cow mesh files, normalisation, angles, rendering and caching."""

import shutil
import urllib.request
from pathlib import Path

import pytest
import torch

from helpers import data

SHARED = Path(data.os.environ.get(data.ENV_MESH_DIR, ""))


@pytest.fixture
def mesh_copy(tmp_path):
    """A writable copy of the verified cow mesh."""
    dst = tmp_path / "cow_mesh"
    shutil.copytree(data.cow_mesh_dir(), dst)
    return dst


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $COW_MESH_DIR, an empty cache, and no network."""
    monkeypatch.delenv(data.ENV_MESH_DIR, raising=False)
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv(data.ENV_OFFLINE, "0")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path / "cache"


def test_checksums_match_the_shared_copy():
    folder = data.cow_mesh_dir()
    for name, expected in data.COW_FILES.items():
        assert data.sha256(folder / name) == expected


def test_env_folder_missing_a_file(monkeypatch, mesh_copy):
    (mesh_copy / "cow.mtl").unlink()
    monkeypatch.setenv(data.ENV_MESH_DIR, str(mesh_copy))
    with pytest.raises(FileNotFoundError, match=r"cow.mtl"):
        data.cow_mesh_dir()


def test_env_folder_that_does_not_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_MESH_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="COW_MESH_DIR"):
        data.cow_mesh_dir()


def test_env_folder_with_corrupt_file_is_reported_not_replaced(monkeypatch, mesh_copy):
    obj = mesh_copy / "cow.obj"
    obj.write_bytes(obj.read_bytes()[:1000])  # truncated
    monkeypatch.setenv(data.ENV_MESH_DIR, str(mesh_copy))
    with pytest.raises(ValueError, match="corrupt"):
        data.cow_mesh_dir()
    assert obj.stat().st_size == 1000  # the user's own copy is never touched


def test_offline_without_copy_names_url_and_variable(isolated, monkeypatch):
    with pytest.raises(RuntimeError) as err:
        data.cow_mesh_dir()
    message = str(err.value)
    assert data.COW_URLS[0] in message and data.ENV_MESH_DIR in message


def test_offline_flag_refuses_to_download(isolated, monkeypatch):
    monkeypatch.setenv(data.ENV_OFFLINE, "1")
    with pytest.raises(FileNotFoundError, match="COW_MESH_DIR"):
        data.cow_mesh_dir()


def _serve(monkeypatch, payloads):
    """Replace urlopen with one that serves ``payloads[url]`` (bytes)."""
    import io

    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        if url not in payloads:
            raise urllib.error.URLError(f"unreachable {url}")
        return io.BytesIO(payloads[url])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def test_download_verifies_and_falls_back(isolated, monkeypatch):
    src = SHARED
    payloads = {}
    for name in data.COW_FILES:
        body = (src / name).read_bytes()
        payloads[data.COW_URLS[0] + name] = body[: len(body) // 2]  # the first mirror truncates
        payloads[data.COW_URLS[1] + name] = body
    calls = _serve(monkeypatch, payloads)
    folder = data.cow_mesh_dir()
    assert folder == isolated / "cow_mesh"
    for name, expected in data.COW_FILES.items():
        assert data.sha256(folder / name) == expected
    assert len(calls) == 6
    assert not list(folder.glob(".*part"))  # no half-written leftovers


def test_corrupt_download_is_never_left_behind(isolated, monkeypatch):
    payloads = {base + name: b"not a mesh" for base in data.COW_URLS for name in data.COW_FILES}
    _serve(monkeypatch, payloads)
    with pytest.raises(RuntimeError, match="checksum"):
        data.cow_mesh_dir()
    assert list((isolated / "cow_mesh").iterdir()) == []


def test_corrupt_cached_file_is_replaced(isolated, monkeypatch):
    folder = isolated / "cow_mesh"
    folder.mkdir(parents=True)
    for name in data.COW_FILES:
        shutil.copy(SHARED / name, folder / name)
    (folder / "cow_texture.png").write_bytes(b"garbage")
    calls = _serve(monkeypatch, {data.COW_URLS[0] + "cow_texture.png": (SHARED / "cow_texture.png").read_bytes()})
    data.cow_mesh_dir()
    assert calls == [data.COW_URLS[0] + "cow_texture.png"]
    assert data.sha256(folder / "cow_texture.png") == data.COW_FILES["cow_texture.png"]


def test_data_dir_without_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cow.obj"):
        data.load_cow_mesh(tmp_path)


def test_unreadable_mesh_raises_value_error(mesh_copy, monkeypatch):
    # A file with the right checksum cannot be wrong, so bypass the checksum to test the parser's error.
    (mesh_copy / "cow.obj").write_text("v 0 0 0\nf 1 2 3 4 5\nthis is not an obj\n")
    monkeypatch.setattr(data, "_check_files", lambda folder, origin: None)
    with pytest.raises(ValueError, match=r"cow.obj"):
        data.load_cow_mesh(mesh_copy)


def test_normalisation_centres_and_scales():
    mesh = data.load_cow_mesh()
    verts = mesh.verts_packed()
    assert torch.allclose(verts.mean(0), torch.zeros(3), atol=1e-5)
    assert verts.abs().max().item() == pytest.approx(1.0, abs=1e-6)


def test_normalize_mesh_on_a_known_box():
    from pytorch3d.structures import Meshes

    verts = torch.tensor([[1.0, 2.0, 3.0], [5.0, 2.0, 3.0], [1.0, 4.0, 3.0], [1.0, 2.0, 5.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    out = data.normalize_mesh(Meshes([verts], [faces])).verts_packed()
    centre = torch.tensor([2.0, 2.5, 3.5])
    assert torch.allclose(out, (verts - centre) / 3.0)  # largest |coordinate| after centring: 5 - 2 = 3


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_invalid_view_counts(n):
    with pytest.raises(ValueError, match="num_views"):
        data.generate_cow_renders(num_views=n)


@pytest.mark.parametrize("size", [0, 7, -1, 16.0])
def test_invalid_image_sizes(size):
    with pytest.raises(ValueError, match="image_size"):
        data.generate_cow_renders(num_views=2, image_size=size)


def test_training_angles_do_not_repeat_the_closing_view():
    elev, azim = data.training_angles(40)
    assert azim.unique().numel() == 40
    assert torch.allclose(azim[1:] - azim[:-1], torch.full((39,), 9.0))
    assert torch.all(elev == 0)
    # a half circle is not closed, so both ends are kept
    _, half = data.training_angles(5, azimuth_range=90)
    assert half[0].item() == 90 and half[-1].item() == 270


def test_heldout_angles_avoid_training_angles():
    _, train = data.training_angles(40)
    elev, azim = data.heldout_angles(40)
    assert len(azim) == 30 and (elev == 25).sum() == 10
    flat = azim[elev == 0]
    gap = (flat[:, None] - train[None, :]).abs().min(dim=1).values
    assert torch.allclose(gap, torch.full_like(gap, 4.5))


def test_render_shapes_silhouettes_and_background():
    views = data.render_cow_views(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 120.0]), image_size=32, device="cpu")
    assert views.images.shape == (2, 32, 32, 3) and views.silhouettes.shape == (2, 32, 32)
    assert set(views.silhouettes.unique().tolist()) == {0.0, 1.0}
    background = views.silhouettes == 0
    assert views.images[background].abs().max() == 0  # black outside the cow
    assert views.images[~background].sum(-1).gt(0).float().mean() > 0.95  # lit inside it
    assert 0.05 < views.silhouettes.mean() < 0.6


def test_silhouette_matches_the_projected_mesh_extent():
    """The silhouette's bounding box agrees with the cow's vertices projected by the camera."""
    mesh = data.load_cow_mesh()
    cams = data.make_cameras(torch.tensor([0.0]), torch.tensor([90.0]))
    _, sil = data.render_views(mesh, cams, image_size=64)
    screen = cams.transform_points_screen(mesh.verts_packed()[None], image_size=((64, 64),))[0]
    rows = sil[0].nonzero()[:, 0]
    cols = sil[0].nonzero()[:, 1]
    assert abs(rows.min().item() - screen[:, 1].min().item()) <= 1.5
    assert abs(rows.max().item() - screen[:, 1].max().item()) <= 1.5
    assert abs(cols.min().item() - screen[:, 0].min().item()) <= 1.5
    assert abs(cols.max().item() - screen[:, 0].max().item()) <= 1.5


def test_cache_is_deterministic_and_keyed(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path))
    a = data.generate_cow_renders(num_views=2, image_size=16, device="cpu")
    files = list((tmp_path / "datasets").glob("*.pt"))
    assert len(files) == 1
    b = data.generate_cow_renders(num_views=2, image_size=16, device="cpu")  # from the cache
    c = data.generate_cow_renders(num_views=2, image_size=16, device="cpu", cache=False)  # rendered again
    assert torch.equal(a.images, b.images) and torch.equal(a.images, c.images)
    data.generate_cow_renders(num_views=2, image_size=24, device="cpu")
    data.generate_cow_renders(num_views=3, image_size=16, device="cpu")
    assert len(list((tmp_path / "datasets").glob("*.pt"))) == 3


def test_damaged_cache_file_is_rendered_again(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_CACHE_DIR, str(tmp_path))
    a = data.generate_cow_renders(num_views=2, image_size=16, device="cpu")
    (path,) = (tmp_path / "datasets").glob("*.pt")
    path.write_bytes(b"junk")
    b = data.generate_cow_renders(num_views=2, image_size=16, device="cpu")
    assert torch.equal(a.images, b.images)


def test_cameras_round_trip():
    views = data.generate_cow_renders(num_views=4, image_size=16, device="cpu")
    cams = views.cameras()
    centers = cams.get_camera_center()
    assert torch.allclose(centers.norm(dim=1), torch.full((4,), data.CAMERA_DIST), atol=1e-5)
    assert torch.allclose(centers[:, 1], torch.zeros(4), atol=1e-5)  # elevation 0
