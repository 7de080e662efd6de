"""What a region does on the toy world: a red ball and a green cube apart on the floor, "a blue ball" edited with and
without a box round the ball, and with each part of the region alone, through the real ``ns-train pds`` (or ``pnr``).

    python bench/region_outcome.py --out outputs/region_outcome --hold-weights 1 10 30 100   # what docs/regions.md shows
    python bench/region_outcome.py --representations nerfacto --variants none region
    python bench/region_outcome.py --method pnr --variants none region   # pnr's real-scenes protocol (eta 0.6)
    python bench/region_outcome.py --method pnr-multiview --representations splatfacto --capture dome --variants none region   # the objects protocol with the toy multi-view prior
    python bench/region_outcome.py --representations nerfacto --capture dome --variants none region   # a 3D nerfacto source
    python bench/region_outcome.py --representations splatfacto --capture dome --variants region   # pds on splatfacto's densified dome source

Each edit's renders of the training views are read through each thing's own mask from the world's ray caster
(:func:`toy_world.outcome.measure_region`): the ball's effect, the cube's colour kept and PSNR, the floor's PSNR, all
against the source run's renders. Writes a table and a picture to docs/regions.md (``--no-write``: print only).

``--capture dome`` trains the source on the scene seen from :func:`toy_world.outcome.dome_capture` (nerfacto: 160 views
at several heights and distances; the ring's 10 views do not place the tiny nerfacto's surfaces in space, so a box
finds nothing of the ball there; splatfacto: 40 views, 1000 steps, so that it densifies) and reads the 9 of them at the
ring's height and distance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.region_scene import BALL_BOX, THINGS, view_masks, write_region_scene  # noqa: E402
from toy_world.report import flags_digest, replace_section  # noqa: E402

VARIANTS: Dict[str, List[str]] = {
    "none": [],
    "region": ["--pipeline.region.box", *BALL_BOX],
    "gradient only (hold 0)": ["--pipeline.region.box", *BALL_BOX, "--pipeline.region.hold-weight", "0"],
    "hold only": ["--pipeline.region.box", *BALL_BOX, "--pipeline.region.gradient", "False"],
}
"""The edits compared: no region, the box with every part at its defaults, and each part alone (splatfacto freezes
the outside in all three); ``--hold-weights`` adds the box at other hold weights."""

@dataclasses.dataclass(frozen=True)
class Method:
    """An edit the bench makes: the ``ns-train`` method, the prior that guides it and its flags."""

    command: str
    prior: Path
    flags: Tuple[str, ...] = ()
    selection_steps: int = 0
    """pnr's objects protocol: Alg. 2's selection steps, then edit steps to the same total as the pds edits."""


def methods() -> Dict[str, Method]:
    """pds; pnr on these nerfstudio scenes with the paper's real-scenes protocol (App. E: eta 0.6, one view a step, PDS's
    t range), for the same number of steps as pds; ``pnr-multiview``: pnr's objects protocol (the release's objective,
    Alg. 2, its annealing) with the toy multi-view prior (``toy_world/multiview_prior``) at the toy world's scale 5, its
    orbit cameras round the ball as the prior was trained round one object, no revise steps."""
    from pnr_nerfstudio.pipeline import PnRPipelineConfig
    from toy_world import MULTIVIEW_PRIOR, PRIOR
    from toy_world.train_multiview_prior import TOY_MULTIVIEW_GUIDANCE_SCALE, TOY_OBJECT_CENTRE, toy_orbit_flags

    ball_centre = (*THINGS[0].centre, TOY_OBJECT_CENTRE[2])  # a toy object's centre height, at the ball's place
    objects = (
        "--pipeline.protocol", "objects", "--pipeline.revise-steps", "0", *toy_orbit_flags(ball_centre),
        "--pipeline.guidance.guidance-scale", str(TOY_MULTIVIEW_GUIDANCE_SCALE),
    )  # fmt: skip
    return {
        "pds": Method("pds", PRIOR),
        "pnr": Method("pnr", PRIOR, ("--pipeline.protocol", "real-scenes")),
        "pnr-multiview": Method("pnr", MULTIVIEW_PRIOR, objects, PnRPipelineConfig().eta_selection_steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/region_outcome"))
    table = methods()
    parser.add_argument("--method", choices=list(table), default="pds")
    parser.add_argument("--representations", nargs="+", default=["nerfacto", "splatfacto"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--capture", choices=["ring", "dome"], default="ring",
                        help="the scene's views: the ring of 10, or each representation's dome (toy_world.outcome.dome_capture: nerfacto 160 views, splatfacto 40 with a 1000-step source; the table reads its 9 ring views)")
    parser.add_argument(
        "--hold-weights", type=float, nargs="*", default=[],
        help="also edit with the box at each of these --pipeline.region.hold-weight values",
    )  # fmt: skip
    parser.add_argument("--extra-flags", nargs=argparse.REMAINDER, default=[])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    method = table[args.method]

    import yaml

    from toy_world.models import seed_torch_home
    from toy_world.outcome import (
        EDIT_FLAGS,
        EDIT_STEPS,
        SPARSE_POINTS,
        dome_capture,
        measure_region,
        ring_views,
        save_views,
        train_dome_source,
        train_source,
        training_poses,
        training_views,
    )
    from toy_world.runs import find_run_dirs, run_tiny_edit
    from toy_world.world import caption, dome_cameras

    torch_home = seed_torch_home(args.out / "torch_home")
    os.environ.update(TORCH_HOME=str(torch_home), HF_HUB_OFFLINE="1")
    dome = args.capture == "dome"
    variants = dict(VARIANTS)
    for weight in args.hold_weights:
        variants[f"region, hold {weight:g}"] = ["--pipeline.region.box", *BALL_BOX, "--pipeline.region.hold-weight", f"{weight:g}"]
    rows = []
    for representation in args.representations:
        run_name = f"{representation}-dome" if dome else representation  # the folder of its source and of its edits
        # each representation's dome (toy_world.outcome.dome_capture): nerfacto's 160 views, splatfacto's 40
        scene = args.out / (("scene-dome" if representation == "nerfacto" else f"scene-dome-{representation}") if dome else "scene")
        if not (scene / "transforms.json").exists():
            write_region_scene(scene, SPARSE_POINTS, cameras=dome_cameras(*dome_capture(representation)) if dome else None)
        sources_dir = args.out / "sources" / run_name
        runs = find_run_dirs(sources_dir, representation)
        if runs:
            source = runs[-1]
        else:
            source = train_dome_source(scene, sources_dir, torch_home, representation=representation) if dome else train_source(representation, scene, sources_dir, torch_home)
        sources, _ = training_views(source / "config.yml")
        read = ring_views(training_poses(source / "config.yml")) if dome else list(range(len(sources)))
        config = yaml.load((source / "config.yml").read_text(), Loader=yaml.Loader)
        dataparser = config.pipeline.datamanager.dataparser
        dataparser.data = scene
        filenames = dataparser.setup().get_dataparser_outputs(split="train").image_filenames
        masks = view_masks(scene, [str(filenames[i]) for i in read])
        sources = [sources[i] for i in read]
        from pds_nerfstudio.scenes.representations import representation_of

        default = representation_of(config.pipeline.model).region_hold_weight
        chosen = [*args.variants, *(f"region, hold {w:g}" for w in args.hold_weights if w != default)]
        steps = EDIT_STEPS[representation]
        # the objects protocol: the selection's steps, then edit steps to the same total
        edit_steps = ["--pipeline.edit-steps", str(steps - method.selection_steps)] if method.selection_steps else []
        pictures = []
        for variant in chosen:
            flags = [
                *EDIT_FLAGS, "--pipeline.guidance.model-id", str(method.prior),
                "--pipeline.src-prompt", caption("red", "ball"), "--pipeline.tgt-prompt", caption("blue", "ball"),
                "--machine.seed", str(args.seed), *method.flags, *edit_steps, *variants[variant], *args.extra_flags,
            ]  # fmt: skip
            # an edit made before with the same settings is read, not run again
            name = re.sub(r"[^a-z0-9]+", "-", variant).strip("-")
            name += "" if args.seed == parser.get_default("seed") else f"-seed{args.seed}"
            name += f"-{flags_digest(args.extra_flags)}" if args.extra_flags else ""
            folder = args.out / "edits" / run_name / (name if args.method == "pds" else f"{args.method}-{name}")
            done = find_run_dirs(folder, method.command)
            run = done[-1] if done else run_tiny_edit(method.command, source, folder, torch_home, steps, flags)[0]
            edits = [view for i, view in enumerate(training_views(run / "config.yml")[0]) if i in read]
            outcome = measure_region(edits, sources, masks, 0, [thing.colour for thing in THINGS], "blue")
            label = f"region (hold {default:g}, the default)" if variant == "region" else variant
            rows.append({"representation": representation, "variant": label, **outcome.as_dict()})
            print(json.dumps(rows[-1]), flush=True)
            pictures.append(edits)
        stem = f"regions_{representation}" if args.method == "pds" else f"regions_{args.method.replace('-', '_')}_{representation}"
        stem += "_dome" if dome else ""
        picture = ROOT / "docs" / f"{stem}.png" if not args.no_write else args.out / f"{stem}.png"
        save_views([[s, *(edit[v] for edit in pictures)] for v, s in enumerate(sources)], picture)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    body = report(rows, args, method)
    print(body)
    if not args.no_write:
        marker = "<!-- bench:regions -->" if args.method == "pds" else f"<!-- bench:regions-{args.method} -->"
        if dome:  # nerfacto's dome table, or one of its own for another list of representations
            marker = marker.replace(" -->", "-dome -->" if args.representations == ["nerfacto"] else f"-dome-{'-'.join(args.representations)} -->")
        replace_section(ROOT / "docs" / "regions.md", marker, body)


def report(rows: List[dict], args: argparse.Namespace, method: Method) -> str:
    selection = f" (of them Alg. 2's {method.selection_steps} selection steps, the rest edit steps)" if method.selection_steps else ""
    lines = [
        f"`python bench/region_outcome.py {' '.join(sys.argv[1:])}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores), seed {args.seed}, the prior `{method.prior.relative_to(ROOT)}`, `ns-train {method.command}` "
        f"{' '.join(method.flags)}, 200 nerfacto / 500 splatfacto steps{selection}"
        f"{', the source from the dome capture (nerfacto: 160 views, 5000 steps; splatfacto: 40 views, 1000 steps), read on its 9 views at the ring' if args.capture == 'dome' else ''}.".replace("  ", " "),
        "",
        "| representation | edit | ball effect | ball's structure | cube's colour kept | cube's structure | cube PSNR (dB) | floor PSNR (dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['representation']} | {row['variant']} | {row['effect']:.2f} | {row['edited_structure']:.2f} | "
            f"{row['other_kept']:.2f} | {row['other_structure']:.2f} | {row['other_psnr']:.1f} | {row['floor_psnr']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
