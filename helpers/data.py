"""Chapter 1: the cow mesh, cameras and multi-view dataset; world +Y is up, the cow faces -Z, images row 0 on top."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checks
from .metrics import clock

#: The three files of Keenan Crane's "Spot" (public domain) and their sha256 sums.
COW_FILES = {
    "cow.obj": "62337f06b4aa4f2eaa95f854553a02039d853365a78b0a581c26ece5691a6d99",
    "cow.mtl": "ce6398d52486f81f2c329b1683ad4fedce970471aa36e589e05c5177432db6cb",
    "cow_texture.png": "cddabbae52a666173e7953e238b88340d285044dc20b36f8ed3f1a41db534fa5",
}
#: Tried in order: PyTorch3D's repository at the commit that added the files (the checksums' source), then its host.
COW_URLS = (
    "https://raw.githubusercontent.com/facebookresearch/pytorch3d/"
    "dbf06b504b525c7f6680c5709b63df6413616d2e/docs/tutorials/data/cow_mesh/",
    "https://dl.fbaipublicfiles.com/pytorch3d/data/cow_mesh/",
)
ENV_MESH_DIR = "COW_MESH_DIR"  # a folder holding the three files, used instead of downloading
ENV_CACHE_DIR = "VOLRENDER_CACHE"  # downloads and rendered datasets (default ~/.cache/volrender-book)
ENV_OFFLINE = "VOLRENDER_OFFLINE"  # 1 forbids any network access (the tests set it)

DATASET_VERSION = 2  # bump when the rendering changes what it produces, so old caches are ignored
CACHE_FORMAT = 1  # bump when a cached dataset file's layout changes: older files are rendered again
CAMERA_DIST = 2.7


def pick_device() -> torch.device:
    """``cuda:0`` when a GPU is available, otherwise the CPU, saying why an unusable GPU is unused. Defined in §1.1."""
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    from .colab import unusable_gpu_note

    note = unusable_gpu_note()
    if note:
        print(note)
    return torch.device("cpu")


def cache_dir() -> Path:
    """Where downloads, rendered datasets and fits are kept. Defined in §1.4.

    ``$VOLRENDER_CACHE``, else ``~/.cache/volrender-book``; created when missing."""
    path = Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "volrender-book")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"Cannot use {path} as the cache ({exc}). Set {ENV_CACHE_DIR} to a writable folder.") from exc
    return path


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (the mesh's checksums). Defined in §1.1."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_files(folder: Path, origin: str) -> None:
    """Raise if ``folder`` lacks one of the cow files or one has the wrong checksum."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{origin} {folder} is not a folder; expected one holding {', '.join(COW_FILES)}.")
    missing = [name for name in COW_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{origin} {folder} lacks {', '.join(missing)}; expected {', '.join(COW_FILES)}.")
    for name, expected in COW_FILES.items():
        got = sha256(folder / name)
        if got != expected:
            raise ValueError(f"{folder / name} is corrupt (sha256 {got}, expected {expected}); replace or delete it.")


def _download(name: str, dest: Path) -> None:
    """Fetch one file into ``dest``, trusting it only once its checksum matches."""
    errors = []
    for base in COW_URLS:
        url = base + name
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
            got = sha256(Path(tmp))
            if got != COW_FILES[name]:
                errors.append(f"{url}: checksum {got} does not match {COW_FILES[name]} (truncated or altered)")
                continue
            os.replace(tmp, dest)  # atomic: a half-written file never has the real name
            return
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise RuntimeError(
        f"Could not download {name}:\n  " + "\n  ".join(errors) + f"\nOffline? Download the cow mesh from "
        f"{COW_URLS[0]} by hand and set {ENV_MESH_DIR} to the folder holding {', '.join(COW_FILES)}."
    )


def cow_mesh_dir() -> Path:
    """A folder of verified cow files: ``$COW_MESH_DIR`` (never replaced), else downloaded once. Defined in §1.1."""
    if os.environ.get(ENV_MESH_DIR):
        folder = Path(os.environ[ENV_MESH_DIR]).expanduser()
        _check_files(folder, f"${ENV_MESH_DIR} =")
        return folder
    folder = cache_dir() / "cow_mesh"
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in COW_FILES.items():
        path = folder / name
        if path.is_file() and sha256(path) == expected:
            continue
        if path.exists():
            path.unlink()  # corrupt: never leave it where the next run would trust it
        msg = f"{path} is missing and ${ENV_OFFLINE}=1 forbids a download; set {ENV_MESH_DIR} to the mesh's folder."
        checks.require(os.environ.get(ENV_OFFLINE) != "1", msg, FileNotFoundError)
        _download(name, path)
    return folder


def load_cow_mesh(data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu"):
    """The textured cow as a one-mesh ``Meshes`` on ``device``, normalised into [-1, 1]^3. Defined in §1.1."""
    from pytorch3d.io import load_objs_as_meshes

    device = checks.device("device", device)
    folder = Path(data_dir) if data_dir is not None else cow_mesh_dir()
    if data_dir is not None:
        _check_files(folder, "data_dir")
    obj = folder / "cow.obj"
    try:
        mesh = load_objs_as_meshes([str(obj)], device=device)
    except Exception as exc:  # pytorch3d raises several types for a bad file
        raise ValueError(f"Could not read {obj} as a textured Wavefront OBJ mesh: {exc}") from exc
    if mesh.faces_packed().shape[0] == 0 or mesh.textures is None:
        raise ValueError(f"{obj} holds no textured triangles; expected the cow mesh with its material and texture.")
    return normalize_mesh(mesh)


def normalize_mesh(mesh):
    """Centre ``mesh`` on its vertex mean and scale its largest |coordinate| to 1 (in place). Defined in §1.1."""
    if not hasattr(mesh, "verts_packed"):
        raise TypeError(f"mesh must be a pytorch3d Meshes, got {type(mesh).__name__}. Load it with load_cow_mesh.")
    verts = mesh.verts_packed()
    checks.require(verts.shape[0] > 0, "The mesh has no vertices; expected the cow mesh.")
    center = verts.mean(0)
    scale = (verts - center).abs().max()
    if not torch.isfinite(scale) or scale <= 0:
        raise ValueError(f"Cannot normalise a mesh whose vertices span {float(scale)}; expected a mesh with extent.")
    mesh.offset_verts_(-center.expand(verts.shape[0], 3))
    mesh.scale_verts_(1.0 / float(scale))
    return mesh


def make_cameras(elev, azim, dist: float = CAMERA_DIST, device="cpu"):
    """Cameras at ``dist`` looking at the origin; ``elev``, ``azim`` 1-D in degrees, azim 0 on +Z. Defined in §1.2."""
    from pytorch3d.renderer import FoVPerspectiveCameras, look_at_view_transform

    elev, azim = _angles(elev, azim)
    dist = checks.number("dist", dist, 0.0, low_open=True)
    R, T = look_at_view_transform(dist=dist, elev=elev, azim=azim)
    return FoVPerspectiveCameras(device=device, R=R, T=T)


def _angles(elev, azim) -> list[torch.Tensor]:
    """``elev`` and ``azim`` (degrees) as finite 1-D tensors of one length (or one of them of length 1)."""
    out = []
    for name, angles in (("elev", elev), ("azim", azim)):
        if not isinstance(angles, torch.Tensor):
            try:
                angles = torch.as_tensor(angles, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(f"{name} must be angles in degrees (a 1-D tensor or list), got {angles!r}.") from exc
        out.append(checks.shape(name, angles, "(N,) in degrees", angles.dim() <= 1, "pass finite angles").reshape(-1))
    if len(out[0]) != len(out[1]) and 1 not in (len(out[0]), len(out[1])):
        raise ValueError(f"elev and azim must have one angle per view, got {len(out[0])} and {len(out[1])} angles.")
    return out


def camera_centers(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """World positions ``(N, 3)`` of cameras ``R`` ``(N, 3, 3)``, ``T`` ``(N, 3)``: ``-T @ R^T``. Defined in §1.2."""
    checks.shape("R", R, "(N, 3, 3)", lambda t: t.dim() == 3 and t.shape[1:] == (3, 3))
    checks.shape("T", T, f"(N, 3) with N = {len(R)} rotations", lambda t: t.shape == (len(R), 3))
    return -(T[:, None, :] @ R.transpose(1, 2))[:, 0, :]


def render_views(mesh, cameras, image_size: int = 128):
    """``images`` ``(N, H, W, 3)`` and silhouettes ``(N, H, W)`` (from ``pix_to_face``: one pass). Defined in §1.3."""
    from pytorch3d.renderer import BlendParams, MeshRasterizer, PointLights, RasterizationSettings, SoftPhongShader

    image_size = checks.integer("image_size", image_size)
    device = cameras.device
    lights = PointLights(device=device, location=[[0.0, 0.0, -3.0]])  # in front of the cow
    settings = RasterizationSettings(image_size=image_size, blur_radius=0.0, faces_per_pixel=1)
    rasterizer = MeshRasterizer(cameras=cameras, raster_settings=settings)
    blend = BlendParams(sigma=1e-4, gamma=1e-4, background_color=(0.0, 0.0, 0.0))
    shader = SoftPhongShader(device=device, cameras=cameras, lights=lights, blend_params=blend)
    meshes = mesh.extend(len(cameras))
    fragments = rasterizer(meshes)
    images = shader(fragments, meshes, cameras=cameras, lights=lights)[..., :3]
    silhouettes = (fragments.pix_to_face[..., 0] >= 0).float()
    return images.clamp(0.0, 1.0), silhouettes


@dataclass
class CowViews:
    """Rendered views: ``images`` ``(N, H, W, 3)``, 0/1 ``silhouettes`` ``(N, H, W)``, cameras. Defined in §1.4."""

    R: torch.Tensor
    T: torch.Tensor
    images: torch.Tensor
    silhouettes: torch.Tensor
    elevations: torch.Tensor  # (N,) in degrees
    azimuths: torch.Tensor  # (N,) in degrees

    def __len__(self) -> int:
        return self.images.shape[0]

    def cameras(self, device=None):
        """The views' ``FoVPerspectiveCameras`` (PyTorch3D's defaults: fov 60°, znear 1)."""
        from pytorch3d.renderer import FoVPerspectiveCameras

        device = device or self.images.device
        return FoVPerspectiveCameras(device=device, R=self.R.to(device), T=self.T.to(device))

    def to(self, device) -> CowViews:
        return CowViews(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))


def training_angles(num_views: int = 40, azimuth_range: float = 180.0, elevation: float = 0.0):
    """Training elevations, azimuths (degrees) over ``180 +- azimuth_range``, no end point twice. Defined in §1.2."""
    num_views = checks.integer("num_views", num_views)
    azimuth_range = checks.number("azimuth_range (degrees either side of 180)", azimuth_range, 0.0, 180.0)
    elevation = checks.number("elevation (degrees)", elevation, -90.0, 90.0)
    closed = 2 * azimuth_range >= 360.0
    azim = torch.linspace(-azimuth_range, azimuth_range, num_views + int(closed))[:num_views] + 180.0
    return torch.full((num_views,), float(elevation)), azim


def heldout_angles(num_views: int = 40, n_between: int = 20, n_elevated: int = 10, elevation: float = 25.0):
    """Held-out angles: ``n_between`` between training azimuths, ``n_elevated`` at ``elevation``. Defined in §1.5."""
    num_views = checks.integer("num_views", num_views)
    n_between, n_elevated = checks.integer("n_between", n_between, 0), checks.integer("n_elevated", n_elevated, 0)
    elevation = checks.number("elevation (degrees)", elevation, -90.0, 90.0)
    msg = f"Need a held-out view, got n_between={n_between}, n_elevated={n_elevated}; make one positive."
    checks.require(n_between + n_elevated > 0, msg)
    checks.require(n_between <= num_views, f"n_between={n_between} exceeds the {num_views} view gaps; use fewer.")
    _, train_azim = training_angles(num_views)
    step = 360.0 / num_views
    mids = (train_azim + step / 2) % 360.0
    pick = torch.linspace(0, num_views - 1, n_between).round().long() if n_between else torch.zeros(0, dtype=torch.long)
    between = mids[pick]
    ring = torch.arange(n_elevated) * (360.0 / max(n_elevated, 1)) + step / 4
    elev = torch.cat([torch.zeros(len(between)), torch.full((n_elevated,), float(elevation))])
    return elev, torch.cat([between, ring])


def render_cow_views(elev, azim, image_size: int = 128, device=None, data_dir=None) -> CowViews:
    """Render the normalised cow from the given angles (no caching). Defined in §1.4."""
    image_size = checks.integer("image_size", image_size, minimum=8)
    device = checks.device("device", device) if device is not None else pick_device()
    elev, azim = _angles(elev, azim)
    mesh = load_cow_mesh(data_dir, device=device)
    cameras = make_cameras(elev, azim, device=device)
    images, silhouettes = render_views(mesh, cameras, image_size)
    return CowViews(cameras.R, cameras.T, images, silhouettes, elev.to(device), azim.to(device))


def generate_cow_renders(
    num_views: int = 40,
    image_size: int = 128,
    azimuth_range: float = 180.0,
    elevation: float = 0.0,
    device=None,
    data_dir=None,
    cache: bool = True,
    verbose: bool = False,
) -> CowViews:
    """The training views, cached under a key of all that changes the pixels (``DATASET_VERSION``). Defined in §1.4."""
    elev, azim = training_angles(num_views, azimuth_range, elevation)
    return _cached_render("train", elev, azim, image_size, device, data_dir, cache, verbose)


def generate_heldout_renders(
    num_views: int = 40,
    image_size: int = 128,
    n_between: int = 20,
    n_elevated: int = 10,
    elevation: float = 25.0,
    device=None,
    data_dir=None,
    cache: bool = True,
    verbose: bool = False,
) -> CowViews:
    """Held-out views (see :func:`heldout_angles`), rendered and cached like the training views. Defined in §1.5."""
    elev, azim = heldout_angles(num_views, n_between, n_elevated, elevation)
    return _cached_render("heldout", elev, azim, image_size, device, data_dir, cache, verbose)


def _cached_render(kind, elev, azim, image_size, device, data_dir, cache, verbose) -> CowViews:
    import pytorch3d

    image_size = checks.integer("image_size", image_size, minimum=8)
    device = checks.device("device", device) if device is not None else pick_device()
    params = dict(kind=kind, elev=elev.tolist(), azim=azim.tolist(), image_size=image_size, version=DATASET_VERSION)
    params.update(mesh=COW_FILES, pytorch3d=pytorch3d.__version__, format=CACHE_FORMAT)  # older layouts: never read
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "datasets" / f"cow_{kind}_{key}.pt"
    start = clock(device)
    if cache and path.is_file():
        # A cached dataset is derived data: rendering it again takes seconds and repairs the cache, so a
        # file that fails a check is replaced, with a note naming it (an error would ask the same by hand).
        try:
            views = _read_cache(path, elev, azim, image_size).to(device)
            if verbose:
                seconds = clock(device) - start
                print(f"Loaded {len(views)} {kind} views from the cache ({path.name}) in {seconds:.2f} s.")
            return views
        except ValueError as exc:
            print(f"Ignoring the cached dataset {path}: {exc}; rendering it again.")
    views = render_cow_views(elev, azim, image_size, device, data_dir)
    if verbose:
        print(f"Rendered {len(views)} {kind} views in {clock(device) - start:.2f} s.")
    if cache:  # with a format version and a SHA-256; a failed write leaves no file
        tensors = {k: getattr(views, k).detach().cpu() for k in CowViews.__dataclass_fields__}
        payload = {"format": CACHE_FORMAT, "tensors": tensors, "sha256": _tensors_sha256(tensors)}
        fix = f"Set {ENV_CACHE_DIR} to a writable folder, or pass cache=False."
        _save_atomic(payload, path, "Could not write the dataset cache file", fix)
    return views


def _save_atomic(payload: dict, path: Path, failed: str, fix: str) -> None:
    """``torch.save`` via a temporary file, so a failed write leaves none; ``OSError``: "failed path: why. fix"."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: a half-written file never has the real name
    except (OSError, RuntimeError) as exc:  # torch.save reports some OS errors as RuntimeError
        if tmp.is_file():
            tmp.unlink()
        raise OSError(f"{failed} {path}: {exc}. {fix}") from exc


def _tensors_sha256(tensors: dict) -> str:
    """SHA-256 of named tensors (sorted names and raw bytes): what saved datasets and fits are checked with."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_payload(path: Path, fmt: int) -> dict:
    """The dict saved in ``path`` (a cached dataset or a fit) if readable and of format ``fmt``, else ``ValueError``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(f"unreadable (truncated or damaged: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"not of this book's format {fmt} (found {found!r})")
    return payload


def _read_cache(path: Path, elev, azim, image_size: int) -> CowViews:
    """The views cached in ``path``; ``ValueError`` saying why when the file cannot be trusted."""
    payload = _load_payload(path, CACHE_FORMAT)
    tensors, fields = payload.get("tensors"), set(CowViews.__dataclass_fields__)
    if not isinstance(tensors, dict) or set(tensors) != fields or not all(map(torch.is_tensor, tensors.values())):
        raise ValueError(f"holds something other than the tensors {sorted(fields)}")
    checks.require(_tensors_sha256(tensors) == payload.get("sha256"), "corrupted: its tensors do not match its SHA-256")
    n, s = len(elev), image_size
    shapes = dict(R=(n, 3, 3), T=(n, 3), images=(n, s, s, 3), silhouettes=(n, s, s), elevations=(n,), azimuths=(n,))
    for name, want in shapes.items():
        if tuple(tensors[name].shape) != want or not torch.isfinite(tensors[name]).all():
            raise ValueError(f"its {name} {tuple(tensors[name].shape)} are not finite or not of shape {want}")
    if not (torch.allclose(tensors["elevations"], elev.cpu()) and torch.allclose(tensors["azimuths"], azim.cpu())):
        raise ValueError("its angles are not the ones asked for (a file of another dataset)")
    return CowViews(**tensors)
