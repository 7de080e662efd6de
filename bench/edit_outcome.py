"""Edit outcome against steps: how many steps an edit needs, measured with the toy-world prior, hardware-independent.

A tiny source (nerfacto and splatfacto) of a red ball on a grey floor is edited to "a blue ball" with each method
through the real ``ns-train``, a checkpoint kept every ``--every`` steps; :mod:`toy_world.outcome` reads each
checkpoint's renders of the training views: the effect (fraction of the ball's pixels showing blue) and the
identity (PSNR of every other pixel against the source run's render). The table goes to docs/benchmarks.md and the
plot to docs/edit_outcome.png, so that a change meant to make edits faster can be judged by the steps it saves.

    python bench/edit_outcome.py        # pds, sds, dds, pnr; nerfacto 200 steps, splatfacto 500 (24 min on 2 cores)
    python bench/edit_outcome.py --nerfacto-steps 20 --checkpoints 2 --methods pds --representations nerfacto --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.report import replace_section  # noqa: E402

MARKER = "<!-- bench:edit-outcome -->"


def measure_method(
    method: str, representation: str, source: Path, work: Path, torch_home: Path, steps: int, every: int
) -> List[Tuple[int, float, float]]:
    """(steps done, effect, identity dB) at every kept checkpoint of one edit, guided as the toy world's edits of
    ``representation`` are (:data:`toy_world.outcome.TOY_GUIDANCE`)."""
    from toy_world.outcome import (
        EDIT_FLAGS,
        kept_checkpoint_views,
        measure,
        outcome_edit_flags,
        toy_guidance_flags,
        training_views,
    )
    from toy_world.runs import run_tiny_edit

    flags = [
        *EDIT_FLAGS, *toy_guidance_flags(representation), *outcome_edit_flags("red", "blue"),
        "--steps-per-save", str(every), "--save-only-latest-checkpoint", "False",
    ]  # fmt: skip
    if method == "pnr":
        flags += pnr_phases(steps)
    else:
        flags += ["--pipeline.guidance.method", method]
    run, _ = run_tiny_edit("pnr" if method == "pnr" else "pds", source, work / f"edit-{method}", torch_home, steps, flags)
    sources, captured = training_views(source / "config.yml")  # once: every checkpoint is compared with these
    rows = []
    for step, views in kept_checkpoint_views(run):
        outcome = measure(views, sources, captured, "blue")
        rows.append((step + 1, outcome.effect, outcome.identity_psnr))
        print(f"{method} step {step + 1}: effect {outcome.effect:.2f}, identity {outcome.identity_psnr:.1f} dB", flush=True)
    return rows


PNR_SELECTION_STEPS = 50
"""pnr's eta-selection steps (the objects protocol's): they are counted in its steps and thrown away after."""


def pnr_phases(steps: int) -> List[str]:
    """pnr's objects protocol in ``steps`` steps: its 50 eta-selection steps, then the rest split as the released
    1500 edit and 1000 revise steps are (3 : 2)."""
    rest = steps - PNR_SELECTION_STEPS
    if rest < 2:
        raise SystemExit(f"pnr needs more than {PNR_SELECTION_STEPS + 1} steps (its eta selection), got {steps}")
    revise = max(1, rest * 2 // 5)
    return ["--pipeline.protocol", "objects", "--pipeline.edit-steps", str(rest - revise), "--pipeline.revise-steps", str(revise)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nerfacto-steps", type=int, default=200)
    parser.add_argument("--splatfacto-steps", type=int, default=500, help="splatfacto's learning rates are 4 to 60 times lower than nerfacto's")
    parser.add_argument("--checkpoints", type=int, default=8, help="checkpoints measured per edit, evenly spaced")
    parser.add_argument("--methods", nargs="+", default=["pds", "sds", "dds", "pnr"], choices=["pds", "sds", "dds", "pnr"])
    parser.add_argument("--representations", nargs="+", default=["nerfacto", "splatfacto"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ as it is")
    args = parser.parse_args()
    from toy_world.models import seed_torch_home
    from toy_world.outcome import SOURCE_FLAGS, SOURCE_STEPS, SPARSE_POINTS, SPLAT_SOURCE_FLAGS
    from toy_world.runs import train_tiny_nerfacto, train_tiny_splatfacto
    from toy_world.world import Thing, write_scene

    start = time.perf_counter()
    results: Dict[Tuple[str, str], List[Tuple[int, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch_home = seed_torch_home(work / "torch_home")
        # the runs load in this process too (to render their checkpoints): LPIPS constructs offline from this folder
        os.environ.update(TORCH_HOME=str(torch_home), HF_HUB_OFFLINE="1")
        scene = write_scene(work / "red-ball", Thing("red", "ball"), num_views=10, size=32, sparse_points=SPARSE_POINTS)
        for representation in args.representations:
            if representation == "nerfacto":
                source = train_tiny_nerfacto(scene, work / "sources", torch_home, SOURCE_STEPS, extra_args=SOURCE_FLAGS)
            else:
                source = train_tiny_splatfacto(scene, work / "sources", torch_home, SOURCE_STEPS, SPLAT_SOURCE_FLAGS)
            steps = args.nerfacto_steps if representation == "nerfacto" else args.splatfacto_steps
            for method in args.methods:
                results[representation, method] = measure_method(
                    method, representation, source, work / representation, torch_home, steps, max(1, steps // args.checkpoints)
                )
    elapsed = time.perf_counter() - start
    body = report(results, elapsed)
    print(body)
    if not args.no_write:
        replace_section(ROOT / "docs" / "benchmarks.md", MARKER, body)
        plot(results, ROOT / "docs" / "edit_outcome.png")


def report(results, elapsed: float) -> str:
    lines = [
        "## Edit outcome against steps (toy-world prior)",
        "",
        f"`python bench/edit_outcome.py` ({platform.machine()}, {elapsed / 60:.0f} min). A tiny source of a red ball on a "
        "grey floor (10 views, 32 px; nerfacto and splatfacto, 400 steps, splatfacto from the scene's 600 sparse points at "
        "full size) edited to \"a photo of a blue ball on a grey "
        "floor\" with the toy world's guidance (`toy_world.outcome.TOY_GUIDANCE`: nerfacto prior v2 at scale 70, "
        "splatfacto the committed prior at 100), every other setting the method's default; each "
        "cell is *effect / identity*: the fraction of the ball's pixels that show blue, and the PSNR (dB) of the other "
        "pixels against the source run's render, over the 9 training views (`toy_world.outcome`). Steps count the "
        "optimizer steps done (nerfstudio saves after step N, so N + 1). One run each: a single run's identity varies by "
        "several dB (docs/toy_world.md). pnr runs its objects protocol in the same steps: 50 eta-selection steps "
        "(then thrown away: its first cells are the selection steps' state), the rest edit and revise 3 : 2 as released "
        "(1500 : 1000). The step counts do not depend on the hardware. Plot: "
        "[edit_outcome.png](edit_outcome.png).",
    ]
    for representation in dict.fromkeys(r for r, _ in results):
        rows = {method: rows for (r, method), rows in results.items() if r == representation}
        steps = sorted({row[0] for method_rows in rows.values() for row in method_rows})
        lines += ["", f"{representation}:", "", "| method | " + " | ".join(f"{s} steps" for s in steps) + " |", "|" + "---|" * (len(steps) + 1)]
        for method, method_rows in rows.items():
            cells = {row[0]: f"{row[1]:.2f} / {row[2]:.1f}" for row in method_rows}
            lines.append(f"| {method} | " + " | ".join(cells.get(s, "") for s in steps) + " |")
    return "\n".join(lines) + "\n"


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (effect_axis, identity_axis) = plt.subplots(1, 2, figsize=(10, 4))
    methods = list(dict.fromkeys(method for _, method in results))
    for (representation, method), rows in results.items():
        # one colour a method, one line style a representation
        style = dict(color=f"C{methods.index(method)}", linestyle="-" if representation == "nerfacto" else "--", marker="o")
        steps, effects, identities = zip(*rows)
        effect_axis.plot(steps, effects, label=f"{method} ({representation})", **style)
        identity_axis.plot(steps, identities, label=f"{method} ({representation})", **style)
    effect_axis.set(xlabel="edit steps", ylabel="effect: ball pixels that are blue", ylim=(-0.05, 1.05))
    identity_axis.set(xlabel="edit steps", ylabel="identity: PSNR of the rest (dB)")
    effect_axis.legend(fontsize=8)
    figure.suptitle("red ball -> blue ball, toy-world prior")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
