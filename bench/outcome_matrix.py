"""The outcome matrix: every colour edit of the toy world, by each method, read by toy_world.outcome's measures.

Every source colour to every other (12 pairs) for a ball and a cube, on tiny nerfacto sources (400 steps, the test
harness's seeded field) and for a few pairs on splatfacto sources; plus a no-op edit (target prompt = source prompt)
of each source, which measures drift. Each cell is one real ``ns-train <method> --load-dir SOURCE`` (the demo's flags:
guidance at 32 px with the toy world's prior and scale, toy_world.outcome.TOY_GUIDANCE: nerfacto prior v2 at 70,
splatfacto the committed prior at 100; ``--extra-flags`` after them), read on the 9 training views: effect, floor identity, structure (the
silhouette's IoU against the captured one, over the source reconstruction's own), the shape classifier's reading and
the colour error (toy_world/outcome.py). The goal for pds (issue 38): effect >= 0.8, identity >= 25 dB and
structure >= 0.95 on every pair.

    python bench/outcome_matrix.py --quick   # one seed, pds and sds, nerfacto, every pair (about 15-20 min on 2 idle cores)
    python bench/outcome_matrix.py           # 3 seeds, pds, sds and dds, nerfacto every pair, splatfacto 4 pairs
    python bench/outcome_matrix.py --methods pds --large-source   # nerfacto sources of the dome's field, 5000 steps
    python bench/outcome_matrix.py --methods pds --capture dome   # those from DOME_CAPTURE's 160 views, read at the ring

Finished edits are kept in ``--out`` (runs.jsonl, each edit's renders of its training views and its picture,
source | edit a row a view): a rerun with the same ``--out`` edits only what is missing, so an interrupted matrix
continues, and reads every kept edit afresh, so a change of the measures needs no new edit. An edit is kept by its
cell, steps and extra flags, not by the code or the prior that made it: measure a change of either in a new
``--out`` (``--quick --out outputs/before``, then ``--quick --out outputs/after``). The table
goes to docs/outcome_matrix.md (a section per ``--label``) and the picture grid to docs/outcome_matrix_<label>.png;
every cell's readings, unrounded, to ``--out``/readings_<label>.jsonl.
Edits run ``--workers`` at a time, each on one thread (two one-thread edits finish a 200-step nerfacto edit in 36 s
each on 2 cores, against 19 s for one on two threads).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads, here and in every edit forked from here

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.report import flags_digest, replace_section  # noqa: E402

GOAL = {"effect": 0.8, "identity_psnr": 25.0, "structure": 0.95}
"""Issue 38's goal for pds on every pair (minimums)."""
SPLAT_PAIRS = (("red", "blue", "ball"), ("yellow", "green", "cube"), ("blue", "red", "cube"), ("green", "yellow", "ball"))
"""The splatfacto slice: two warm-to-cool and two cool-to-warm edits, a ball and a cube each."""
DOCS = ROOT / "docs" / "outcome_matrix.md"


@dataclass(frozen=True)
class Cell:
    representation: str
    shape: str
    source: str
    target: str
    method: str
    seed: int

    def key(self, steps: int, extra_flags: Sequence[str] = (), source_name: str = "ring") -> str:
        """The edit's folder name: the cell, its steps, its source's kind (unless the ring's tiny field) and (hashed)
        its :func:`setting_flags`, so no two settings share one."""
        key = f"{self.representation}-{self.shape}-{self.source}-{self.target}-{self.method}-seed{self.seed}-{steps}steps"
        key += f"-{source_name}" if source_name != "ring" else ""
        setting = setting_flags(self.representation, extra_flags)
        return key + (f"-{flags_digest(setting)}" if setting else "")


def guidance_flags(representation: str, extra_flags: Sequence[str], models: Optional[Path] = None) -> List[str]:
    """The toy world's guidance flags for ``representation`` (toy_world.outcome.TOY_GUIDANCE; the prior's folder under
    ``models``), or none where the extra flags name a prior themselves: then they set the guidance alone, its scale the
    method's default unless they type one (as before the toy world's guidance was set, 2026-12-08)."""
    from toy_world.outcome import toy_guidance_flags

    return [] if "--pipeline.guidance.model-id" in extra_flags else toy_guidance_flags(representation, models)


def setting_flags(representation: str, extra_flags: Sequence[str]) -> List[str]:
    """The flags that set an edit apart from the committed prior at the method's defaults, as typed from the
    repository: the toy world's guidance (unless it is that, or the extra flags name a prior), then the extra flags.
    Edits kept before the toy world's guidance was set keep their keys: those whose extra flags typed prior v2 at 70,
    when the matrix runs with no extra flags; every other, when it runs with the same extra flags. (The committed prior
    at 100 with no extra flags is now ``--extra-flags --pipeline.guidance.model-id toy_world/prior``: a new key.)"""
    from toy_world.outcome import TOY_GUIDANCE

    base = TOY_GUIDANCE[representation] == ("prior", 100.0)  # the committed prior at the method's default scale
    return [*([] if base else guidance_flags(representation, extra_flags, Path("toy_world"))), *extra_flags]


def cells_of(args) -> List[Cell]:
    from toy_world.world import COLOURS, SHAPES

    cells = []
    for representation in args.representations:
        if representation == "nerfacto":
            pairs = [(s, t, shape) for shape in SHAPES for s in COLOURS for t in COLOURS]  # t == s: the no-op edit
        else:
            pairs = [*SPLAT_PAIRS, *{(s, s, shape) for s, _, shape in SPLAT_PAIRS}]
        for (source, target, shape), method, seed in itertools.product(pairs, args.methods, args.seeds):
            cells.append(Cell(representation, shape, source, target, method, seed))
    return cells


class Matrix:
    """The sources, the edits and their readings, kept under ``out`` so that a rerun continues."""

    def __init__(
        self, out: Path, steps: Dict[str, int], extra_flags: Sequence[str], user_sources: bool, capture: str = "ring", large_source: bool = False
    ) -> None:
        from toy_world.models import seed_torch_home

        self.out, self.steps, self.extra_flags, self.user_sources = out, steps, list(extra_flags), user_sources
        self.capture = capture  # "dome": sources from DOME_CAPTURE, read on its views at the ring
        self.large_source = large_source or capture == "dome"  # nerfacto sources of the dome's field and steps
        self.source_name = capture + ("-large" if large_source and capture == "ring" else "")  # in folder names unless "ring"
        self.out.mkdir(parents=True, exist_ok=True)
        self.torch_home = seed_torch_home(out / "torch_home")
        # the runs are rendered in this process too: LPIPS constructs offline from this folder
        os.environ.update(TORCH_HOME=str(self.torch_home), HF_HUB_OFFLINE="1")
        self.runs_file = out / "runs.jsonl"  # a line per finished edit; its renders are in edits/<key>/renders.npz
        self.runs: Dict[str, dict] = {}
        if self.runs_file.exists():
            for line in self.runs_file.read_text().splitlines():
                row = json.loads(line)
                self.runs[row["key"]] = row
        self.lock = threading.Lock()  # rendering in this process (eval_setup, the CPU rasteriser's patch) and the files
        # per source: its renders, its captured images and the empty world's views (the outline's backgrounds)
        self.source_views: Dict[Tuple[str, str, str], Tuple[List[np.ndarray], List[np.ndarray], List[np.ndarray]]] = {}
        self.read: Dict[Path, List[int]] = {}  # a source run's training views that are read (views_read)
        self.poses: Dict[Path, List[np.ndarray]] = {}  # their camera poses (the world's own renders of the target)

    def source(self, representation: str, shape: str, colour: str) -> Path:
        """The source run of one object (trained once; its renders and captured images kept)."""
        from toy_world.outcome import (
            DOME_CAPTURE,
            SPARSE_POINTS,
            backgrounds,
            train_dome_source,
            train_source,
            training_poses,
            training_views,
        )
        from toy_world.runs import find_run_dirs
        from toy_world.world import Thing, dome_cameras, write_scene

        name = f"{colour}-{shape}"
        dome = self.capture == "dome"
        kind = "" if self.source_name == "ring" else f"-{self.source_name}"
        folder = self.out / (("user-sources" if self.user_sources else "sources") + kind) / representation
        runs = find_run_dirs(folder / name, representation)
        if runs:
            run = runs[-1]
        else:
            cameras = dome_cameras(*DOME_CAPTURE) if dome else None
            scene = write_scene(self.out / ("scenes-dome" if dome else "scenes") / name, Thing(colour, shape), num_views=10, size=32,
                                sparse_points=SPARSE_POINTS, cameras=cameras)  # fmt: skip
            if self.large_source and representation == "nerfacto":  # the dome's field and steps (a dome capture's too)
                run = train_dome_source(scene, folder / name, self.torch_home, reproducible=not self.user_sources)
            else:
                run = train_source(representation, scene, folder / name, self.torch_home, reproducible=not self.user_sources)
        with self.lock:
            if (representation, shape, colour) not in self.source_views:
                poses = training_poses(run / "config.yml")
                self.read[run] = self.views_read(poses)
                self.poses[run] = [poses[i] for i in self.read[run]]
                renders, captured = training_views(run / "config.yml")
                self.source_views[representation, shape, colour] = (
                    [renders[i] for i in self.read[run]],
                    [captured[i] for i in self.read[run]],
                    backgrounds([poses[i] for i in self.read[run]], renders[0].shape[0]),
                )
        return run

    def views_read(self, poses: List[np.ndarray]) -> List[int]:
        """The training views the matrix reads, of a source run's training ``poses``: all of the ring's; of a dome
        capture, those at the ring's height and distance."""
        from toy_world.outcome import ring_views

        return ring_views(poses) if self.capture == "dome" else list(range(len(poses)))

    def edit(self, cell: Cell) -> dict:
        """One cell: the edit through ns-train (unless its renders are kept), its renders read against its source's.
        The readings are taken afresh from the kept renders at every run, so a change of the measures needs no edit."""
        from toy_world.outcome import measure, object_brightness, save_views, training_views
        from toy_world.runs import run_tiny_edit

        key = cell.key(self.steps[cell.representation], self.extra_flags, self.source_name)
        folder = self.out / "edits" / key
        kept = folder / "renders.npz"
        source = self.source(cell.representation, cell.shape, cell.source)
        if key not in self.runs or not kept.exists():
            start = time.perf_counter()
            run, _ = run_tiny_edit("pds", source, folder, self.torch_home, self.steps[cell.representation], self.edit_flags(cell))
            seconds = time.perf_counter() - start
            with self.lock:
                edits, _ = training_views(run / "config.yml")
                np.savez_compressed(kept, edits=np.stack([edits[i] for i in self.read[source]]))
                self.runs[key] = {**cell.__dict__, "key": key, "steps": self.steps[cell.representation],
                                       "seconds": seconds, "flags": setting_flags(cell.representation, self.extra_flags), "run": str(run)}  # fmt: skip
                with self.runs_file.open("a") as file:
                    file.write(json.dumps(self.runs[key]) + "\n")
        edits = list(np.load(kept)["edits"])
        sources, captured, empty = self.source_views[cell.representation, cell.shape, cell.source]
        outcome = measure(edits, sources, captured, cell.target, cell.source, cell.shape, empty_views=empty)
        save_views([(s, e) for s, e in zip(sources, edits)], folder / "source_edit.png")
        brightness = object_brightness(edits, self.poses[source], cell.target, cell.shape)
        row = {**self.runs[key], **outcome.as_dict(), "brightness": brightness}
        print(f"{key}: effect {row['effect']:.2f}, identity {row['identity_psnr']:.1f} dB, structure "
              f"{row['structure']:.2f}, outline {row['outline']:.2f}, colour error {row['colour_error']:.3f} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
        return row

    def edit_flags(self, cell: Cell) -> List[str]:
        """The ``ns-train pds`` flags of a cell's edit (the demo's, the toy world's guidance, its prompts, method and
        seed, then the extra flags)."""
        from toy_world.outcome import EDIT_FLAGS, outcome_edit_flags

        return [
            *EDIT_FLAGS, *guidance_flags(cell.representation, self.extra_flags), *outcome_edit_flags(cell.source, cell.target, cell.shape),
            "--pipeline.guidance.method", cell.method, "--machine.seed", str(cell.seed), *self.extra_flags,
        ]  # fmt: skip

    def first_view(self, cell: Cell) -> Optional[np.ndarray]:
        path = self.out / "edits" / cell.key(self.steps[cell.representation], self.extra_flags, self.source_name) / "renders.npz"
        return np.load(path)["edits"][0] if path.exists() else None


def meets_goal(row: dict, shape_measure: str = "structure") -> bool:
    """Whether an edit meets :data:`GOAL`, its shape read by ``shape_measure`` ("structure", or "outline": the object
    read by its contrast, its colour aside)."""
    return all(row[shape_measure if name == "structure" else name] >= minimum for name, minimum in GOAL.items())


def _fmt(values: Sequence[float], digits: int) -> str:
    """A value, or mean (min-max) of several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def rows_of(rows: List[dict], representation: str) -> List[dict]:
    return [row for row in rows if row["representation"] == representation]


def report(rows: List[dict], args, elapsed: float) -> str:
    methods = list(dict.fromkeys(row["method"] for row in rows))
    guidance = {r: guidance_flags(r, args.extra_flags, Path("toy_world")) for r in args.representations if rows_of(rows, r)}
    seeds = sorted({row["seed"] for row in rows})
    lines = [
        f"## {args.label}: {', '.join(methods)}; {', '.join(args.representations)}; seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}",
        "",
        f"`{' '.join(['python', 'bench/outcome_matrix.py', *sys.argv[1:]])}` ({platform.machine()}, {os.cpu_count()} cores, "
        f"{len(rows)} edits, {args.workers} at a time on a thread each: {sum(r['seconds'] for r in rows) / 60:.0f} min of "
        f"ns-train in all, {elapsed / 60:.0f} min this run). Edit steps: "
        + ", ".join(f"{r} {rows_of(rows, r)[0]['steps']}" for r in args.representations if rows_of(rows, r))
        + "".join(f"; guidance {r} `{' '.join(flags)}`" for r, flags in guidance.items() if flags)
        + (f"; extra flags `{' '.join(args.extra_flags)}`" if args.extra_flags else "")
        + ". Each cell: *effect / identity dB / structure*; several seeds: their mean, the range in brackets. "
        "**Bold**: pds misses the goal (effect >= 0.8, identity >= 25 dB, structure >= 0.95).",
    ]
    for representation in args.representations:
        these = rows_of(rows, representation)
        if not these:
            continue
        lines += ["", f"### {representation}", "", "| shape | edit | " + " | ".join(methods) + " | colour error (" + methods[0] + "; source's own) | outline (" + methods[0] + ") | brightness (" + methods[0] + ") |",
                  "|---|---|" + "---|" * (len(methods) + 3)]  # fmt: skip
        pairs = list(dict.fromkeys((row["shape"], row["source"], row["target"]) for row in these))
        pairs.sort(key=lambda p: (p[0], p[1] == p[2], p[1], p[2]))
        for shape, source, target in pairs:
            cells = []
            for method in methods:
                group = [r for r in these if (r["shape"], r["source"], r["target"], r["method"]) == (shape, source, target, method)]
                if not group:
                    cells.append("")
                    continue
                text = " / ".join(_fmt([r[name] for r in group], d) for name, d in (("effect", 2), ("identity_psnr", 1), ("structure", 2)))
                missed = method == "pds" and source != target and not all(meets_goal(r) for r in group)
                cells.append(f"**{text}**" if missed else text)
            first = [r for r in these if (r["shape"], r["source"], r["target"], r["method"]) == (shape, source, target, methods[0])]
            colour = f"{_fmt([r['colour_error'] for r in first], 3)}; {first[0]['source_colour_error']:.3f}" if first else ""
            outline = _fmt([r["outline"] for r in first], 2) if first else ""
            brightness = _fmt([r["brightness"] for r in first], 2) if first else ""
            label = f"{source} -> {target}" if source != target else f"{source} (no-op)"
            lines.append(f"| {shape} | {label} | " + " | ".join(cells) + f" | {colour} | {outline} | {brightness} |")
        own = {(r["source"], r["shape"]): r for r in these}
        lines += ["", "The sources' own silhouette IoU against their captured images (what the reconstruction keeps): "
                  + ", ".join(f"{colour} {shape} {row['source_silhouette_iou']:.2f}" for (colour, shape), row in sorted(own.items(), key=lambda i: (i[0][1], i[0][0])))
                  + "."]  # fmt: skip
        lines += ["", summary(these, methods)]
    return "\n".join(lines) + "\n"


def summary(rows: List[dict], methods: List[str]) -> str:
    """Per method over the colour edits (no-ops apart): pairs meeting the goal, mean and spread of each measure; pds's
    identity against each other method's, paired by source, target and seed."""
    edits = [row for row in rows if row["source"] != row["target"]]
    noops = [row for row in rows if row["source"] == row["target"]]
    lines = ["| method | edits meeting the goal | effect | identity dB | structure | outline | brightness (no-ops) | floor shift to the complement | shape read (source's) | no-op identity dB | no-op structure |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in methods:
        mine = [r for r in edits if r["method"] == method]
        still = [r for r in noops if r["method"] == method]
        if not mine:
            continue

        def spread(name, group=mine, digits=2):
            values = [r[name] for r in group]
            return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f} (min {min(values):.{digits}f})" if values else ""

        shape = f"{np.mean([r['shape_read'] for r in mine]):.2f} ({np.mean([r['source_shape_read'] for r in mine]):.2f})"
        lines.append(
            f"| {method} | {sum(meets_goal(r) for r in mine)} of {len(mine)} | {spread('effect')} | {spread('identity_psnr', digits=1)} | "
            f"{spread('structure')} | {spread('outline')} | {spread('brightness')} ({np.mean([r['brightness'] for r in still]):.2f}) | {spread('floor_shift', digits=3)} | {shape} | {spread('identity_psnr', still, 1)} | {spread('structure', still)} |"
        )
    for method in methods:
        mine = [r for r in edits if r["method"] == method]
        if mine:
            parts = ", ".join(f"{name} >= {minimum:g} in {sum(r[name] >= minimum for r in mine)}" for name, minimum in GOAL.items())
            lines.append(f"\n{method}, the goal's parts over its {len(mine)} edits: {parts}.")
            outlined = sum(meets_goal(r, "outline") for r in mine)
            lines.append(f"With the outline (the object read by contrast, its colour aside) in the structure's place: {outlined} of {len(mine)}.")
    by_key = {(r["representation"], r["shape"], r["source"], r["target"], r["seed"], r["method"]): r for r in edits}
    for other in methods:
        if other == "pds":
            continue
        differences = [
            r["identity_psnr"] - by_key[key[:-1] + (other,)]["identity_psnr"]
            for key, r in by_key.items()
            if key[-1] == "pds" and key[:-1] + (other,) in by_key
        ]
        if differences:
            lines.append(
                f"\npds's identity minus {other}'s, paired: mean {np.mean(differences):+.1f} dB, from {min(differences):+.1f} to "
                f"{max(differences):+.1f}, above in {sum(d > 0 for d in differences)} of {len(differences)}."
            )
    return "\n".join(lines)


def grid(matrix: Matrix, cells: List[Cell], path: Path) -> None:
    """A picture per representation and method stacked: a row per source object (its source render, then its edit to
    each colour, the no-op in the source's own column), first training view each, enlarged."""
    from toy_world.outcome import save_views
    from toy_world.world import COLOURS

    blank = np.ones((32, 32, 3))
    rows = []
    for representation, method in dict.fromkeys((c.representation, c.method) for c in cells):
        seed = min(c.seed for c in cells)
        for shape, source in dict.fromkeys((c.shape, c.source) for c in cells if c.representation == representation):
            views = matrix.source_views.get((representation, shape, source))
            row = [views[0][0] if views else blank, blank * 0.2]
            for target in COLOURS:
                view = matrix.first_view(Cell(representation, shape, source, target, method, seed))
                row.append(blank if view is None else view)
            rows.append(row)
        rows.append([blank] * (2 + len(COLOURS)))
    save_views(rows[:-1], path, scale=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, pds and sds, nerfacto: the check run before and after a change")
    parser.add_argument("--methods", nargs="+", choices=["pds", "sds", "dds"])
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--representations", nargs="+", choices=["nerfacto", "splatfacto"])
    parser.add_argument("--only", nargs="+", metavar="SHAPE:SOURCE:TARGET", help="only these edits, e.g. ball:red:blue")
    parser.add_argument("--steps", type=int, help="edit steps for every representation (default: nerfacto 200, splatfacto 500)")
    parser.add_argument("--extra-flags", nargs=argparse.REMAINDER, default=[], help="ns-train flags added to every edit (last)")
    parser.add_argument("--user-sources", action="store_true", help="nerfacto sources from plain ns-train (unseeded), as a user trains them")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "outcome_matrix", help="kept runs and results (a rerun continues)")
    parser.add_argument("--workers", type=int, default=2, help="edits at a time, one thread each")
    parser.add_argument("--label", help="the docs section and picture name (default: quick or full)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ as it is")
    parser.add_argument("--capture", choices=["ring", "dome"], default="ring",
                        help="the sources' views: the ring of 10, or DOME_CAPTURE (nerfacto only, a 5000-step source each; read on its 9 ring views)")
    parser.add_argument("--large-source", action="store_true",
                        help="nerfacto sources of the dome's field and steps (DOME_NERFACTO_FLAGS, 5000) from the ring's views")
    args = parser.parse_args()
    args.methods = args.methods or (["pds", "sds"] if args.quick else ["pds", "sds", "dds"])
    args.seeds = args.seeds or ([42] if args.quick else [42, 1, 2])
    args.representations = args.representations or (["nerfacto"] if args.quick or args.capture == "dome" else ["nerfacto", "splatfacto"])
    if args.capture == "dome" and args.representations != ["nerfacto"]:
        parser.error("--capture dome: --representations nerfacto only (splatfacto from 160 views: 24 000 Gaussians, 6.7 s a step)")
    args.label = args.label or ("quick" if args.quick else "full")
    from toy_world.outcome import EDIT_STEPS

    steps = {r: args.steps or EDIT_STEPS[r] for r in EDIT_STEPS}

    cells = cells_of(args)
    if args.only:
        wanted = {tuple(item.split(":")) for item in args.only}
        cells = [c for c in cells if (c.shape, c.source, c.target) in wanted]
    matrix = Matrix(args.out, steps, args.extra_flags, args.user_sources, args.capture, args.large_source)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        objects = list(dict.fromkeys((c.representation, c.shape, c.source) for c in cells))
        list(pool.map(lambda o: matrix.source(*o), objects))
        rows = list(pool.map(matrix.edit, cells))
    elapsed = time.perf_counter() - start
    body = report(rows, args, elapsed)
    print(body)
    slug = re.sub(r"[^a-z0-9]+", "_", args.label.lower()).strip("_")
    with open(args.out / f"readings_{slug}.jsonl", "w") as file:  # every cell's readings, unrounded, for other tables
        file.writelines(json.dumps(row, default=float) + "\n" for row in rows)
    if not args.no_write:
        picture = ROOT / "docs" / f"outcome_matrix_{slug}.png"
        grid(matrix, cells, picture)
        body += (f"\n[{picture.name}]({picture.name}): per method ({', '.join(args.methods)}) and representation, a row per "
                 "source object: its source render, a dark gap, then its edit to red, green, blue and yellow (its own colour: the "
                 f"no-op), first training view, seed {min(args.seeds)}.\n")  # fmt: skip
        replace_section(DOCS, f"<!-- bench:outcome-matrix:{args.label} -->", body)


if __name__ == "__main__":
    main()
