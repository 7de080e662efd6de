"""The region's geometry, checked against the toy world's own ray caster (numpy, its own slab test and cameras), and its
one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.regions.region import RegionConfig, project
from pds_nerfstudio.scenes.box import Box, rotation_from_degrees
from toy_world.world import FLOOR_Z, Thing, focal_for, ring_camera, thing_masks, write_scene

SIZE = 32


def parsed(scene: Path):
    """The toy scene as nerfstudio's dataparser gives it (its auto-orientation, centring and scale applied)."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(data=scene).setup().get_dataparser_outputs(split="train")


@pytest.fixture(scope="module")
def cube_scene(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("cube") / "scene", Thing("green", "cube", (0.3, -0.2), turn=0.4), size=SIZE)


def cube_box(turn: float = 0.4) -> tuple:
    """The flag of a box equal to the toy cube (half side 0.35, resting on the floor, turned about z)."""
    half = 0.35
    return (0.3, -0.2, FLOOR_Z + half, 2 * half, 2 * half, 2 * half, 0.0, 0.0, math.degrees(turn))


def test_a_box_from_the_flag_turns_about_x_then_y_then_z():
    box = Box.from_flag((1, 2, 3, 2, 4, 6, 0, 0, 90))
    assert torch.allclose(box.rotation @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    assert box.contains(torch.tensor([[1.0 - 1.9, 2.0, 3.0], [1.0 - 2.1, 2.0, 3.0], [1.0, 2.9, 3.0]])).tolist() == [True, False, True]
    both = rotation_from_degrees((90, 90, 0))  # x first (y -> z), then y (z -> x)
    assert torch.allclose(both @ torch.tensor([0.0, 1, 0]), torch.tensor([1.0, 0, 0]), atol=1e-6)
    with pytest.raises(ValueError):
        Box.from_flag((1, 2, 3, 4))


def test_the_box_given_in_the_capture_frame_covers_the_cube_in_every_view(cube_scene):
    """A box equal to the toy cube, given in transforms.json's frame, projects through nerfstudio's cameras (after the
    dataparser's orientation, centring and scale) onto the very pixels the world's ray caster draws the cube on."""
    outputs = parsed(cube_scene)
    region = RegionConfig(box=cube_box()).setup(
        outputs.image_filenames, outputs.cameras, outputs.dataparser_transform, outputs.dataparser_scale
    )
    transforms = json.loads((cube_scene / "transforms.json").read_text())
    poses = {Path(f["file_path"]).name: np.array(f["transform_matrix"]) for f in transforms["frames"]}
    for index, name in enumerate(outputs.image_filenames):
        expected = thing_masks(Thing("green", "cube", (0.3, -0.2), turn=0.4), poses[Path(name).name], SIZE, focal_for(SIZE))[0]
        got = region.view_mask(index, outputs.cameras[index : index + 1]).numpy()
        assert expected.sum() > 20
        assert (got != expected).sum() <= 2, f"view {index}: {(got != expected).sum()} pixels differ"  # rays at the edges
    # and a box of the wrong turn does not
    turned = RegionConfig(box=cube_box(turn=1.2)).setup(
        outputs.image_filenames, outputs.cameras, outputs.dataparser_transform, outputs.dataparser_scale
    )
    differing = [(turned.view_mask(i, outputs.cameras[i : i + 1]).numpy() != region.view_mask(i, outputs.cameras[i : i + 1]).numpy()).sum() for i in range(len(outputs.cameras))]
    assert max(differing) > 10


def test_points_inside_the_box_and_inside_the_masks_visual_hull(cube_scene, tmp_path):
    outputs = parsed(cube_scene)
    to_scene = lambda p: outputs.dataparser_scale * (p @ outputs.dataparser_transform[:, :3].T + outputs.dataparser_transform[:, 3])  # noqa: E731
    centre = torch.tensor([0.3, -0.2, FLOOR_Z + 0.35])
    inside, beside, above = centre, centre + torch.tensor([0.0, 0.0, 0.1]), centre + torch.tensor([0.0, 0.0, 0.6])
    points = to_scene(torch.stack([inside, beside, above, torch.tensor([-0.6, 0.5, FLOOR_Z])]))
    box = RegionConfig(box=cube_box()).setup(outputs.image_filenames, outputs.cameras, outputs.dataparser_transform, outputs.dataparser_scale)
    assert box.contains(points).tolist() == [True, True, False, False]
    # masks: the cube's own pixels in every image, as a user would paint them
    transforms = json.loads((cube_scene / "transforms.json").read_text())
    masks = tmp_path / "masks"
    masks.mkdir()
    for frame in transforms["frames"]:
        mask = thing_masks(Thing("green", "cube", (0.3, -0.2), turn=0.4), np.array(frame["transform_matrix"]), SIZE)[0]
        Image.fromarray((mask * 255).astype(np.uint8)).save(masks / Path(frame["file_path"]).name)
    hull = RegionConfig(masks=masks).setup(outputs.image_filenames, outputs.cameras, outputs.dataparser_transform, outputs.dataparser_scale)
    assert hull.contains(points).tolist() == [True, True, False, False]
    row, column, seen = project(outputs.cameras[0:1], points[:1])
    assert seen.item() and hull.masks[0][row, column].item()


def test_bad_boxes_and_masks_stop_with_one_line(cube_scene, tmp_path):
    outputs = parsed(cube_scene)
    args = (outputs.image_filenames, outputs.cameras, outputs.dataparser_transform, outputs.dataparser_scale)

    def error(**region) -> str:
        with pytest.raises(InputError) as info:
            RegionConfig(**region).check(*args)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "empty or inverted" in error(box=(0, 0, 0, 1, 0, 1))
    assert "empty or inverted" in error(box=(0, 0, 0, 1, -1, 1))
    assert "6 numbers" in error(box=(0, 0, 0, 1))
    assert "no training view sees" in error(box=(40, 40, 40, 1, 1, 1))
    assert "is not a folder" in error(masks=tmp_path / "none")
    masks = tmp_path / "masks"
    masks.mkdir()
    names = [Path(name).name for name in outputs.image_filenames]
    for name in names[1:]:
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(masks / name)
    assert f"no mask for {names[0]}" in error(masks=masks)
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(masks / names[0])
    assert "every mask is empty" in error(masks=masks)
    Image.fromarray(np.full((SIZE, SIZE * 2), 255, np.uint8)).save(masks / names[0])
    assert f"{names[0]} is 64x32 but its image is 32x32" in error(masks=masks)
    Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(masks / names[0])
    RegionConfig(masks=masks, box=cube_box()).check(*args)  # fine now
    assert "hold-weight" in error(box=cube_box(), hold_weight=-1)


def test_ring_cameras_see_the_origin():
    """The toy world's cameras look at the origin (what the box checks above rely on)."""
    c2w = ring_camera(0.7)
    forward = -c2w[:3, 2]
    assert np.allclose(forward, -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-6)
