"""Orbit camera groups as the released objects code draws them (pds_nerfstudio.scenes.orbit): read back from the
cameras themselves, and the camera the prior is given checked against MVDream's own construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pds_nerfstudio.priors.multiview import camera_vectors
from pds_nerfstudio.regions.region import project
from pds_nerfstudio.scenes.orbit import OrbitRanges, draw_orbit_group
from tests.priors.test_multiview import mvdream_get_camera


def test_each_group_is_four_views_90_degrees_apart_looking_at_the_object():
    generator = torch.Generator().manual_seed(0)
    centre, radius, size = (0.3, -0.2, 0.1), 0.5, 64
    elevations = []
    for _ in range(40):
        group = draw_orbit_group(generator, centre, radius, size)
        c2w = group.cameras.camera_to_worlds
        positions = c2w[:, :, 3] - torch.tensor(centre)
        distances = positions.norm(dim=-1)
        assert torch.allclose(distances, torch.full((4,), group.distance), atol=1e-5)
        relative = group.distance / radius * math.tan(math.radians(group.fovy) / 2)
        assert 0.8 - 1e-6 <= relative <= 1.0 + 1e-6 and 15 <= group.fovy <= 60 and 0 <= group.elevation <= 30
        heights = positions[:, 2] / distances  # sin(elevation), one for the group
        assert torch.allclose(heights, torch.full((4,), math.sin(math.radians(group.elevation))), atol=1e-5)
        flat = torch.atan2(positions[:, 1], positions[:, 0])
        steps = torch.rad2deg((flat.roll(-1) - flat) % (2 * math.pi))
        assert torch.allclose(steps, torch.full((4,), 90.0), atol=1e-3)  # 90 degrees apart
        for view in range(4):  # the centre lands on each image's centre pixel
            row, column, seen = project(group.cameras[view : view + 1], torch.tensor([centre], dtype=torch.float32) + 1e-4)
            assert bool(seen[0]) and (int(row[0]), int(column[0])) in {(31, 31), (31, 32), (32, 31), (32, 32)}
        assert float(group.cameras.fy[0]) == pytest.approx(0.5 * size / math.tan(math.radians(group.fovy) / 2), rel=1e-5)
        # what the prior is given: MVDream's get_camera at the same elevation, azimuth + 90 degrees
        theirs = mvdream_get_camera(group.elevation, [a + 90 for a in group.azimuths])
        assert np.allclose(camera_vectors(group.object_c2w.double()).numpy(), theirs, atol=1e-5)
        elevations.append(group.elevation)
    assert min(elevations) < 8 and max(elevations) > 22  # drawn over the range


def test_the_ranges_are_the_released_objects_configs():
    assert OrbitRanges() == OrbitRanges(elevation=(0.0, 30.0), fovy=(15.0, 60.0), distance=(0.8, 1.0))


def test_a_group_at_a_given_azimuth_offset_sees_the_object_from_those_azimuths():
    """The bench that reads what a multi-view prior does with its cameras (bench/multiview_cameras.py) holds the
    azimuths; the cameras sit at them (MVDream's convention: azimuth 0 on the scene's x axis)."""
    group = draw_orbit_group(torch.Generator().manual_seed(0), (0.0, 0.0, 0.0), 1.0, 32, azimuth_offset=45.0)
    assert group.azimuths == (-135.0, -45.0, 45.0, 135.0)
    positions = group.cameras.camera_to_worlds[:, :, 3]
    seen = torch.rad2deg(torch.atan2(positions[:, 1], positions[:, 0]))
    wrapped = (seen - torch.tensor(group.azimuths) + 180.0) % 360.0 - 180.0
    assert torch.allclose(wrapped, torch.zeros(4), atol=1e-3)
