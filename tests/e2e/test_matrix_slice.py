"""A slice of the outcome matrix (bench/outcome_matrix.py, docs/outcome_matrix.md) in the default run: pds edits of
the toy world through the real ``ns-train``, read by every outcome measure (toy_world/outcome.py).

The slice: on nerfacto a warm-to-cool ball (red to blue) and a cool-to-warm cube (green to yellow); on splatfacto a
warm-to-cool cube (yellow to green) and a cool-to-warm ball (green to yellow). Each edit is guided as the toy world's
edits are (:data:`toy_world.outcome.TOY_GUIDANCE`: on nerfacto prior v2 at scale 70, on splatfacto the committed prior
at the paper's 100). Each source is the seeded harness's (the same at every run on a machine), edited with the seed
the matrix uses (42). Each threshold is the lowest pds reached over the matrix's seeds (42, 1, 2) less a margin, and
each cell's thresholds together fail sds and dds in pds's place with every seed; taken one by one, some thresholds are
below what sds reaches (it turns more of the cubes and keeps some balls rounder): where sds does better than pds on a
measure, no threshold that pds passes can be above it. The nerfacto cells' pds edits meet issue 38's goal (effect >=
0.8, identity >= 25 dB, structure >= 0.95) with every seed, and their thresholds are at or above it but for the
ball's structure (0.925; pds 0.95-0.97). Each cell's edit was run broken, through the matrix (the same ``ns-train``
command, guidance, source harness and seed 42 as here), and fails:

- the PDS gradient's sign flipped: effect 0.00, identity 6.6 and 7.0 dB on the nerfacto cells (2026-12-08); effect
  0.00-0.01, identity 10.1-14.4 dB on the splatfacto cells;
- pds's identity term psi(t) (x0_tgt - x0_src) removed (a reweighted DDS): nerfacto ball 0.91 / 29.0 dB / 0.92,
  nerfacto cube 1.00 / 24.6 dB / 1.00 (2026-12-08), splatfacto cube 0.71 / 18.3 dB / 0.20, splatfacto ball 0.67 /
  20.9 dB / 0.58 (effect / identity / structure): each misses the identity, and all but the nerfacto cube the
  structure;
- the fields' learning rates typed 0 (nerfacto): nerfstudio's scheduler divided by the rate and every field turned
  NaN, 0.00 / 4.6-4.8 dB; that flag now stops with one line (tests/e2e/test_pds.py);
- a floor turned the target's complement: checked here on every run, the edit's own renders with their floor and
  sky moved 0.15 towards it (:data:`COMPLEMENT_TINT`) must fail the identity threshold, on every cell.

On splatfacto pds misses the goal's identity and structure on both cells (docs/outcome_matrix.md), and the splatfacto
cube's structure is below 0.95 under every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest

from toy_world.models import seed_torch_home
from toy_world.outcome import (
    EDIT_FLAGS,
    EDIT_STEPS,
    SPARSE_POINTS,
    measure,
    outcome_edit_flags,
    tint_floor,
    toy_guidance_flags,
    train_source,
    training_views,
)
from toy_world.runs import run_tiny_edit
from toy_world.world import Thing, write_scene


@dataclass(frozen=True)
class Cell:
    representation: str
    shape: str
    source: str
    target: str
    effect: float
    """Minimum fraction of the object's pixels showing the target colour."""
    identity: float
    """Minimum PSNR (dB) of the floor and sky against the source run's renders."""
    structure: Optional[float]
    """Minimum silhouette IoU over the source reconstruction's own."""
    colour_error: float
    """Maximum distance of the object's mean chromaticity to the target albedo's."""

    @property
    def name(self) -> str:
        return f"{self.representation}-{self.shape}-{self.source}-to-{self.target}"


SLICE = (
    # nerfacto (prior v2 at 70, toy_world.outcome.TOY_GUIDANCE). pds over seeds 42, 1, 2: 0.98-0.99 / 30.9-34.1 dB /
    # 0.95-0.97 / 0.078-0.124, issue 38's goal met with every seed; sds 0.94-0.97 / 25.3-27.1 / 0.95-0.98 fails the
    # identity with every seed; dds 0.87-0.95 / 27.0-30.3 / 0.89-0.93 fails it with seeds 42 and 1 and the structure
    # with seed 2 (30.3 dB / 0.90). sds keeps the ball's silhouette as well as pds does (0.95-0.98), so the identity,
    # not the structure, is what tells them apart; the structure threshold sits a margin below pds's 0.95
    Cell("nerfacto", "ball", "red", "blue", effect=0.9, identity=30.0, structure=0.925, colour_error=0.16),
    # pds 0.99 / 30.4-30.7 / 1.03-1.06 / 0.159-0.168, the goal met with every seed; sds 1.00 / 21.1-21.2 / 0.63-0.66
    # and dds 0.99-1.00 / 24.1-26.0 / 0.98-1.00 fail the identity with every seed
    Cell("nerfacto", "cube", "green", "yellow", effect=0.9, identity=29.0, structure=0.95, colour_error=0.2),
    # splatfacto (the committed prior at 100, toy_world.outcome.TOY_GUIDANCE). pds 0.80-0.87 / 22.8-23.6 / 0.62-0.63 /
    # 0.049-0.053; sds 0.96-0.98 / 17.4-17.8 / 0.55 fails the identity and
    # the structure with every seed, dds (2026-12-07) 0.70-0.74 / 18.0-18.2 / 0.45-0.50 too; the cube's structure is
    # far from the goal's 0.95 under all three
    Cell("splatfacto", "cube", "yellow", "green", effect=0.72, identity=21.0, structure=0.58, colour_error=0.08),
    # pds 0.84-0.89 / 24.8-25.6 / 0.74-0.78 / 0.188-0.221; sds 0.69-0.71 / 22.4-23.3 / 0.90-0.96 fails the effect
    # and the identity with every seed, dds (2026-12-07) 0.67-0.75 / 20.7-21.1 / 0.72-0.81 too
    Cell("splatfacto", "ball", "green", "yellow", effect=0.78, identity=24.0, structure=0.65, colour_error=0.26),
)


COMPLEMENT_TINT = 0.15
"""How far (RGB, along the complement's unit direction) the floor and sky are moved for the complement check: a
clearly tinted floor (a blue edit's: +0.08 red, +0.04 green, -0.12 blue). On the splatfacto cells a tint of 0.05 costs
the identity only 0.5-1.6 dB, inside the margins, and 0.15 costs 2.1-9.1 dB; on the nerfacto cells with prior v2 at
70, 0.15 takes the edits' 34.1 and 30.7 dB to 20.9 and 21.8 dB (2026-12-08)."""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slice")
    return folder, seed_torch_home(folder / "torch_home")


@pytest.mark.parametrize("cell", SLICE, ids=lambda cell: cell.name)
def test_a_pds_edit_of_the_matrix_slice_does_what_the_prompt_says_and_keeps_the_rest(cell: Cell, work):
    folder, torch_home = work
    scene = write_scene(folder / cell.name / "scene", Thing(cell.source, cell.shape), num_views=10, size=32, sparse_points=SPARSE_POINTS)
    source = train_source(cell.representation, scene, folder / cell.name / "source", torch_home)
    sources, captured = training_views(source / "config.yml")
    flags = [*EDIT_FLAGS, *toy_guidance_flags(cell.representation), *outcome_edit_flags(cell.source, cell.target, cell.shape), "--machine.seed", "42"]
    run, _ = run_tiny_edit("pds", source, folder / cell.name / "edit", torch_home, EDIT_STEPS[cell.representation], flags)
    edits = training_views(run / "config.yml")[0]
    outcome = measure(edits, sources, captured, cell.target, cell.source, cell.shape)
    assert outcome.effect >= cell.effect, outcome
    assert outcome.identity_psnr >= cell.identity, outcome
    if cell.structure is not None:
        assert outcome.structure >= cell.structure, outcome
    assert outcome.colour_error <= cell.colour_error, outcome
    # the identity threshold sees a floor turned the target's complement
    drifted = measure(tint_floor(edits, cell.target, COMPLEMENT_TINT), sources, captured, cell.target, cell.source, cell.shape)
    assert drifted.identity_psnr < cell.identity, (outcome, drifted)
