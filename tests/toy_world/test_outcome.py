"""The outcome measures on renders whose answer is known: the world's own ray caster draws the source, a perfect
recolour, nothing done, a melted or shrunken object, a cube where the ball was and a floor turned the target's
complement, and each measure must read what a person sees in them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from toy_world.classify import object_mask
from toy_world.outcome import measure, object_brightness, save_views, tint_floor
from toy_world.world import Thing, render, ring_camera

VIEWS = [ring_camera(2 * np.pi * i / 9) for i in range(9)]


def views(thing: Thing) -> list:
    return [render(thing, c2w, 32) for c2w in VIEWS]


@pytest.fixture(scope="module")
def red_ball():
    return views(Thing("red", "ball"))


def test_a_perfect_recolour_reads_as_full_effect_kept_structure_and_the_target_colour(red_ball):
    outcome = measure(views(Thing("blue", "ball")), red_ball, red_ball, "blue", "red", "ball")
    assert outcome.effect == 1.0 and outcome.identity_psnr == float("inf")
    assert outcome.structure == 1.0 and outcome.shape_read == outcome.source_shape_read == 1.0
    assert outcome.colour_error < 1e-9 and outcome.source_colour_error < 1e-9


def test_an_edit_that_does_nothing_has_no_effect_and_the_wrong_colour(red_ball):
    outcome = measure(red_ball, red_ball, red_ball, "blue", "red", "ball")
    assert outcome.effect == 0.0 and outcome.structure == 1.0
    assert outcome.colour_error > 0.5  # red's chromaticity is 0.86 from blue's


def test_a_shrunken_or_melted_object_loses_structure_whatever_its_colour(red_ball):
    shrunk = measure(views(Thing("blue", "ball", scale=0.7)), red_ball, red_ball, "blue", "red", "ball")
    assert shrunk.structure < 0.6
    assert shrunk.colour_error > 0.1  # read where the captured ball is: half of it is now floor
    # a blob: the blue ball's colour smeared over twice its width (what a melted cube looks like)
    blurred = []
    for image in views(Thing("blue", "ball")):
        padded = np.pad(image, ((3, 3), (3, 3), (0, 0)), mode="edge")
        blurred.append(np.mean([padded[dy : dy + 32, dx : dx + 32] for dy in range(7) for dx in range(7)], axis=0))
    melted = measure(blurred, red_ball, red_ball, "blue", "red", "ball")
    assert melted.structure < 0.9


def test_a_cube_where_the_ball_was_is_read_as_another_shape(red_ball):
    outcome = measure(views(Thing("red", "cube")), red_ball, red_ball, "red", "red", "ball")
    # read within 3 px of the ball, 2 of the 9 cubes lose enough corner to look round
    assert outcome.shape_read < 0.3 and outcome.source_shape_read == 1.0 and outcome.structure < 0.7


def test_a_floor_turned_the_targets_complement_costs_identity(red_ball):
    """The drift pds is meant to prevent: the floor yellower under a blue edit. A tint of 0.1 towards yellow costs the
    identity 20 dB; the object's measures stay perfect."""
    edit = []
    for image in views(Thing("blue", "ball")):
        grey = (image.max(-1) - image.min(-1)) < 0.1
        edit.append(np.where(grey[..., None], np.clip(image + np.array([0.1, 0.1, -0.1]), 0, 1), image))
    outcome = measure(edit, red_ball, red_ball, "blue", "red", "ball")
    assert outcome.effect == 1.0 and outcome.structure == 1.0 and outcome.shape_read == 1.0
    assert outcome.identity_psnr < 21.0
    assert outcome.floor_shift > 0.02  # towards blue's complement
    assert measure(tint_floor(views(Thing("blue", "ball")), "blue", 0.1), red_ball, red_ball, "blue").floor_shift > 0.02
    assert measure(tint_floor(views(Thing("blue", "ball")), "yellow", 0.1), red_ball, red_ball, "blue").floor_shift < -0.02
    assert measure(views(Thing("blue", "ball")), red_ball, red_ball, "blue").floor_shift == 0.0


def test_save_views_draws_source_and_edit_side_by_side_enlarged(tmp_path, red_ball):
    edit = views(Thing("blue", "ball"))
    save_views([(s, e) for s, e in zip(red_ball, edit)], tmp_path / "picture.png", scale=4)
    picture = np.asarray(Image.open(tmp_path / "picture.png").convert("RGB"), dtype=np.float64) / 255
    assert picture.shape == (9 * 32 * 4, 2 * 32 * 4, 3)
    # the first row's right half is the first edit, enlarged by repeating each pixel 4 times
    np.testing.assert_allclose(picture[:128:4, 128::4], edit[0], atol=1 / 255)


def test_specks_far_from_the_object_are_the_identitys_loss_not_the_shapes(red_ball):
    specked = []
    for image in views(Thing("blue", "ball")):
        image = image.copy()
        image[1:3, 1:3] = [0.1, 0.2, 0.9]  # a blue speck in a far corner
        specked.append(image)
    outcome = measure(specked, red_ball, red_ball, "blue", "red", "ball")
    assert outcome.structure == 1.0 and outcome.shape_read == 1.0 and outcome.identity_psnr < 40.0


def test_an_object_grown_into_the_floor_is_not_read_as_a_floor_shift(red_ball):
    grown = views(Thing("blue", "ball", scale=1.15))  # within the 3-pixel window
    outcome = measure(grown, red_ball, red_ball, "blue", "red", "ball")
    assert abs(outcome.floor_shift) < 1e-3 and outcome.structure < 0.95


def test_the_shape_fit_reads_one_3d_cube_and_not_a_blob(red_ball):
    """fitted_shape: the ball reads ball; a turned, larger cube reads cube at its size and turn; the blob a melted
    ball makes (the roundness classifier's "cube") fits neither well; the needles pnr grew on the toy world would
    be a cube by roundness, not by the fit."""
    from toy_world.outcome import CUBE_FIT, fitted_shape

    ball = fitted_shape(red_ball, red_ball, VIEWS)
    assert ball.shape == "ball" and ball.ball_iou == 1.0 and ball.cube_iou < 0.8
    cube = fitted_shape(views(Thing("red", "cube", scale=1.2, turn=np.deg2rad(30))), red_ball, VIEWS)
    assert cube.shape == "cube" and cube.cube_iou == 1.0 and cube.ball_iou < 0.8
    assert (cube.cube_scale, cube.cube_turn_degrees) == (1.2, pytest.approx(30.0)) and cube.reads_cube
    blob = []
    for image in views(Thing("red", "ball")):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="edge")
        blob.append(np.mean([padded[dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)], axis=0))
    melted = fitted_shape(blob, red_ball, VIEWS)
    assert not melted.reads_cube and melted.cube_iou < CUBE_FIT


def test_the_outline_keeps_a_dark_or_dull_ball_that_the_saturated_silhouette_loses_and_loses_a_melted_one(red_ball):
    """A ball recoloured navy or olive (darker and duller than the world's albedos, what the edits make) is the same
    shape: the outline (contrast with the empty world) reads it whole while the structure (saturated pixels) does not;
    a shrunken ball and a smeared blob lose both."""
    from toy_world.outcome import backgrounds

    empty = backgrounds(VIEWS, 32)
    for albedo in ((0.05, 0.05, 0.2), (0.35, 0.33, 0.12)):  # navy, olive
        dull = [np.where((r.max(-1) - r.min(-1) > 0.1)[..., None], np.array(albedo) * r.max(-1, keepdims=True) / 0.85, r) for r in red_ball]
        outcome = measure(dull, red_ball, red_ball, "blue", "red", "ball", empty_views=empty)
        assert outcome.outline == 1.0 and outcome.structure < 0.8
    shrunk = measure(views(Thing("blue", "ball", scale=0.7)), red_ball, red_ball, "blue", "red", "ball", empty_views=empty)
    assert shrunk.outline < 0.6
    padded = [np.pad(image, ((3, 3), (3, 3), (0, 0)), mode="edge") for image in views(Thing("blue", "ball"))]
    blurred = [np.mean([p[dy : dy + 32, dx : dx + 32] for dy in range(7) for dx in range(7)], axis=0) for p in padded]
    assert measure(blurred, red_ball, red_ball, "blue", "red", "ball", empty_views=empty).outline < 0.9
    cube = measure(views(Thing("red", "cube")), red_ball, red_ball, "red", "red", "ball", empty_views=empty)
    assert cube.outline < 0.7
    assert np.isnan(measure(red_ball, red_ball, red_ball, "red").outline)  # not read without the empty views


def test_the_silhouette_parts_split_a_shrunken_a_grown_and_a_dull_ball_where_a_person_sees_them(red_ball):
    """``silhouette_parts`` (the spill benches' reading): the world's own ball is all saturated inside; a smaller ball
    leaves part of the object absent, a larger one spills past the outline, a navy one is present but dull."""
    from toy_world.outcome import backgrounds, silhouette_parts

    empty = backgrounds(VIEWS, 32)
    assert silhouette_parts(red_ball, red_ball, empty) == pytest.approx([1.0, 0.0, 0.0, 0.0])
    shrunk = silhouette_parts(views(Thing("red", "ball", scale=0.7)), red_ball, empty)
    assert shrunk[2] > 0.3 and shrunk[3] == 0.0
    grown = silhouette_parts(views(Thing("red", "ball", scale=1.3)), red_ball, empty)
    assert grown[0] == pytest.approx(1.0) and grown[3] > 0.3
    navy = [np.where(object_mask(r)[..., None], np.array((0.05, 0.05, 0.2)) * r.max(-1, keepdims=True) / 0.85, r) for r in red_ball]
    dull = silhouette_parts(navy, red_ball, empty)
    assert dull[1] > 0.5 and dull[3] == 0.0


def test_the_brightness_reads_the_world_s_own_object_as_one_a_darker_one_darker_and_the_source_s_colour_by_its_albedo(red_ball):
    blue_ball = views(Thing("blue", "ball"))
    assert object_brightness(blue_ball, VIEWS, "blue", "ball") == pytest.approx(1.0)
    navy = [np.where(object_mask(image)[..., None], image * 0.6, image) for image in blue_ball]
    assert object_brightness(navy, VIEWS, "blue", "ball") == pytest.approx(0.6, abs=0.02)
    # the red ball read against the world's blue one: the ratio of their largest channels (0.85 against 0.9)
    assert object_brightness(red_ball, VIEWS, "blue", "ball") == pytest.approx(0.85 / 0.9, abs=0.02)


def test_the_toy_worlds_identity_weights_are_the_releases_times_its_render_side_over_the_releases():
    """The factor the toy world's pnr runs put on the release's L1 and LPIPS weights (README) follows the two sizes
    it stands for: the toy edits' renders (EDIT_FLAGS) and the release's (the objects protocol's default)."""
    from pnr_nerfstudio.objects import RELEASED_RENDER_RESOLUTION
    from toy_world.outcome import EDIT_FLAGS, TOY_IPG_WEIGHT_SCALE, TOY_RENDER_RESOLUTION

    assert EDIT_FLAGS[EDIT_FLAGS.index("--pipeline.render-resolution") + 1] == str(TOY_RENDER_RESOLUTION)
    assert TOY_IPG_WEIGHT_SCALE == TOY_RENDER_RESOLUTION / RELEASED_RENDER_RESOLUTION == 1 / 8
