"""The region an edit is limited to (``--pipeline.region.*``): a 3D box in the capture's frame, per-image masks, or both.

What a region does, each part switchable (measured in docs/regions.md):

- ``gradient``: the guidance gradient reaches only the render's pixels inside the region's projection in each edited
  view, at the view's own resolution (a hook on the render, so the mask applies after the VAE encoder's backward);
- ``hold_weight``: outside the region, each edited view is held to the source scene's render of the same view (a
  squared-error term, the mean over the view's pixels outside the region);
- ``freeze_outside`` (splatfacto): only Gaussians inside the region are optimised, densified or culled; the others keep the
  source's values exactly (their gradient and Adam's first moment are zeroed before every step). With masks only,
  a Gaussian is inside when no training view that sees its centre has it outside its mask (the masks' visual hull).
  nerfacto's hash grid is shared by all of space, so its parameters cannot be frozen by place: with a box, the field
  outside the box is instead the source's (a frozen copy of the source field answers for every sample outside it, in
  training and in every later render); with masks only, the gradient mask and the hold term are what keep the outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from PIL import Image
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.scenes.box import Box
from pds_nerfstudio.scenes.rendering import guidance_camera

MASK_SUFFIXES = (".png", ".jpg", ".jpeg")
SEEING_RESOLUTION = 64
"""Short side, in pixels, at which the training views are checked for seeing the box."""


@dataclass(frozen=True)
class RegionConfig:
    """Where the edit may change the scene. Without a box or masks, the whole scene is edited."""

    box: Optional[Tuple[float, ...]] = None
    """The box the edit is limited to, in the capture's world frame (the coordinates of its transforms.json): centre
    x y z, size x y z, and optionally a rotation x y z in degrees (about x, then y, then z), e.g.
    ``--pipeline.region.box 0 0 0.5 1 1 1``."""
    masks: Optional[Path] = None
    """A folder of masks named like the training images (white: edit, black: keep), at the images' size. With a box
    too, the region is the pixels inside both."""
    gradient: bool = True
    """Mask the guidance gradient to the region's pixels of each edited view."""
    hold_weight: Optional[float] = None
    """Weight of the term that holds each edited view to the source's render outside the region (0: none); by default
    1 on nerfacto and 10 on splatfacto, measured on the toy world (docs/regions.md): nerfacto's shared field stops
    editing at 10, splatfacto keeps more of the rest at 10 for little of the edit."""
    freeze_outside: bool = True
    """splatfacto: only Gaussians inside the region are optimised, densified or culled. nerfacto with a box: the field
    outside the box is the source's (a frozen copy kept in the edit's checkpoints)."""

    @property
    def given(self) -> bool:
        return self.box is not None or self.masks is not None

    def check(self, image_filenames: Sequence[Path], cameras: Cameras, transform: Tensor, scale: float) -> None:
        """One-line errors for a box or masks that cannot work, from the dataparser's outputs alone (no model)."""
        if self.hold_weight is not None and self.hold_weight < 0:
            raise InputError(f"--pipeline.region.hold-weight {self.hold_weight}: need 0 or more")
        if self.box is not None:
            if len(self.box) not in (6, 9):
                raise InputError(
                    f"--pipeline.region.box takes 6 numbers (centre x y z, size x y z) or 9 (and a rotation x y z in "
                    f"degrees), got {len(self.box)}"
                )
            if min(self.box[3:6]) <= 0:
                raise InputError(
                    f"--pipeline.region.box: the size {' '.join(f'{s:g}' for s in self.box[3:6])} is empty or inverted; "
                    "give the box's three side lengths, each above 0, after its centre"
                )
            box = Box.from_flag(self.box).in_scene_frame(transform, scale)
            if not any(box.pixels(guidance_camera(cameras[i : i + 1], SEEING_RESOLUTION)).any() for i in range(len(cameras))):
                raise InputError(
                    f"--pipeline.region.box {' '.join(f'{v:g}' for v in self.box)}: no training view sees this box; give "
                    "its centre and size in the coordinates of the capture's transforms.json"
                )
        if self.masks is not None:
            read_masks(self.masks, image_filenames, cameras)

    def setup(self, image_filenames: Sequence[Path], cameras: Cameras, transform: Tensor, scale: float) -> "Region":
        box = Box.from_flag(self.box).in_scene_frame(transform, scale) if self.box is not None else None
        masks = read_masks(self.masks, image_filenames, cameras) if self.masks is not None else None
        return Region(self, box, masks, cameras)


def mask_file(folder: Path, image: Path) -> Optional[Path]:
    """The mask of ``image`` in ``folder``: the same file name, or the same stem with a mask suffix."""
    for candidate in [folder / image.name, *(folder / (image.stem + suffix) for suffix in MASK_SUFFIXES)]:
        if candidate.is_file():
            return candidate
    return None


def read_masks(folder: Path, image_filenames: Sequence[Path], cameras: Cameras) -> List[Tensor]:
    """Each training image's mask as [H, W] bool (above half grey: edit), checked: present, of the image's size, not all
    empty; one-line InputError otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--pipeline.region.masks {folder} is not a folder; give a folder of masks named like the images")
    missing = [Path(name).name for name in image_filenames if mask_file(folder, Path(name)) is None]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(f"--pipeline.region.masks {folder}: no mask for {shown}; add a mask named like each training image")
    masks = []
    for index, name in enumerate(image_filenames):
        path = mask_file(folder, Path(name))
        assert path is not None
        image = np.asarray(Image.open(path).convert("L"))
        size = (int(cameras.height[index].item()), int(cameras.width[index].item()))
        if image.shape != size:
            raise InputError(
                f"--pipeline.region.masks: {path.name} is {image.shape[1]}x{image.shape[0]} but its image is "
                f"{size[1]}x{size[0]}; give masks at the images' size"
            )
        masks.append(torch.from_numpy(image > 127))
    if not any(mask.any() for mask in masks):
        raise InputError(f"--pipeline.region.masks {folder}: every mask is empty (black); white marks what to edit")
    return masks


class Region:
    """A checked region in the scene's frame: the pixels of a view it covers and the points inside it."""

    def __init__(self, config: RegionConfig, box: Optional[Box], masks: Optional[List[Tensor]], cameras: Cameras):
        self.config = config
        self.box = box
        self.masks = masks
        self._cameras = cameras

    def view_mask(self, index: int, camera: Cameras) -> Tensor:
        """Training view ``index``'s region as seen by ``camera`` (the view at any resolution): [H, W] bool."""
        size = (int(camera.height.item()), int(camera.width.item()))
        inside = torch.ones(size, dtype=torch.bool)
        if self.box is not None:
            inside &= self.box.pixels(camera.to("cpu"))
        if self.masks is not None:
            mask = self.masks[index][None, None].float()
            inside &= F.interpolate(mask, size=size, mode="nearest")[0, 0] > 0.5
        return inside

    def view_masks(self, views: Sequence[int], cameras: Sequence[Cameras]) -> Tensor:
        """[N, 1, H, W] float masks of a step's views."""
        return torch.stack([self.view_mask(index, camera)[None] for index, camera in zip(views, cameras)]).float()

    def contains(self, points: Tensor, seen_by_one: bool = False) -> Tensor:
        """Whether each point [N, 3] of the scene's frame is in the region: inside the box, and inside the masks' visual
        hull (with ``seen_by_one``, where a training view sees it)."""
        inside = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        if self.box is not None:
            inside &= self.box.contains(points)
        if self.masks is not None:
            inside &= self.in_masks(points, seen_by_one)
        return inside

    def in_masks(self, points: Tensor, seen_by_one: bool = False) -> Tensor:
        """Whether each point [N, 3] is inside the masks' visual hull: no training view that sees it has it outside its
        mask (and, with ``seen_by_one``, some view sees it)."""
        assert self.masks is not None
        inside = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        seen_by_any = torch.zeros_like(inside)
        for index, mask in enumerate(self.masks):
            row, column, seen = project(self._cameras[index : index + 1], points)
            hit = torch.zeros_like(inside)
            hit[seen] = mask.to(points.device)[row[seen], column[seen]]
            inside &= hit | ~seen
            seen_by_any |= seen
        return inside & seen_by_any if seen_by_one else inside

    def masks_hit_by(self, camera: Cameras, bounds: Box, samples: int = 96, chunk: int = 4096) -> Tensor:
        """The pixels of a one-camera view whose ray passes through the masks' visual hull (``samples`` points along the
        part of each ray inside the scene's ``bounds``, where some training view sees them): [H, W] bool. For a
        training view with masks that agree, its own mask."""
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        origins, directions = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
        near, far = bounds.span(origins, directions)
        steps = (torch.arange(samples, device=origins.device) + 0.5) / samples
        hit = torch.zeros(origins.shape[0], dtype=torch.bool, device=origins.device)
        for start in range(0, origins.shape[0], chunk):
            rows = slice(start, start + chunk)
            t = near[rows, None] + (far[rows] - near[rows]).clamp(min=0)[:, None] * steps  # [n, samples]
            points = (origins[rows, None] + directions[rows, None] * t[..., None]).reshape(-1, 3)
            inside = self.in_masks(points, seen_by_one=True).view(-1, samples).any(dim=1)
            hit[rows] = inside & (far[rows] >= near[rows])
        return hit.view(rays.origins.shape[:-1])


def project(camera: Cameras, points: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Pixel row and column of each point [N, 3] in a one-camera pinhole view (nerfstudio's OpenGL camera axes: it
    looks down -z, y up), and whether the point is in front of it and inside the image."""
    c2w = camera.camera_to_worlds[0].to(points)
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]
    depth = -local[:, 2]
    front = depth > 1e-6
    safe = torch.where(front, depth, torch.ones_like(depth))
    u = camera.cx[0].to(points) + camera.fx[0].to(points) * local[:, 0] / safe
    v = camera.cy[0].to(points) - camera.fy[0].to(points) * local[:, 1] / safe
    height, width = int(camera.height.item()), int(camera.width.item())
    column, row = u.floor().long(), v.floor().long()
    seen = front & (column >= 0) & (column < width) & (row >= 0) & (row < height)
    return row.clamp(0, height - 1), column.clamp(0, width - 1), seen

