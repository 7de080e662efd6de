"""The toy world's scene for region edits: a red ball and a green cube apart on the floor, a box round the ball, and
each thing's own mask in every training view (the classifier reads all saturated pixels as one object)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from toy_world.world import FLOOR_Z, OBJECT_SIZE, Thing, thing_masks, write_scene

THINGS = (Thing("red", "ball", (-0.5, 0.0)), Thing("green", "cube", (0.5, 0.0)))
"""The scene: the ball to edit, the cube to keep."""
BOX_HALF = 0.45
"""Half the side of the box round the ball (radius 0.35 at (-0.5, 0, 0)); the floor beneath the ball is inside it."""
BOX_THING = Thing("red", "cube", (-0.5, 0.0), scale=BOX_HALF / OBJECT_SIZE)
"""The box as a toy-world cube resting on the floor: the world's ray caster draws the pixels it covers."""
BALL_BOX: List[str] = ["-0.5", "0", f"{FLOOR_Z + BOX_HALF:g}", *[f"{2 * BOX_HALF:g}"] * 3]
"""``--pipeline.region.box`` of the box, in the world's (transforms.json's) frame."""


def write_region_scene(path: Path, sparse_points: int, cameras: Optional[Sequence[np.ndarray]] = None) -> Path:
    """The scene from the ring's 10 views, or from ``cameras`` (e.g. a dome capture's) when given."""
    return write_scene(path, list(THINGS), num_views=10, size=32, sparse_points=sparse_points, cameras=cameras)


def view_masks(scene: Path, image_filenames: Sequence[str], things: Sequence[Thing] = THINGS, size: int = 0) -> List[List[np.ndarray]]:
    """Each training view's masks of ``things`` (at ``size`` px, default the images'), from the camera the scene's
    transforms.json gives the view."""
    transforms = json.loads((scene / "transforms.json").read_text())
    poses = {Path(frame["file_path"]).name: np.array(frame["transform_matrix"]) for frame in transforms["frames"]}
    size = size or transforms["w"]
    focal = transforms["fl_x"] * size / transforms["w"]
    return [thing_masks(list(things), poses[Path(name).name], size, focal) for name in image_filenames]
