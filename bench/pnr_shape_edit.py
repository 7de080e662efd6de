"""pnr on a shape edit at its released step counts, measured with the toy-world prior at every kept checkpoint.

The edit pds cannot make, "a red ball" to "a red cube", run with pnr's objects protocol as released (50 eta-selection
steps, 1500 edit and 1000 revise steps, eta chosen by Alg. 2) through the real ``ns-train`` on the outcome tests'
tiny nerfacto source, a checkpoint kept every ``--every`` steps. Each checkpoint's renders of the 9 training views
are read with :mod:`toy_world.outcome` and :mod:`toy_world.classify`: identity (PSNR of the pixels away from the ball
against the source run's render), the object's pixel count, its colour and its roundness (a ball 0.76 and above).
The table is printed (docs/toy_world.md quotes it) and the views go to docs/pnr_shape_edit.png, a row a checkpoint.

    python bench/pnr_shape_edit.py                  # the released counts: 2550 steps, about an hour on 2 cores
    python bench/pnr_shape_edit.py --edit-steps 20 --revise-steps 10 --every 20 --no-write   # a check, 2 min
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def checkpoint_row(label: str, views: Sequence[np.ndarray], sources, captured) -> str:
    """One table row: identity, object pixels, views read red, roundness range of the views that show an object."""
    from toy_world.classify import read
    from toy_world.outcome import measure

    readings = [read(view) for view in views]
    pixels = [int(reading.mask.sum()) for reading in readings]
    roundness = [reading.roundness for reading in readings if reading.shape is not None]
    red = sum(reading.colour == "red" for reading in readings)
    identity = measure(views, sources, captured, "red").identity_psnr
    spread = f"{min(roundness):.2f}-{max(roundness):.2f}" if roundness else "-"
    return f"| {label} | {identity:.1f} | {min(pixels)}-{max(pixels)} | {red} of {len(views)} | {spread} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edit-steps", type=int, help="default pnr's, the released 1500")
    parser.add_argument("--revise-steps", type=int, help="default pnr's, the released 1000")
    parser.add_argument("--every", type=int, default=250, help="steps between kept checkpoints")
    parser.add_argument("--seed", type=int, default=1, help="--machine.seed of the edit")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ as it is")
    args = parser.parse_args()
    from pnr_nerfstudio.pipeline import PnRPipelineConfig
    from pnr_nerfstudio.schedules import Phase
    from toy_world import PRIOR
    from toy_world.models import seed_torch_home
    from toy_world.outcome import (
        EDIT_FLAGS,
        SOURCE_FLAGS,
        SOURCE_STEPS,
        SPARSE_POINTS,
        kept_checkpoint_views,
        outcome_edit_flags,
        save_views,
        training_views,
    )
    from toy_world.runs import run_tiny_edit, train_tiny_nerfacto
    from toy_world.world import Thing, write_scene

    released = PnRPipelineConfig()
    args.edit_steps = released.edit_steps if args.edit_steps is None else args.edit_steps
    args.revise_steps = released.revise_steps if args.revise_steps is None else args.revise_steps
    plan = dataclasses.replace(released, edit_steps=args.edit_steps, revise_steps=args.revise_steps).phases
    revise_start = plan.start(Phase.REVISE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch_home = seed_torch_home(work / "torch_home")
        # the runs load in this process too (to render their checkpoints): LPIPS constructs offline from this folder
        os.environ.update(TORCH_HOME=str(torch_home), HF_HUB_OFFLINE="1")
        scene = write_scene(work / "red-ball", Thing("red", "ball"), num_views=10, size=32, sparse_points=SPARSE_POINTS)
        source = train_tiny_nerfacto(scene, work / "sources", torch_home, SOURCE_STEPS, extra_args=SOURCE_FLAGS)
        flags = [
            *EDIT_FLAGS, *outcome_edit_flags(str(PRIOR), "red", "red", "ball", target_shape="cube"),
            "--pipeline.result-views", "1", "--machine.seed", str(args.seed), "--pipeline.protocol", "objects",
            "--pipeline.edit-steps", str(args.edit_steps), "--pipeline.revise-steps", str(args.revise_steps),
            "--steps-per-save", str(args.every), "--save-only-latest-checkpoint", "False",
        ]  # fmt: skip
        run, _ = run_tiny_edit("pnr", source, work / "edit", torch_home, plan.total_steps, flags, timeout=6 * 3600)
        sources, captured = training_views(source / "config.yml")
        print("| checkpoint | phase | identity (dB) | object pixels | read red | roundness |\n|---|---|---|---|---|---|")
        print(checkpoint_row("source | -", sources, sources, captured), flush=True)
        rows = [captured, sources]
        for step, views in kept_checkpoint_views(run):
            phase = f"{plan.phase(step).label} {plan.step_in_phase(step)}"
            print(checkpoint_row(f"{step} | {phase}", views, sources, captured), flush=True)
            if step > revise_start - args.every:  # the last checkpoint of the edit steps and every one after
                rows.append(views)
    if not args.no_write:
        save_views(rows, ROOT / "docs" / "pnr_shape_edit.png")


if __name__ == "__main__":
    main()
