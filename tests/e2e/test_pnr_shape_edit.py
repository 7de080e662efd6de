"""pnr's shape edit through the real ``ns-train pnr``: "a red ball" to "a red cube" gives a red block that the 3D fit
reads as a cube, the floor kept.

**Reduced counts**, so that it fits the default run; the released ones run in ``bench/pnr_shape_edit.py`` (about an
hour a run). The path is the release's objects protocol with a multi-view prior (the toy one, ``toy_world/multiview_prior``,
in MVDream's format): every step a group of 4 orbit views round the object, one t for the group, the x0-reconstruction
objective, AdamW; the box round the ball as the object field (outside it the source's field renders). Reduced or set
for the toy world, each said in docs/toy_world.md:

- the source: nerfacto from the dome capture (:data:`toy_world.outcome.DOME_CAPTURE`, 160 views from the orbit
  cameras' heights and distances, the dome's field) in :data:`DOME_STEPS` steps (the benchmark's 5000); the ring's 10
  views do not place the ball in space, so a box finds nothing of it there;
- eta typed, :data:`ETA`, instead of Alg. 2's 50 selection steps (Alg. 2 gave this edit 0.06-0.16 in the benchmark's
  runs; it is read in tests/e2e/test_edit_outcome.py);
- :data:`EDIT_STEPS` edit steps (the release's 1500, the t annealing squeezed into them) and no revise steps;
- the toy world's guidance scale 5 (:data:`toy_world.train_multiview_prior.TOY_MULTIVIEW_GUIDANCE_SCALE`; at the
  release's 50 the toy prior's targets melt even the cube itself).

splatfacto is not asserted here: from the ring's source the same edit makes an upright drum, and from a 40-view dome
source (``bench/pnr_shape_edit.py --representation splatfacto --capture dome``) a block the fit reads as a cube, but
that source and edit take about 27 minutes on one thread (docs/toy_world.md).
"""

from __future__ import annotations

import re

import pytest

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world import MULTIVIEW_PRIOR
from toy_world.classify import read
from toy_world.models import seed_torch_home
from toy_world.outcome import (
    DOME_CAPTURE,
    EDIT_FLAGS,
    SPARSE_POINTS,
    fitted_shape,
    measure,
    outcome_edit_flags,
    ring_views,
    train_dome_source,
    training_poses,
    training_views,
)
from toy_world.runs import run_tiny_edit
from toy_world.train_multiview_prior import TOY_MULTIVIEW_GUIDANCE_SCALE, TOY_OBJECT_BOX, toy_orbit_flags
from toy_world.world import Thing, caption, dome_cameras, write_scene

DOME_STEPS = 1500
ETA = 0.1
EDIT_STEPS = 150


@pytest.fixture(scope="module")
def shape_edit(tmp_path_factory):
    """The dome source of the red ball, its ``ns-train pnr`` edit to the red cube, and both read on the dome's 9 views
    at the ring's height and distance (the views the ring capture's outcome tests read)."""
    work = tmp_path_factory.mktemp("pnr-shape")
    torch_home = seed_torch_home(work / "torch_home")
    cameras = dome_cameras(*DOME_CAPTURE)
    scene = write_scene(work / "red-ball", Thing("red", "ball"), size=32, sparse_points=SPARSE_POINTS, cameras=cameras)
    source = train_dome_source(scene, work / "sources", torch_home, steps=DOME_STEPS)
    flags = [
        *EDIT_FLAGS, "--pipeline.guidance.model-id", str(MULTIVIEW_PRIOR),
        *outcome_edit_flags("red", "red", "ball", "cube"),
        "--pipeline.protocol", "objects", "--pipeline.perturbation.eta", str(ETA),
        "--pipeline.edit-steps", str(EDIT_STEPS), "--pipeline.revise-steps", "0", "--pipeline.result-views", "1",
        "--pipeline.guidance.guidance-scale", str(TOY_MULTIVIEW_GUIDANCE_SCALE),
        *toy_orbit_flags(), "--pipeline.region.box", *map(str, TOY_OBJECT_BOX), "--machine.seed", "1",
    ]  # fmt: skip
    run, result = run_tiny_edit("pnr", source, work / "edit", torch_home, EDIT_STEPS, flags)
    sources, captured = training_views(source / "config.yml")
    edits = training_views(run / "config.yml")[0]
    poses = training_poses(source / "config.yml")
    ring = ring_views(poses)
    pick = lambda views: [views[i] for i in ring]  # noqa: E731
    return run, result, pick(sources), pick(captured), pick(edits), pick(poses)


def test_pnr_turns_the_red_ball_into_a_block_the_fit_reads_as_a_cube_and_keeps_the_floor(shape_edit):
    """Measured on this machine (2026-12-07, one thread; fit = the best cube's / the best ball's IoU over the 9 views,
    cube = views the classifier reads cube, red = views it reads red, identity = the floor and sky against the
    source's render; docs/toy_world.md, docs/pnr_shape_edit_reduced.png):

    - the source: fit 0.76 / 0.99 (a ball), 1 of 9 views read cube (the classifier's noise on small silhouettes);
    - this test's edit (seed 1): fit 0.86 / 0.74, 9 of 9 cube, 9 of 9 red, 30.8 dB; the same recipe with seeds 42 and
      7 on a source trained the same way with two threads: 0.86 / 0.74 and 0.85 / 0.72, 9 of 9 cube, 9 of 9 red, 30.7
      and 30.4 dB; after 100 edit steps instead of 150 (seeds 1, 42, 7 on that source) the fit's margin over the ball
      was 0.09-0.10, so 150 it is.

    Seen failing on: the objective's gradient sign flipped (fit 0.83 / 0.78, 7 of 9 cube, 0 of 9 red: a blue blob,
    20.9 dB); the target prompt the source's, "a red ball" (fit 0.71 / 0.95, 0 of 9 cube, 63.3 dB: the ball kept)."""
    run, result, sources, captured, edits, poses = shape_edit
    uses = r"^Step 0 uses: tgt prompt '([^']*)', guidance scale ([0-9.]+)"  # what the first step gave the prior
    used = re.search(uses, result.stdout, re.M)
    assert used is not None and used.group(1) == caption("red", "cube"), used
    assert float(used.group(2)) == TOY_MULTIVIEW_GUIDANCE_SCALE, used
    state = load_checkpoint(newest_checkpoint(run / "nerfstudio_models"))["pipeline"]
    assert float(state["eta"]) == pytest.approx(ETA)  # the eta the run perturbed with

    # the source is a ball (the roundness classifier may call a view of it a cube)
    before = fitted_shape(sources, sources, poses)
    assert before.ball_iou - before.cube_iou >= 0.15, before
    assert len(edits) == 9  # the dome's views at the ring's height and distance, less the one nerfstudio holds out
    fit = fitted_shape(edits, sources, poses)
    readings = [read(view) for view in edits]
    cubes = sum(reading.shape == "cube" for reading in readings)
    reds = sum(reading.colour == "red" for reading in readings)
    identity = measure(edits, sources, captured, "red").identity_psnr
    assert fit.reads_cube, fit  # one cube, the same in every view, fits at least 0.8 and 0.1 better than any ball
    assert cubes >= 8 and reds == len(edits), (cubes, reds)
    assert identity >= 26.0, identity
