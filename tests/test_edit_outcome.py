"""Edits that do what the prompt says, measured with the trained toy-world prior through the real ``ns-train``.

A tiny nerfacto of a red ball on a grey floor is edited to "a blue ball" with ``pds``. :mod:`toy_world.outcome`
reads the result on every training view: the effect (the fraction of the ball's pixels that show the target colour)
and the identity (PSNR of every other pixel against the source run's render). The thresholds are the measurements of
docs/toy_world.md with a margin. (pds against sds and dds is a benchmark, bench/edit_outcome.py, not a test: in one
of four paired runs sds kept as much as pds, so no threshold on their difference would be both meaningful and safe.)

Not in the default run (``pytest -m outcome`` runs it, about 2 minutes): the test trains a fresh source, and on one
fresh source in six (nerfacto on the CPU is not bit-reproducible) the same edit turned the whole scene red, then
orange (effect 0.27, identity 12.3 dB after 200 steps), which fails it; docs/toy_world.md has the runs. Until that
is understood, a default run would fail about one CI run in six for a reason no change caused.
"""

from __future__ import annotations

import pytest

from tests.harness import run_tiny_edit, seed_torch_home, train_tiny_nerfacto
from toy_world import PRIOR
from toy_world.outcome import EDIT_FLAGS, SOURCE_FLAGS, SOURCE_STEPS, measure, outcome_edit_flags, training_views
from toy_world.world import Thing, write_scene

STEPS = 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("outcome")
    torch_home = seed_torch_home(work / "torch_home")
    scene = write_scene(work / "red-ball", Thing("red", "ball"), num_views=10, size=32)
    source = train_tiny_nerfacto(scene, work / "outputs", torch_home, steps=SOURCE_STEPS, extra_args=SOURCE_FLAGS)
    return work, torch_home, source


@pytest.mark.outcome
def test_pds_turns_the_ball_blue_and_keeps_the_floor(world):
    """Measured over 7 runs (docs/toy_world.md): effect 0.86-0.97, identity 17.0-26.4 dB. Broken, the edit fails both:
    with the gradient's sign flipped, effect 0.00 and identity 12.0 dB; with no gradient, the source's own renders
    score effect 0 (checked here)."""
    work, torch_home, source = world
    run, _ = run_tiny_edit("pds", source, work / "edit", torch_home, STEPS, [*EDIT_FLAGS, *outcome_edit_flags(str(PRIOR), "red", "blue")])
    sources, captured = training_views(source / "config.yml")
    outcome = measure(training_views(run / "config.yml")[0], sources, captured, "blue")
    assert outcome.effect >= 0.7, outcome
    assert outcome.identity_psnr >= 14.0, outcome
    unedited = measure(sources, sources, captured, "blue")
    assert unedited.effect < 0.05 and unedited.identity_psnr == float("inf")
