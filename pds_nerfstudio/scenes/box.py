"""An oriented 3D box: parsed from the command line in the capture's world frame, carried into nerfstudio's scene frame,
projected into a camera's pixels and tested against points."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor


def rotation_from_degrees(angles: Sequence[float]) -> Tensor:
    """The rotation matrix of Euler angles (degrees) about x, then y, then z of the fixed frame: Rz @ Ry @ Rx."""
    x, y, z = (math.radians(a) for a in angles)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = torch.tensor([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return (rz @ ry @ rx).float()


def in_scene_frame(point: Tensor, transform: Tensor, scale: float) -> Tensor:
    """A point [3] of the capture's world frame (transforms.json's) in nerfstudio's scene frame: the dataparser maps p to
    ``scale * (transform[:, :3] @ p + transform[:, 3])`` (its ``dataparser_transform`` and ``dataparser_scale``)."""
    transform = transform.float().cpu()
    return scale * (transform[:3, :3] @ point.float() + transform[:3, 3])


@dataclass(frozen=True)
class Box:
    """Points p with |R^T (p - centre)| <= size / 2 in every axis."""

    centre: Tensor
    """[3]"""
    size: Tensor
    """[3], full side lengths"""
    rotation: Tensor
    """[3, 3], the box's axes as columns"""

    @classmethod
    def from_flag(cls, values: Sequence[float]) -> "Box":
        """``cx cy cz sx sy sz`` or ``cx cy cz sx sy sz rx ry rz`` (degrees), as ``--pipeline.region.box`` takes them."""
        if len(values) not in (6, 9):
            raise ValueError(f"a box is 6 or 9 numbers (centre, size[, rotation in degrees]), got {len(values)}")
        angles = values[6:] if len(values) == 9 else (0.0, 0.0, 0.0)
        return cls(torch.tensor(values[:3]).float(), torch.tensor(values[3:6]).float(), rotation_from_degrees(angles))

    def in_scene_frame(self, transform: Tensor, scale: float) -> "Box":
        """This box, given in the capture's world frame (transforms.json's), in nerfstudio's scene frame: the dataparser
        maps a point p to ``scale * (transform[:, :3] @ p + transform[:, 3])`` (its ``dataparser_transform`` and
        ``dataparser_scale``); the box turns with the same rotation and grows by the same scale."""
        rotation = transform.float().cpu()[:3, :3]
        return Box(in_scene_frame(self.centre, transform, scale), scale * self.size, rotation @ self.rotation)

    def contains(self, points: Tensor) -> Tensor:
        """Whether each point [..., 3] is inside: [...] bool."""
        local = (points - self.centre.to(points)) @ self.rotation.to(points)
        return (local.abs() <= self.size.to(points) / 2).all(dim=-1)

    def span(self, origins: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        """Where each ray [..., 3] is inside the box, in front of its origin (the slab test in the box's frame): the
        distances [...] of entry and exit along the ray's direction; the ray misses the box where exit < entry."""
        rotation, centre, half = self.rotation.to(origins), self.centre.to(origins), self.size.to(origins) / 2
        o = (origins - centre) @ rotation
        d = directions @ rotation
        safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1, t2 = (-half - o) / safe, (half - o) / safe
        near = torch.minimum(t1, t2).amax(dim=-1)
        far = torch.maximum(t1, t2).amin(dim=-1)
        return near.clamp(min=0), far

    def hit_by(self, origins: Tensor, directions: Tensor) -> Tensor:
        """Whether each ray [..., 3] meets the box in front of its origin: [...] bool."""
        near, far = self.span(origins, directions)
        return far >= near

    def pixels(self, camera: Cameras) -> Tensor:
        """The pixels of a one-camera view whose ray meets the box: [H, W] bool, at the camera's resolution (its own
        rays, lens distortion included)."""
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        return self.hit_by(rays.origins, rays.directions)

    def corners(self) -> Tensor:
        """The 8 corners [8, 3]."""
        signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]).float()
        return self.centre + (signs * self.size / 2) @ self.rotation.T
