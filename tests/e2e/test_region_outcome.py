"""What a region does to an edit, through the real ``ns-train pds`` on the toy world: a red ball and a green cube apart
on the floor, "a blue ball" with a box round the ball (toy_world/region_scene.py), read through each thing's own mask
from the world's ray caster (toy_world.outcome.measure_region). Sources are the seeded harness's, edits seed 42, as in
bench/region_outcome.py, whose figures (docs/regions.md) set the thresholds.

The same edit without a region (the region ignored), measured by the benchmark from the same sources and seed, fails
the test: 0.20 / 0.18 / 21.7 dB (ball effect / cube's colour kept / floor PSNR). nerfacto is measured by the benchmark
only (``--capture dome``, docs/regions.md): the ring's tiny nerfacto does not put the ball's samples inside the box, so
its outcome needs a source trained from a dome capture, which alone costs about 6 minutes of CI. The nerfacto box's
mechanics (the source outside it, bit for bit; the edited field for every sample that meets it) are tested in
tests/e2e/test_region.py and tests/scenes/test_models.py.
"""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import shared
from toy_world.outcome import (
    EDIT_FLAGS,
    EDIT_STEPS,
    SPARSE_POINTS,
    measure_region,
    outcome_edit_flags,
    toy_guidance_flags,
    train_source,
    training_views,
)
from toy_world.region_scene import BALL_BOX, THINGS, view_masks, write_region_scene
from toy_world.runs import run_tiny_edit


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return shared(tmp_path_factory, "region_outcome_scene", lambda folder: write_region_scene(folder / "scene", SPARSE_POINTS))


def region_edit(representation: str, scene, torch_home, tmp_path_factory):
    source = shared(tmp_path_factory, f"region_outcome_{representation}", lambda folder: train_source(representation, scene, folder, torch_home))
    flags = [
        *EDIT_FLAGS, *toy_guidance_flags(representation), *outcome_edit_flags("red", "blue"),
        "--machine.seed", "42", "--pipeline.region.box", *BALL_BOX,
    ]  # fmt: skip
    run, _ = run_tiny_edit("pds", source, tmp_path_factory.mktemp("edit"), torch_home, EDIT_STEPS[representation], flags)
    sources, _ = training_views(source / "config.yml")
    edits, _ = training_views(run / "config.yml")
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    filenames = config.pipeline.datamanager.dataparser.setup().get_dataparser_outputs(split="train").image_filenames
    return measure_region(edits, sources, view_masks(scene, [str(f) for f in filenames]), 0, [t.colour for t in THINGS], "blue")


def test_splatfacto_edits_the_ball_in_the_box_and_keeps_the_cube_and_the_floor(scene, torch_home, tmp_path_factory):
    """Measured (two runs: the benchmark's, this test's): 0.58, 0.54 / 0.77, 0.78 / 28.3, 30.1 dB (ball effect / cube's
    colour kept / floor PSNR), the cube's structure (silhouette IoU over the source's) 0.78 in the benchmark's; without
    the region 0.20 / 0.18 / 21.7 dB and structure 0.59: the region both edits the ball more and keeps the rest. Seen
    failing with the region ignored (that run) on every threshold. The ball's own structure is not asserted: it is 0.48
    with the region and 0.45 without (it turns into a blue haze; docs/regions.md)."""
    outcome = region_edit("splatfacto", scene, torch_home, tmp_path_factory)
    assert outcome.effect >= 0.45, outcome
    assert outcome.other_kept >= 0.65, outcome
    assert outcome.floor_psnr >= 25.0, outcome
    assert outcome.other_structure >= 0.68, outcome
