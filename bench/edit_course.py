"""How steady is an edit's reading at its last step? A few cells of the outcome matrix, read at every checkpoint.

The outcome matrix reads each edit once, at its last step. This script runs the same edits (the same sources, kept
under a matrix's ``--out``, and the same flags and seed) keeping a checkpoint every ``--every`` steps, and reads each
checkpoint as the matrix reads the last: effect, identity, structure, outline, and the object's brightness against the
world's target object (``toy_world.outcome.object_brightness``). For each edit it prints the course and, over the
second half of the edit, each reading's range beside its value at the last step: how much of a cell's figure is where
the edit happened to be when it stopped.

    python bench/edit_course.py --out /tmp/om_v2_scales --only ball:red:blue cube:yellow:green \\
        --extra-flags --pipeline.guidance.model-id toy_world/prior_v2 --pipeline.guidance.guidance-scale 70
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

READINGS = ("effect", "identity_psnr", "structure", "outline", "brightness")


def course(matrix, shape: str, source: str, target: str, method: str, seed: int, steps: int, every: int):
    """[(step, {reading: value})] for every checkpoint of the edit, run unless kept under ``matrix.out / "courses"``."""
    from outcome_matrix import Cell

    from toy_world.outcome import (
        kept_checkpoint_views,
        measure,
        object_brightness,
    )
    from toy_world.runs import find_run_dirs, run_tiny_edit

    source_run = matrix.source("nerfacto", shape, source)
    cell = Cell("nerfacto", shape, source, target, method, seed)
    folder = matrix.out / "courses" / f"{cell.key(steps, matrix.extra_flags)}-every{every}"
    runs = [run for run in find_run_dirs(folder, method="pds") if (run / "nerfstudio_models" / f"step-{steps - 1:09d}.ckpt").exists()]
    if runs:  # a finished run of this edit (an interrupted one is run again)
        run = runs[-1]
    else:
        flags = [*matrix.edit_flags(cell), "--steps-per-save", str(every), "--save-only-latest-checkpoint", "False"]
        run, _ = run_tiny_edit("pds", source_run, folder, matrix.torch_home, steps, flags)
    read, poses = matrix.read[source_run], matrix.poses[source_run]
    renders, captured, empty = matrix.source_views["nerfacto", shape, source]
    readings = []
    for step, views in kept_checkpoint_views(run):
        edits = [views[i] for i in read]
        outcome = measure(edits, renders, captured, target, source, shape, empty_views=empty).as_dict()
        readings.append((step, {**outcome, "brightness": object_brightness(edits, poses, target, shape)}))
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a matrix's --out: its sources are used (trained there if missing)")
    parser.add_argument("--only", nargs="+", required=True, metavar="SHAPE:SOURCE:TARGET")
    parser.add_argument("--method", default="pds", choices=["pds", "sds", "dds"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=25, help="steps between the checkpoints read")
    parser.add_argument("--extra-flags", nargs=argparse.REMAINDER, default=[], help="ns-train flags added to every edit (last)")
    args = parser.parse_args()
    from outcome_matrix import Matrix

    matrix = Matrix(args.out, {"nerfacto": args.steps}, args.extra_flags, user_sources=False)
    header = "| step | " + " | ".join(READINGS) + " |"
    spreads = []
    for cell in args.only:
        shape, source, target = cell.split(":")
        readings = course(matrix, shape, source, target, args.method, args.seed, args.steps, args.every)
        print(f"\n{shape} {source} -> {target} ({args.method}, seed {args.seed}):\n\n{header}\n|---|" + "---|" * len(READINGS))
        for step, values in readings:
            print(f"| {step} | " + " | ".join(f"{values[name]:.2f}" for name in READINGS) + " |")
        late = [values for step, values in readings if step >= args.steps // 2]
        spreads.append((cell, {name: (readings[-1][1][name], min(v[name] for v in late), max(v[name] for v in late)) for name in READINGS}))
    print(f"\nOver the second half of each edit (steps >= {args.steps // 2}): the last step's reading (min-max).\n")
    print("| edit | " + " | ".join(READINGS) + " |\n|---|" + "---|" * len(READINGS))
    for cell, spread in spreads:
        print(f"| {cell} | " + " | ".join(f"{last:.2f} ({low:.2f}-{high:.2f})" for last, low, high in spread.values()) + " |")


if __name__ == "__main__":
    main()
