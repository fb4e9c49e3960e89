"""Chapter 6: from a fitted voxel grid to a mesh, measured against the true cow.

Each function names the section of Chapter 6 (``notebooks/06_mesh.ipynb``) that
teaches it. Conventions are those of the rest of the book (PyTorch3D ``Volumes``):

- a grid is ``(D, H, W)`` (or ``(1, D, H, W)``), indexed ``[z, y, x]``, centred on the
  world origin, with voxel centres at ``(i - (n - 1) / 2) * voxel_size`` along each axis;
- densities are in [0, 1]: the opacity of one voxel, the fraction of the light that
  crosses a voxel's width and is absorbed there;
- colours ``(3, D, H, W)`` in [0, 1], sampled trilinearly with ``align_corners=True``
  exactly as Chapter 3 (``helpers.marching.sample_volume``);
- meshes are ``pytorch3d.structures.Meshes`` holding one mesh in world coordinates,
  faces wound so that their normals point *out* of the object.

``grids``, ``carve`` and ``cached_fast_fit`` are the only places that know how Chapters
2, 4 and 5 store their results; everything else takes plain tensors.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import marching, rays


def grids(model, sample_step: float | None = None):
    """Densities ``(1, D, H, W)`` (opacity across a voxel), colours ``(3, D, H, W)`` and voxel size of a fit.

    Defined in §6.1. Both fits' models have ``.densities``, ``.colors`` and ``.voxel_size``;
    Chapter 5's ``fast.FastVolume`` already gives the opacity across one voxel (zero outside
    its hull, where its renderer never looks). Chapter 4's ``fitting.VolumeModel`` gives the
    opacity of one *ray sample*, converted here to one voxel, ``1 - (1 - a) ** (voxel / step)``,
    with ``step`` the depth between its renderer's samples (``sample_step`` overrides it). Along a
    ray the samples are ``step * |d|`` apart, and ``|d|`` grows from 1 at the image centre to 1.29
    in its corners (view z = 1); the centre's spacing is used. Detached.
    """
    from . import fitting

    if not all(hasattr(model, name) for name in ("densities", "colors", "voxel_size")):
        raise TypeError(
            f"grids() needs a fitted model of the book (fitting.VolumeModel or fast.FastVolume), "
            f"got {type(model).__name__}. Load one with fitting.load_volume(fitting.fit_path(4 or 5))."
        )
    with torch.no_grad():
        densities, colors, voxel = model.densities.detach(), model.colors.detach(), float(model.voxel_size)
    if isinstance(model, fitting.VolumeModel):
        if sample_step is None:
            # the renderer's own depths (a GPU fit's differ from the CPU default): linspace(min, max, n)
            if model.renderer is None:
                raise ValueError(
                    "grids() reads a Chapter 4 model's sample spacing from its renderer, and this one has none; "
                    "pass sample_step= in world units."
                )
            render = model.config()["render"]
            sample_step = (render["max_depth"] - render["min_depth"]) / (render["n_pts_per_ray"] - 1)
        if not sample_step > 0:
            raise ValueError(f"sample_step must be a positive distance in world units, got {sample_step}.")
        densities = 1 - (1 - densities.clamp(0, 1 - 1e-6)) ** (voxel / sample_step)
    return densities, colors, voxel


def carve(views, volume_size: int = 128):
    """The visual hull of ``views`` (a ``data.CowViews``) as a bool grid ``(n, n, n)`` ``[z, y, x]``. Defined in §6.1.

    Chapter 2's ``hull.carve`` *without* its safety margin (``dilate=0``): the margin keeps
    thin parts for empty-space skipping, but as a shape it would make the hull a voxel too
    fat everywhere. Voxel size ``3 / n``.
    """
    from . import hull

    return hull.carve(views.silhouettes, views.cameras(), volume_size=volume_size, dilate=0).grid


def cached_fast_fit(train, settings, cache, snapshot: int | None = None):
    """Chapter 5's recipe fitted on ``train`` and saved to ``cache`` for the next run. Defined in §6.1.

    Used only while no saved Chapter 5 fit exists. A file is reused when it was fitted with
    the same ``settings``. With ``snapshot=k`` the grid as it was after ``k`` iterations is
    kept too (in ``cache`` with ``.snapshot`` added), a shorter fit for free. Returns
    ``(model, seconds spent fitting or 0.0 when loaded, snapshot model or None)``.
    """
    import copy
    import dataclasses

    from . import data, fast, fitting, metrics

    cache = Path(cache)
    early_path = cache.with_name(cache.stem + ".snapshot.pt")
    if snapshot is not None and not (isinstance(snapshot, int) and 0 < snapshot < settings.n_iter):
        raise ValueError(
            f"snapshot must be an iteration between 1 and n_iter - 1 = {settings.n_iter - 1}, got {snapshot!r}."
        )
    device = train.images.device
    if cache.is_file() and (snapshot is None or early_path.is_file()):
        try:
            model = fitting.load_volume(cache, device=device)
            if model.settings == settings and model.info.get("snapshot") == snapshot:
                return model, 0.0, fitting.load_volume(early_path, device=device) if snapshot else None
        except (ValueError, OSError):  # an outdated or damaged file: fit again and replace it
            pass
    kept = {}
    run, heldout, callback = settings, None, None
    if snapshot is not None:
        # fast.fit calls back after each evaluation: evaluate one view, every `snapshot` iterations
        run = dataclasses.replace(settings, eval_every=snapshot)
        heldout = data.CowViews(*(getattr(train, k)[:1] for k in data.CowViews.__dataclass_fields__))

        def callback(iteration, model, evaluation):
            if iteration == snapshot:
                kept["model"] = copy.deepcopy(model)

    start = metrics.clock(device)
    model, history = fast.fit(train, heldout, run, callback=callback)
    seconds = metrics.clock(device) - start
    if heldout is not None:  # its scores were of one training view, only to call back: not held-out scores
        history = dataclasses.replace(history, eval_iterations=[], eval_seconds=[], psnr=[], iou=[])
    fitting.save_volume(cache, model, settings, history, snapshot=snapshot)
    if "model" in kept:
        fitting.save_volume(early_path, kept["model"], snapshot=snapshot)  # no settings: its grid may be the 64^3 one
    return model, seconds, kept.get("model")


def glue(**values) -> None:
    """Store numbers for the prose as ``ch6-<name>`` (``book.glue``, not displayed). Defined in §6.2.

    Every number the text quotes comes from here, so the prose matches the run that built the page.
    Nothing is printed: the cells print what a reader should see, and the page shows the rest in its prose.
    """
    from .book import glue as book_glue

    for key, value in values.items():
        book_glue(f"ch6-{key.replace('_', '-')}", value, display=False)


# ----------------------------------------------------------------------------- checks on inputs


def _grid3(name: str, grid: torch.Tensor) -> torch.Tensor:
    if not isinstance(grid, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (D, H, W) or (1, D, H, W), got {type(grid).__name__}.")
    if grid.ndim == 4 and grid.shape[0] == 1:
        grid = grid[0]
    if grid.ndim != 3 or min(grid.shape) < 2:
        raise ValueError(
            f"{name} must have shape (D, H, W) or (1, D, H, W) with every size >= 2, got {tuple(grid.shape)}."
        )
    grid = grid.float()
    if not torch.isfinite(grid).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the fit that produced it.")
    return grid


def _positive(name: str, value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number (world units), got {value}.")
    return value


def _one_mesh(mesh):
    from pytorch3d.structures import Meshes

    if not isinstance(mesh, Meshes) or len(mesh) != 1:
        raise TypeError(
            f"Expected a pytorch3d Meshes holding exactly one mesh, got {type(mesh).__name__}"
            + (f" of {len(mesh)} meshes" if isinstance(mesh, Meshes) else "")
            + "."
        )
    if mesh.faces_packed().shape[0] == 0:
        raise ValueError("The mesh has no faces.")
    return mesh


# ----------------------------------------------------------------------------- marching cubes


def index_to_world(index_xyz: torch.Tensor, grid_shape, voxel_size: float) -> torch.Tensor:
    """Continuous voxel indices ``(V, 3)`` in ``(x, y, z)`` order (along W, H, D) to world points ``(V, 3)``.

    Defined in §6.2. Voxel ``i`` of an axis of ``n`` voxels sits at
    ``(i - (n - 1) / 2) * voxel_size``; ``grid_shape`` is ``(D, H, W)``.
    """
    d, h, w = (int(s) for s in grid_shape)
    centre = index_xyz.new_tensor([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
    return (index_xyz - centre) * voxel_size


def extract_mesh(field: torch.Tensor, level: float, voxel_size: float):
    """The surface ``field == level`` of a grid ``(D, H, W)`` as a world-space ``Meshes``.

    Defined in §6.2. Runs ``pytorch3d.ops.marching_cubes`` with
    ``return_local_coords=False`` (vertices as continuous indices in ``(x, y, z)`` =
    ``(W, H, D)`` order, which the chapter verifies), maps them with
    :func:`index_to_world`, and flips the winding so that face normals point towards
    *lower* values of the field (out of a dense object). The grid is first padded with
    one layer of voxels below ``level``, so a surface that touches the grid's border is
    closed there instead of left open.
    """
    from pytorch3d.ops.marching_cubes import marching_cubes
    from pytorch3d.structures import Meshes

    field = _grid3("field", field)
    voxel_size = _positive("voxel_size", voxel_size)
    level = float(level)
    lo, hi = field.min().item(), field.max().item()
    if not (math.isfinite(level) and lo < level < hi):
        raise ValueError(
            f"level={level} must lie strictly between the field's minimum {lo:.4g} and maximum "
            f"{hi:.4g}, or there is no surface; pick an iso-level inside that range."
        )
    pad = min(lo, level) - 1.0
    padded = torch.nn.functional.pad(field, (1, 1, 1, 1, 1, 1), value=pad)
    verts, faces = marching_cubes(padded[None], level, return_local_coords=False)
    verts, faces = verts[0], faces[0]
    if len(faces) == 0:
        raise ValueError(f"marching cubes found no surface at level {level}.")
    faces = faces.long()
    verts = index_to_world(verts - 1.0, field.shape, voxel_size)  # undo the padding's shift of one voxel
    faces = faces[:, [0, 2, 1]]  # PyTorch3D winds towards higher values; we want normals pointing out
    return Meshes(verts=[verts.float()], faces=[faces])


@torch.no_grad()
def density_at_median_depth(
    densities: torch.Tensor,
    voxel_size: float,
    origins: torch.Tensor,
    directions: torch.Tensor,
    min_opacity: float = 0.9,
) -> torch.Tensor:
    """The density ``(K,)`` met where each ray has lost half its light. Defined in §6.3.

    Rays ``origins``, ``directions`` ``(N, 3)`` (unit directions) are marched through the
    grid ``(D, H, W)`` in steps of one voxel, so each sample's opacity is the density
    itself (its meaning: the opacity across one voxel), and the transmittance is
    ``T_k = prod_{j<k} (1 - sigma_j)``. For every ray whose total opacity is at least
    ``min_opacity`` (it hit the object), the density is read (trilinearly) at the
    *median depth*, where ``T`` crosses 1/2: where a rendered depth map puts the
    surface. Their median is an iso-level that puts the mesh where the renders do.
    """
    densities = _grid3("densities", densities)
    voxel_size = _positive("voxel_size", voxel_size)
    if origins.shape != directions.shape or origins.ndim != 2 or origins.shape[1] != 3:
        raise ValueError(
            f"origins and directions must both be (N, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}."
        )
    o, d = origins.to(densities), directions.to(densities)
    # enter and leave the box of the voxel centres, (x, y, z) = (W, H, D), then march one voxel a step
    half = [voxel_size * (n - 1) / 2 for n in reversed(densities.shape)]
    near, far = rays.ray_box(o, d, half)
    n_steps = math.ceil((far - near).clamp_min(0).max().item() / voxel_size) + 1
    t = near[:, None] + voxel_size * torch.arange(n_steps, device=o.device, dtype=o.dtype)  # (N, S)
    points = o[:, None] + t[..., None] * d[:, None]
    sigma = sample_field(densities, points.reshape(-1, 3), voxel_size).reshape(t.shape).clamp(0, 1)
    sigma = torch.where(t <= far[:, None], sigma, torch.zeros_like(sigma))
    after = torch.cumprod(1 - sigma, dim=1)  # light left after each sample
    hit = after[:, -1] <= 1 - min_opacity
    if not hit.any():
        raise ValueError(
            f"none of the {hit.shape[0]} rays reaches opacity {min_opacity} in this grid, so there is no surface "
            "to read; aim the rays at the object, or lower min_opacity."
        )
    k = (after[hit] <= 0.5).float().argmax(dim=1)  # the sample where half the light is gone
    return sigma[hit].gather(1, k[:, None])[:, 0]


def area(mesh) -> float:
    """Total surface area of a one-mesh ``Meshes``. Defined in §6.2."""
    return _one_mesh(mesh).faces_areas_packed().sum().item()


def enclosed_volume(mesh) -> float:
    """Volume enclosed by a closed, outward-wound mesh. Defined in §6.2.

    Divergence theorem: the sum over faces of the signed volumes of the tetrahedra
    ``(origin, a, b, c)``, ``a . (b x c) / 6``. Negative if the faces point inwards.
    """
    mesh = _one_mesh(mesh)
    tri = mesh.verts_packed()[mesh.faces_packed()].double()  # (F, 3, 3)
    return (tri[:, 0] * torch.cross(tri[:, 1], tri[:, 2], dim=-1)).sum().item() / 6.0


def edge_face_counts(faces: torch.Tensor) -> torch.Tensor:
    """How many faces share each undirected edge of triangles ``faces`` ``(F, 3)`` -> ``(E,)``.

    Defined in §6.2: a closed (watertight), manifold surface has
    exactly 2 for every edge; a hole's rim has edges with 1.
    """
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}.")
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    return torch.unique(edges, dim=0, return_counts=True)[1]


def is_watertight(mesh) -> bool:
    """True when every edge of the mesh is shared by exactly two faces. Defined in §6.2."""
    return bool((edge_face_counts(_one_mesh(mesh).faces_packed()) == 2).all())


def sample_field(field: torch.Tensor, points: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Trilinear value of a grid ``(D, H, W)`` at world points ``(P, 3)`` -> ``(P,)``, as Chapter 3. Defined in §6.2."""
    field = _grid3("field", field)
    dens, _ = marching.sample_volume(field[None, None], None, points[None].to(field), voxel_size)
    return dens[0, :, 0]


def vertex_colors(
    densities: torch.Tensor, colors: torch.Tensor, mesh, voxel_size: float, inward: float = 0.5
) -> torch.Tensor:
    """RGB ``(V, 3)`` of a mesh's vertices, read from the colour grid ``(3, D, H, W)``.

    Defined in §6.4. A vertex lies where the density crosses the iso-level, half in
    empty space whose colour the fit never had to learn; so the colour is read
    ``inward`` voxels inside along the vertex normal and weighted by density,
    ``trilinear(sigma c) / trilinear(sigma)``, with Chapter 3's trilinear sampling
    (``marching.sample_volume``: ``Volumes`` convention, ``align_corners=True``).
    """
    densities = _grid3("densities", densities)
    if colors.ndim != 4 or colors.shape[0] != 3 or colors.shape[1:] != densities.shape:
        raise ValueError(
            f"colors must have shape (3, D, H, W) = (3, {', '.join(map(str, densities.shape))}), "
            f"got {tuple(colors.shape)}."
        )
    mesh = _one_mesh(mesh)
    points = mesh.verts_packed() - inward * voxel_size * mesh.verts_normals_packed()
    weighted = torch.cat([densities[None], densities[None] * colors.to(densities)], 0)  # (4, D, H, W)
    _, values = marching.sample_volume(densities[None, None], weighted[None], points[None].to(densities), voxel_size)
    values = values[0]  # (V, 4): sigma, sigma * rgb
    return (values[:, 1:] / values[:, :1].clamp_min(1e-6)).clamp(0, 1)


def coarsen(field: torch.Tensor, voxel_size: float, factor: int = 2, reduce: str = "mean"):
    """Reduce ``factor^3`` blocks of a grid ``(D, H, W)`` to one voxel: a lighter mesh for the 3-D view.

    Defined in §6.8. ``reduce="mean"`` averages (for colours);
    ``reduce="max"`` keeps the largest value (for densities: a shell one fine voxel thin
    would be diluted by the average and break up into holes at the same iso-level).
    Returns the coarse grid and its voxel size; the grid stays centred on the origin.
    """
    field = _grid3("field", field)
    if not isinstance(factor, int) or factor < 1 or any(s % factor for s in field.shape):
        raise ValueError(
            f"factor must be a positive integer dividing the grid's sizes {tuple(field.shape)}, got {factor!r}."
        )
    pools = {"mean": torch.nn.functional.avg_pool3d, "max": torch.nn.functional.max_pool3d}
    if reduce not in pools:
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}.")
    coarse = pools[reduce](field[None, None], factor)[0, 0]
    return coarse, voxel_size * factor


# ----------------------------------------------------------------------------- measuring against the truth


def bbox_diagonal(mesh) -> float:
    """Length of the diagonal of a mesh's axis-aligned bounding box. Defined in §6.5."""
    verts = _one_mesh(mesh).verts_packed()
    return (verts.max(0).values - verts.min(0).values).norm().item()


def sample_surface(mesh, n_points: int = 10_000, seed: int = 0) -> torch.Tensor:
    """``n_points`` points ``(n, 3)`` drawn uniformly by area on a mesh's surface, reproducibly.

    Defined in §6.6: ``pytorch3d.ops.sample_points_from_meshes``
    with the global random state forked and seeded, so the caller's is untouched.
    """
    from pytorch3d.ops import sample_points_from_meshes

    mesh = _one_mesh(mesh)
    if not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}.")
    devices = [mesh.device] if mesh.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return sample_points_from_meshes(mesh, n_points)[0]


def nearest_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance ``(N,)`` from each point of ``a`` ``(N, 3)`` to its nearest of ``b`` ``(M, 3)``. Defined in §6.5."""
    from pytorch3d.ops import knn_points

    for name, p in (("a", a), ("b", b)):
        if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty point set (N, 3), got {tuple(p.shape)}.")
    return knn_points(a[None].float(), b[None].float().to(a.device), K=1).dists[0, :, 0].sqrt()


def precision_recall_fscore(d_pred_to_true: torch.Tensor, d_true_to_pred: torch.Tensor, threshold: float):
    """Precision, recall and F-score at distance ``threshold`` {cite}`tatarchenko2019single`.

    Defined in §6.5. Precision: the fraction of the
    reconstruction's points within ``threshold`` of the truth; recall: the fraction of
    the truth's points within ``threshold`` of the reconstruction; F: their harmonic
    mean (0 when both are 0).
    """
    threshold = _positive("threshold", threshold)
    precision = (d_pred_to_true <= threshold).float().mean().item()
    recall = (d_true_to_pred <= threshold).float().mean().item()
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f


def compare(pred, truth, n_points: int = 10_000, fractions=(0.01, 0.02), seed: int = 0) -> dict:
    """Chamfer distance and precision/recall/F-score of a reconstruction against the true mesh.

    Defined in §6.5. ``n_points`` are sampled on each surface;
    thresholds are ``fractions`` of the *true* mesh's bounding-box diagonal. Returns
    ``{"chamfer": symmetric Chamfer-L2 (pytorch3d.loss.chamfer_distance: mean squared
    nearest distance each way, summed), "mean_distance": mean of the unsquared nearest
    distances both ways, "d_pred": (N,), "d_true": (N,), "diagonal": float,
    "thresholds": [...], "precision"/"recall"/"fscore": lists, one per fraction}``.
    """
    from pytorch3d.loss import chamfer_distance

    p = sample_surface(pred, n_points, seed)
    t = sample_surface(truth, n_points, seed + 1)
    d_pred, d_true = nearest_distances(p, t), nearest_distances(t, p)
    chamfer = chamfer_distance(p[None], t[None])[0].item()
    diagonal = bbox_diagonal(truth)
    out = {
        "chamfer": chamfer,
        "mean_distance": 0.5 * (d_pred.mean() + d_true.mean()).item(),
        "d_pred": d_pred,
        "d_true": d_true,
        "diagonal": diagonal,
        "thresholds": [],
        "precision": [],
        "recall": [],
        "fscore": [],
    }
    for fraction in fractions:
        threshold = fraction * diagonal
        prec, rec, f = precision_recall_fscore(d_pred, d_true, threshold)
        out["thresholds"].append(threshold)
        out["precision"].append(prec)
        out["recall"].append(rec)
        out["fscore"].append(f)
    return out


def distance_to_surface(mesh, truth_points: torch.Tensor) -> torch.Tensor:
    """Distance ``(V,)`` of each vertex of ``mesh`` to the nearest of ``truth_points`` ``(M, 3)``.

    Defined in §6.6: the colour of the error map.
    """
    return nearest_distances(_one_mesh(mesh).verts_packed(), truth_points)


# ----------------------------------------------------------------------------- export


def export(mesh, colors: torch.Tensor | None, folder, name: str) -> dict:
    """Write ``name.obj`` (geometry) and ``name.ply`` (geometry and vertex colours) with ``pytorch3d.io``.

    Defined in §6.7. PyTorch3D 0.7.9's OBJ writer stores vertices, faces and UV
    textures only, so vertex colours go to the PLY file (as bytes, 0..255). Returns
    ``{"obj": Path, "ply": Path}``.
    """
    from pytorch3d.io import IO
    from pytorch3d.renderer import TexturesVertex
    from pytorch3d.structures import Meshes

    mesh = _one_mesh(mesh)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name without extension, got {name!r}.")
    verts, faces = mesh.verts_packed().detach().cpu(), mesh.faces_packed().cpu()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"obj": folder / f"{name}.obj", "ply": folder / f"{name}.ply"}
    io = IO()
    io.save_mesh(Meshes([verts], [faces]), paths["obj"])
    textures = None
    if colors is not None:
        if colors.shape != verts.shape:
            raise ValueError(
                f"colors must be one RGB triple per vertex, {tuple(verts.shape)}, got {tuple(colors.shape)}."
            )
        textures = TexturesVertex([colors.detach().cpu().float().clamp(0, 1)])
    io.save_mesh(Meshes([verts], [faces], textures=textures), paths["ply"], binary=True, colors_as_uint8=True)
    return paths


def load(path, device="cpu"):
    """Read an exported mesh back: ``(Meshes, colors (V, 3) or None)``. Defined in §6.7."""
    import warnings

    from pytorch3d.io import IO
    from pytorch3d.renderer import TexturesVertex

    with warnings.catch_warnings():  # our OBJ files have no material library, by design
        warnings.filterwarnings("ignore", message="No mtl file provided")
        mesh = IO().load_mesh(path, include_textures=True, device=device)
    colors = mesh.textures.verts_features_packed() if isinstance(mesh.textures, TexturesVertex) else None
    return mesh, colors


# ----------------------------------------------------------------------------- the 3-D view


def _rgb_strings(colors: torch.Tensor) -> list[str]:
    c = (colors.detach().cpu().clamp(0, 1) * 255).round().int().tolist()
    return [f"rgb({r},{g},{b})" for r, g, b in c]


def mesh3d(
    mesh,
    colors: torch.Tensor | None = None,
    intensity: torch.Tensor | None = None,
    name: str = "",
    offset=(0.0, 0.0, 0.0),
    **kwargs,
):
    """A plotly ``Mesh3d`` trace of a one-mesh ``Meshes``. Defined in §6.8.

    ``colors`` ``(V, 3)`` in [0, 1] colour the vertices; or ``intensity`` ``(V,)`` with a
    colour scale (pass ``colorscale=...``, ``cmin``/``cmax`` in ``kwargs``). ``offset``
    shifts the mesh (to put two side by side). The world's +Y (up) becomes plotly's +Z.
    """
    import plotly.graph_objects as go

    mesh = _one_mesh(mesh)
    v = (mesh.verts_packed().detach().cpu() + torch.tensor(offset, device="cpu")).numpy().astype("float32")
    f = mesh.faces_packed().cpu().numpy().astype("int32")
    trace = dict(
        x=v[:, 0],
        y=-v[:, 2],
        z=v[:, 1],
        i=f[:, 0],
        j=f[:, 1],
        k=f[:, 2],
        name=name,
        flatshading=False,
        lighting=dict(ambient=0.55, diffuse=0.7, specular=0.1),
        hoverinfo="name",
    )
    if colors is not None:
        trace["vertexcolor"] = _rgb_strings(colors)
    elif intensity is not None:
        trace["intensity"] = intensity.detach().cpu().numpy().astype("float32")
    trace.update(kwargs)
    return go.Mesh3d(**trace)


def figure_html(fig, div_id: str, alt: str) -> str:
    """HTML for a plotly figure that draws with the book's own copy of plotly.js (no CDN).

    Defined in §6.8. The page must load ``plotly.min.js`` itself: the
    book's Sphinx extension (``book/_ext/offline_assets.py``) adds it to every page that
    holds a ``plotly-graph-div``. ``alt`` becomes the figure's ARIA label.
    """
    import html as html_lib

    if not alt:
        raise ValueError("Give the 3-D view an alt text that says what it shows.")
    body = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True, "plotGlPixelRatio": 1},
    )
    label = html_lib.escape(alt, quote=True)
    return f'<div role="img" aria-label="{label}" class="volrender-3d">{body}</div>'


def show_figure(fig, div_id: str, alt: str):
    """Display a plotly figure in the book *and* in a live notebook.

    Defined in §6.8. The output carries two representations:
    plotly's own (``application/vnd.plotly.v1+json``, drawn by JupyterLab and Colab)
    and HTML that uses the book's local ``plotly.min.js`` (what the built book shows).
    """
    from IPython.display import display

    bundle = {
        "application/vnd.plotly.v1+json": fig.to_plotly_json(),
        "text/html": figure_html(fig, div_id, alt),
        "text/plain": f"<3-D view: {alt}>",
    }
    display(bundle, raw=True)


# ----------------------------------------------------------------------------- quick pictures


@torch.no_grad()
def splat(mesh, colors: torch.Tensor, cameras, image_size: int = 160, background: float = 1.0) -> torch.Tensor:
    """Images ``(B, S, S, 3)`` of a dense mesh's vertices, each splatted onto 2 x 2 pixels with a z-buffer.

    Defined in §6.4 and §6.6: a preview renderer for
    meshes with tens of thousands of vertices, which PyTorch3D's mesh rasteriser draws
    slowly on a CPU. Vertex ``colors`` ``(V, 3)`` are shaded by ``0.35 + 0.65 |n . v|``
    (``n`` the vertex normal, ``v`` the direction to the camera). Pixels follow the book's
    convention (row 0 at the top), via Chapter 2's ``rays.project``; the nearest vertex wins a pixel.
    """
    from .rays import ndc_to_pixel, project

    mesh = _one_mesh(mesh)
    verts, normals = mesh.verts_packed(), mesh.verts_normals_packed()
    if colors.shape != verts.shape:
        raise ValueError(f"colors must be one RGB triple per vertex, {tuple(verts.shape)}, got {tuple(colors.shape)}.")
    centres = cameras.get_camera_center()  # (B, 3)
    depth = cameras.get_world_to_view_transform().transform_points(verts[None].expand(len(cameras), -1, -1))[..., 2]
    images = []
    for b in range(len(cameras)):
        row, col = ndc_to_pixel(project(cameras[b], verts[None])[0], image_size, image_size)
        to_camera = torch.nn.functional.normalize(centres[b] - verts, dim=1)
        shade = 0.35 + 0.65 * (normals * to_camera).sum(1).abs()
        rgb = (colors.to(verts) * shade[:, None]).clamp(0, 1)
        image = torch.full((image_size * image_size, 3), float(background), device=verts.device)
        zbuf = torch.full((image_size * image_size,), float("inf"), device=verts.device)
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            r, c = row[0].floor().long() + dr, col[0].floor().long() + dc
            ok = (r >= 0) & (r < image_size) & (c >= 0) & (c < image_size) & (depth[b] > 0)
            pix = r[ok] * image_size + c[ok]
            zbuf.scatter_reduce_(0, pix, depth[b][ok], reduce="amin")
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            r, c = row[0].floor().long() + dr, col[0].floor().long() + dc
            ok = (r >= 0) & (r < image_size) & (c >= 0) & (c < image_size) & (depth[b] > 0)
            pix = r[ok] * image_size + c[ok]
            front = depth[b][ok] <= zbuf[pix]
            image[pix[front]] = rgb[ok][front]
        images.append(image.reshape(image_size, image_size, 3))
    return torch.stack(images)
