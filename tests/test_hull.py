"""The visual hull (Chapter 2, used by Chapter 5): carving against closed forms, lookups against Volumes."""

import copy
import math

import pytest
import torch
from pytorch3d.renderer import FoVPerspectiveCameras, NDCMultinomialRaysampler, look_at_view_transform
from pytorch3d.structures import Volumes
from test_rays import random_cameras

from helpers import hull


def test_voxel_centers_match_pytorch3d_volumes():
    grid = hull.voxel_centers(6, extent=3.0)
    volumes = Volumes(densities=torch.zeros(1, 1, 6, 6, 6), voxel_size=3.0 / 6)
    torch.testing.assert_close(grid, volumes.get_coord_grid()[0])


def test_lookup_voxels_finds_the_nearest_voxel():
    grid = torch.zeros(4, 4, 4, dtype=torch.bool)
    grid[0, 1, 3] = True  # z index 0, y index 1, x index 3
    centres = hull.voxel_centers(4, extent=2.0)
    hit = centres[0, 1, 3]
    assert hit.tolist() == [0.75, -0.25, -0.75]
    pts = torch.stack([hit, hit + 0.2, hit + torch.tensor([0.0, 0.5, 0.0]), torch.tensor([1.2, 0.0, 0.0])])
    assert hull.Occupancy(grid, extent=2.0).lookup(pts).tolist() == [True, True, False, False]


def _sphere_silhouettes(cameras, centre, radius, size):
    """Analytic silhouettes of a sphere: a pixel is on it when its ray passes within radius."""
    b = NDCMultinomialRaysampler(image_width=size, image_height=size, n_pts_per_ray=1, min_depth=1.0, max_depth=1.0)(
        cameras
    )
    d = torch.nn.functional.normalize(b.directions, dim=-1)
    to_c = centre - b.origins
    dist = (to_c - (to_c * d).sum(-1, keepdim=True) * d).norm(dim=-1)
    return (dist <= radius).float()


def test_carve_of_a_sphere_seen_along_the_axes():
    """Far, narrow cameras on the six half-axes see nearly parallel projections, so the hull
    of a sphere is close to the intersection of three cylinders (a Steinmetz solid)."""
    centre, radius, n = torch.tensor([0.4, 0.2, -0.1]), 0.5, 40
    # the cameras look at the origin, so the sphere is off-centre in every image and a
    # mirrored projection would carve it away
    eye = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]) * 30
    up = torch.tensor([[0.0, 1, 0]] * 2 + [[0.0, 0, 1]] * 2 + [[0.0, 1, 0]] * 2)
    R, T = look_at_view_transform(eye=eye, at=torch.zeros(6, 3), up=up)
    cameras = FoVPerspectiveCameras(R=R, T=T, fov=8.0)  # the image spans ±2.1 around the sphere
    sil = _sphere_silhouettes(cameras, centre, radius, 96)
    carved = hull.carve(sil, cameras, volume_size=n, dilate=0).grid
    p = hull.voxel_centers(n, 3.0) - centre
    cyl = (
        torch.stack([p[..., [1, 2]].norm(dim=-1), p[..., [0, 2]].norm(dim=-1), p[..., [0, 1]].norm(dim=-1)])
        .max(0)
        .values
    )
    margin = 0.07  # perspective: ±1.9 in depth at distance 30 moves an edge by 0.032; a pixel is 0.044
    assert carved[cyl < radius - margin].all()
    assert not carved[cyl > radius + margin].any()
    # dilation only grows the hull, by at most one voxel
    grown = hull.carve(sil, cameras, volume_size=n, dilate=1).grid
    assert (grown >= carved).all() and grown.sum() > carved.sum()
    assert not grown[cyl > radius + margin + 3.0 / n * math.sqrt(3)].any()


def test_carve_rejects_mismatched_inputs():
    cameras = random_cameras(2, seed=12)
    with pytest.raises(ValueError, match="silhouettes"):
        hull.carve(torch.ones(3, 8, 8), cameras)
    with pytest.raises(ValueError, match="dilate"):
        hull.carve(torch.ones(2, 8, 8), cameras, dilate=-1)


def test_occupancy_moves_with_to_and_bounds_its_voxels():
    grid = torch.zeros(8, 8, 8, dtype=torch.bool)
    grid[2, 3:5, 6] = True  # z = 2, y = 3..4, x = 6
    occ = hull.Occupancy(grid)
    assert copy.deepcopy(occ).to("meta").grid.device.type == "meta"  # a buffer: .to(device) moves it
    lo, hi = occ.bounds()
    s = 3.0 / 8
    centres = hull.voxel_centers(8)[grid]
    torch.testing.assert_close(lo, centres.amin(0) - s / 2)
    torch.testing.assert_close(hi, centres.amax(0) + s / 2)
    # points just inside the cells at the box's corners are occupied, just outside are not
    assert occ.lookup(torch.stack([lo + 1e-4, hi - 1e-4])).all()
    assert not occ.lookup(torch.stack([lo - 1e-3, hi + 1e-3])).any()
