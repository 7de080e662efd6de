"""Groups of orbit cameras round an object, drawn as Perturb-and-Revise's released objects code draws them for MVDream
(threestudio's random_multiview.py with the pnr configs): every step a new group of views 90 degrees apart (for 4)
at one drawn elevation, field of view and distance, looking at the object's centre, z up.

    elevation  half the draws uniform in degrees over the range, half uniform on the sphere (by its sine)
    azimuth    one uniform offset within the first 360/N degrees, then +360/N per view
    fovy       uniform over the range; distance uniform over the range, times 1 / tan(fovy / 2) and the object's radius

The cameras are nerfstudio's (OpenGL axes, in the scene's frame); the camera each view gives the prior is the same
matrix relative to the object's centre (:func:`pds_nerfstudio.priors.multiview.camera_vectors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from pds_nerfstudio.priors.multiview import orbit_camera


@dataclass(frozen=True)
class OrbitRanges:
    """The ranges a group of orbit cameras is drawn from (released objects configs)."""

    elevation: Tuple[float, float] = (0.0, 30.0)
    """Degrees above the object's equator."""
    fovy: Tuple[float, float] = (15.0, 60.0)
    """Vertical field of view, degrees."""
    distance: Tuple[float, float] = (0.8, 1.0)
    """Camera distance in units of the object's radius over tan(fovy / 2) (threestudio's relative_radius)."""


@dataclass
class OrbitGroup:
    """One step's group of orbit cameras and the values they were drawn with."""

    cameras: Cameras
    """The views to render, in the scene's frame [N]."""
    object_c2w: Tensor
    """Their camera-to-world matrices relative to the object's centre [N, 4, 4] (what the prior is given)."""
    elevation: float
    azimuths: Tuple[float, ...]
    fovy: float
    distance: float
    """The camera's distance from the centre, in the scene's units."""


def draw_orbit_group(
    generator: torch.Generator, centre: Sequence[float], radius: float, size: int, views: int = 4,
    ranges: OrbitRanges = OrbitRanges(), azimuth_offset: Optional[float] = None,
) -> OrbitGroup:  # fmt: skip
    """A group of ``views`` orbit cameras of ``size`` x ``size`` pixels round the object at ``centre`` of ``radius``;
    the first azimuth -180 degrees plus a drawn share of 360 / ``views``, or plus ``azimuth_offset`` degrees (then not
    drawn: the field of view and distance that follow are the next draws)."""
    draw = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    low, high = ranges.elevation
    if draw() < 0.5:
        elevation = low + draw() * (high - low)
    else:  # uniform on the sphere between the two latitudes
        start, end = (low + 90) / 180, (high + 90) / 180
        elevation = math.degrees(math.asin(2 * (start + draw() * (end - start)) - 1))
    offset = draw() if azimuth_offset is None else azimuth_offset * views / 360.0
    azimuths = tuple((offset + k) / views * 360.0 - 180.0 for k in range(views))
    fovy = ranges.fovy[0] + draw() * (ranges.fovy[1] - ranges.fovy[0])
    relative = ranges.distance[0] + draw() * (ranges.distance[1] - ranges.distance[0])
    distance = radius * relative / math.tan(math.radians(fovy) / 2)
    scene_c2w = torch.stack([orbit_camera(elevation, azimuth, distance, centre) for azimuth in azimuths]).float()
    focal = 0.5 * size / math.tan(math.radians(fovy) / 2)
    cameras = Cameras(
        camera_to_worlds=scene_c2w[:, :3, :], fx=focal, fy=focal, cx=size / 2, cy=size / 2, width=size, height=size,
        camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip
    object_c2w = scene_c2w.clone()
    object_c2w[:, :3, 3] -= torch.tensor(centre, dtype=object_c2w.dtype)
    return OrbitGroup(cameras, object_c2w, elevation, azimuths, fovy, distance)
