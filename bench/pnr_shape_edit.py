"""pnr on a shape edit at its released step counts, measured with the toy-world prior at every kept checkpoint.

The edit pds cannot make, "a red ball" to "a red cube", run with pnr's objects protocol as released (50 eta-selection
steps, 1500 edit and 1000 revise steps, eta chosen by Alg. 2) through the real ``ns-train`` on a tiny source of the
red ball, a checkpoint kept every ``--every`` steps. Each checkpoint's renders of the 9 training views are read with
:mod:`toy_world.outcome` and :mod:`toy_world.classify`: identity (PSNR of the pixels away from the ball against the
source run's render), the object's pixel count, its colour and its roundness (a ball 0.76 and above). The table is
printed (docs/toy_world.md quotes it) and the views go to a picture, a row a checkpoint.

``--prior single`` (docs/pnr_shape_edit.png): the single-view toy prior, PDS on 4 training views a step (ours).
``--prior multiview`` (docs/pnr_multiview_shape_edit_<representation>[_region][_dome][_<--model-id's folder>][_<object>][_scale<S>][_ipg...][_source<N>][_eta<E>][_sourceflags<source flags' hash>][_seed<S>][_<extra flags' hash>].png): the release's objects protocol, the toy multi-view prior
(toy_world/multiview_prior) guiding orbit views round the object with the x0-reconstruction objective; with
``--region`` a box round the ball is the object field (splatfacto: only its Gaussians are perturbed and move; nerfacto:
outside it the source field renders). ``--capture dome`` trains the source on views from the orbit cameras' heights
and distances (:func:`toy_world.outcome.dome_capture`: nerfacto 160 views, splatfacto 40). With the multi-view prior the runs pass the toy world's guidance scale, 5
(``TOY_MULTIVIEW_GUIDANCE_SCALE``: at the release's 50 the toy prior's targets melt even a source that already is the
cube, bench/multiview_targets.py); ``--guidance-scale 50`` runs the release's. ``--source-shape cube`` starts from the
red cube itself (does the objective hold the goal?); ``--target-colour blue --target-shape ball`` makes a colour edit,
to read the eta Alg. 2 gives it (printed).

    python bench/pnr_shape_edit.py                  # the released counts: 2550 steps, about an hour on 2 cores
    python bench/pnr_shape_edit.py --prior multiview --representation splatfacto --region
    python bench/pnr_shape_edit.py --prior multiview --representation nerfacto --region --capture dome --edit-steps 500 --revise-steps 0 --every 125
    python bench/pnr_shape_edit.py --prior multiview --representation nerfacto --region --capture dome --ipg-resolution 0 --edit-steps 300 --revise-steps 500 --every 100
    python bench/pnr_shape_edit.py --prior multiview --representation splatfacto --region --capture dome --edit-steps 500 --revise-steps 0 --every 125
    python bench/pnr_shape_edit.py --prior multiview --representation splatfacto --region --capture dome --source-flags "--pipeline.model.warmup-length 2000" --edit-steps 500 --revise-steps 0 --every 125   # the dome's views, splatfacto's refinement put off past the source's steps
    python bench/pnr_shape_edit.py --prior multiview --representation nerfacto --region --capture dome --source-steps 1500 --eta 0.1 --edit-steps 150 --revise-steps 0 --every 50   # the default test run's reduced counts
    python bench/pnr_shape_edit.py --prior multiview --representation nerfacto --region --capture dome --source-steps 1500 --method pds --edit-steps 150 --every 50   # pds with the same prior beside it
    python bench/pnr_shape_edit.py --edit-steps 20 --revise-steps 10 --every 20 --no-write   # a check, 2 min

``--method pds`` runs ``ns-train pds`` instead, for ``--edit-steps`` steps: with the multi-view prior, PDS on the same
orbit views (each view's source the source scene's render of it; docs/pds_multiview_shape_edit_<...>.png), no
perturbation, no phases.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def checkpoint_row(label: str, views: Sequence[np.ndarray], sources, captured, poses, colour: str = "red") -> str:
    """One table row: identity, object pixels, views read ``colour``, views read cube, roundness range of the views
    that show an object, and the 3D shape fit (:func:`toy_world.outcome.fitted_shape`: the best cube's and ball's IoU
    over all views, whether it reads cube, and the best cube's turn about the vertical)."""
    from toy_world.classify import read
    from toy_world.outcome import fitted_shape, measure

    readings = [read(view) for view in views]
    pixels = [int(reading.mask.sum()) for reading in readings]
    roundness = [reading.roundness for reading in readings if reading.shape is not None]
    coloured = sum(reading.colour == colour for reading in readings)
    cube = sum(reading.shape == "cube" for reading in readings)
    identity = measure(views, sources, captured, colour).identity_psnr
    spread = f"{min(roundness):.2f}-{max(roundness):.2f}" if roundness else "-"
    fit = fitted_shape(views, sources, poses)
    fitted = f"{fit.cube_iou:.2f} / {fit.ball_iou:.2f}{' cube' if fit.reads_cube else ''} ({fit.cube_turn_degrees:.0f} deg)"
    return f"| {label} | {identity:.1f} | {min(pixels)}-{max(pixels)} | {coloured} of {len(views)} | {cube} of {len(views)} | {spread} | {fitted} |"


def source_gaussians(run: Path) -> int:
    """How many Gaussians a splatfacto run's last checkpoint holds."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint

    return len(load_checkpoint(newest_checkpoint(run / "nerfstudio_models"))["pipeline"]["_model.gauss_params.means"])


def _object_suffix(args: argparse.Namespace) -> str:
    """The picture's name for an object other than the red ball (``_green_ball``, ``_red_cube``) and a target other than
    its cube (``_to_blue_ball``)."""
    source = "" if (args.colour, args.source_shape) == ("red", "ball") else f"_{args.colour}_{args.source_shape}"
    target = (args.target_colour or args.colour, args.target_shape)
    return source + ("" if target == (args.colour, "cube") else f"_to_{target[0]}_{target[1]}")


def _default_guidance_scale(args: argparse.Namespace) -> Optional[float]:
    """The scale the runs pass untyped: the toy world's with the multi-view prior, none (the protocol's) otherwise."""
    from toy_world.train_multiview_prior import TOY_MULTIVIEW_GUIDANCE_SCALE

    return TOY_MULTIVIEW_GUIDANCE_SCALE if args.prior == "multiview" else None


def _default_ipg_weight_scale(args: argparse.Namespace) -> float:
    """The factor on the identity terms' released weights that the runs pass untyped: the toy world's with the
    multi-view prior (the method's objects protocol renders at the release's 256 px, the toy world at 32), the
    release's (1) with the single-view prior, as its runs were measured (docs/pnr_shape_edit.png)."""
    from toy_world.outcome import TOY_IPG_WEIGHT_SCALE

    return TOY_IPG_WEIGHT_SCALE if args.prior == "multiview" else 1.0


def _scale_suffix(args: argparse.Namespace) -> str:
    """The picture's name for a guidance scale typed other than the default (``_scale50``)."""
    return "" if args.guidance_scale in (None, _default_guidance_scale(args)) else f"_scale{args.guidance_scale:g}"


PULLS_EVERY = 50
"""Revise steps between two readings of each term's pull on the rendered pixels."""


def print_revise_pulls(run: Path, plan) -> None:
    """The pull of the guidance and of the identity terms on the rendered orbit views (the norm of each one's gradient
    on their pixels, :func:`pnr_nerfstudio.pipeline.revise_pulls`) and the cosine between the guidance's and the
    identity terms' together, at the revise steps that logged them: which one the revise phase follows."""
    from toy_world.runs import logged_if_any

    names = ("guidance", "ipg_l1", "ipg_lpips", "identity", "cosine")
    read = logged_if_any(run, [*(f"revise_pull_{name}" for name in names), "ipg_l1_mult"])
    pulls = {name: read[f"revise_pull_{name}"] for name in names}
    if not pulls["guidance"]:
        return
    weights = read["ipg_l1_mult"]
    print("| revise step | L1 weight | pull: guidance | L1 | LPIPS | identity terms | identity / guidance | cosine |")
    print("|---|---|---|---|---|---|---|---|")
    for step in sorted(pulls["guidance"]):
        guidance, l1, lpips, identity = (pulls[name].get(step, 0.0) for name in names[:4])
        cosine = f"{pulls['cosine'][step]:.2f}" if step in pulls["cosine"] else "-"
        print(f"| {plan.step_in_phase(step)} | {weights.get(step, 0.0):g} | {guidance:.4g} | {l1:.4g} | {lpips:.4g} | "
              f"{identity:.4g} | {identity / guidance:.2f} | {cosine} |")


def main() -> None:
    from toy_world.world import COLOURS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["pnr", "pds"], default="pnr", help="pds: ns-train pds for --edit-steps steps (no perturbation, no phases)")
    parser.add_argument("--edit-steps", type=int, help="default pnr's, the released 1500")
    parser.add_argument("--revise-steps", type=int, help="default pnr's, the released 1000")
    parser.add_argument("--every", type=int, default=250, help="steps between kept checkpoints")
    parser.add_argument("--seed", type=int, default=1, help="--machine.seed of the edit")
    parser.add_argument("--prior", choices=["single", "multiview"], default="single")
    parser.add_argument("--model-id", type=Path, help="the prior's folder: default toy_world/prior (single) or toy_world/multiview_prior (multiview)")
    parser.add_argument("--representation", choices=["nerfacto", "splatfacto"], default="nerfacto")
    parser.add_argument("--region", action="store_true", help="a box round the ball: the object field")
    parser.add_argument("--capture", choices=["ring", "dome"], default="ring",
                        help="the source's views: the outcome tests' ring of 10, or a dome (views from the orbit cameras' heights and distances: DOME_CAPTURE for nerfacto, SPLAT_DOME_CAPTURE for splatfacto)")
    parser.add_argument("--source-steps", type=int,
                        help="steps of the source: default the ring's SOURCE_STEPS (400), the dome's DOME_SOURCE_STEPS (nerfacto, 5000) or SPLAT_DOME_SOURCE_STEPS (1000); the default test run's reduced edit trains its dome source 1500")
    parser.add_argument("--source-flags", default="",
                        help="more ns-train flags for the source, one quoted string (e.g. \"--pipeline.model.warmup-length 2000\": splatfacto without densification)")
    parser.add_argument("--eta", type=float, help="--pipeline.perturbation.eta: default auto (Alg. 2's 50 selection steps)")
    parser.add_argument("--colour", choices=COLOURS, default="red",
                        help="the object's colour, kept by the edit (the multi-view prior knows its red cubes least)")
    parser.add_argument("--source-shape", choices=["ball", "cube"], default="ball",
                        help="cube: the source is already the target, so the run shows whether the objective holds a cube")
    parser.add_argument("--target-colour", choices=COLOURS, help="default --colour")
    parser.add_argument("--target-shape", choices=["ball", "cube"], default="cube",
                        help="ball with --target-colour: a colour edit, to read the eta Alg. 2 gives it")
    parser.add_argument("--guidance-scale", type=float,
                        help="default with the multi-view prior the toy world's (TOY_MULTIVIEW_GUIDANCE_SCALE, 5; the release's: 50), with the single-view prior the protocol's")
    parser.add_argument("--ipg-resolution", type=int,
                        help="--pipeline.ipg.resolution of the revise steps: default the release's 256 (11.7 s a revise step on 2 cores); 0: as rendered, the prior's 32 px")
    parser.add_argument("--ipg-weight-scale", type=float,
                        help="the identity terms' weights, the release's (L1 30000, LPIPS 300) times this; default with the multi-view prior the toy world's (TOY_IPG_WEIGHT_SCALE, 1/8: the release's pull on a 32 px render), else 1")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ as it is")
    parser.add_argument("--extra-flags", nargs=argparse.REMAINDER, default=[],
                        help="ns-train flags added to the edit (last), as the other benches take them: last on the line, all after it goes to ns-train; the picture's name then ends in their hash")
    args = parser.parse_args()
    if args.source_steps is not None and args.source_steps <= 0:
        parser.error(f"--source-steps {args.source_steps}: need a positive number of steps")
    if args.method == "pds" and (args.eta is not None or args.revise_steps or args.ipg_resolution is not None or args.ipg_weight_scale is not None):
        parser.error("--method pds has no perturbation and no revise phase: leave out --eta, --revise-steps and --ipg-*")
    from pnr_nerfstudio.pipeline import PnRPipelineConfig
    from pnr_nerfstudio.schedules import Phase
    from toy_world import MULTIVIEW_PRIOR, PRIOR
    from toy_world.models import seed_torch_home
    from toy_world.outcome import (
        EDIT_FLAGS,
        SPARSE_POINTS,
        dome_capture,
        kept_checkpoint_views,
        outcome_edit_flags,
        ring_views,
        save_views,
        train_dome_source,
        train_source,
        training_poses,
        training_views,
    )
    from toy_world.report import flags_digest
    from toy_world.runs import logged, run_tiny_edit
    from toy_world.train_multiview_prior import TOY_OBJECT_BOX, toy_orbit_flags
    from toy_world.world import Thing, dome_cameras, write_scene

    released = PnRPipelineConfig()
    args.edit_steps = released.edit_steps if args.edit_steps is None else args.edit_steps
    args.revise_steps = (0 if args.method == "pds" else released.revise_steps) if args.revise_steps is None else args.revise_steps
    perturbation = released.perturbation if args.eta is None else dataclasses.replace(released.perturbation, eta=args.eta)
    plan = dataclasses.replace(released, edit_steps=args.edit_steps, revise_steps=args.revise_steps, perturbation=perturbation).phases
    revise_start = plan.start(Phase.REVISE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch_home = seed_torch_home(work / "torch_home")
        # the runs load in this process too (to render their checkpoints): LPIPS constructs offline from this folder
        os.environ.update(TORCH_HOME=str(torch_home), HF_HUB_OFFLINE="1")
        cameras = dome_cameras(*dome_capture(args.representation)) if args.capture == "dome" else None
        scene = write_scene(work / f"{args.colour}-{args.source_shape}", Thing(args.colour, args.source_shape), num_views=10, size=32, sparse_points=SPARSE_POINTS, cameras=cameras)
        source_flags = shlex.split(args.source_flags)
        if args.capture == "dome":
            source = train_dome_source(scene, work / "sources", torch_home, steps=args.source_steps, representation=args.representation, extra_args=source_flags)
        else:
            source = train_source(args.representation, scene, work / "sources", torch_home, steps=args.source_steps, extra_args=source_flags)
        if args.representation == "splatfacto":  # how far the source densified
            print(f"source Gaussians: {source_gaussians(source)}", flush=True)
        prior = args.model_id or (MULTIVIEW_PRIOR if args.prior == "multiview" else PRIOR)
        flags = [
            *EDIT_FLAGS, "--pipeline.guidance.model-id", str(prior),
            *outcome_edit_flags(args.colour, args.target_colour or args.colour, args.source_shape, args.target_shape),
            "--pipeline.result-views", "1", "--machine.seed", str(args.seed),
            "--steps-per-save", str(args.every), "--save-only-latest-checkpoint", "False",
        ]  # fmt: skip
        if args.method == "pnr":
            flags += ["--pipeline.protocol", "objects", "--pipeline.edit-steps", str(args.edit_steps), "--pipeline.revise-steps", str(args.revise_steps)]
        if args.eta is not None:
            flags += ["--pipeline.perturbation.eta", str(args.eta)]
        if args.prior == "multiview":  # the orbit cameras round the toy object, as the multi-view prior was trained
            flags += toy_orbit_flags()
        if args.region:
            flags += ["--pipeline.region.box", *map(str, TOY_OBJECT_BOX)]
        scale = _default_guidance_scale(args) if args.guidance_scale is None else args.guidance_scale
        if scale is not None:
            flags += ["--pipeline.guidance.guidance-scale", str(scale)]
        if args.ipg_resolution is not None:
            flags += ["--pipeline.ipg.resolution", str(args.ipg_resolution)]
        args.ipg_weight_scale = _default_ipg_weight_scale(args) if args.ipg_weight_scale is None else args.ipg_weight_scale
        if args.ipg_weight_scale != 1.0 and args.method == "pnr":
            released_ipg = released.ipg
            flags += ["--pipeline.ipg.l1-loss-mult", str(released_ipg.l1_loss_mult * args.ipg_weight_scale),
                      "--pipeline.ipg.lpips-loss-mult", str(released_ipg.lpips_loss_mult * args.ipg_weight_scale)]  # fmt: skip
        if args.revise_steps > 0:  # each revise term's pull on the rendered pixels, logged (pnr_nerfstudio.pipeline.revise_pulls)
            flags += ["--pipeline.steps-per-log-image", str(PULLS_EVERY)]
        flags += args.extra_flags
        steps = plan.total_steps if args.method == "pnr" else args.edit_steps
        run, _ = run_tiny_edit(args.method, source, work / "edit", torch_home, steps, flags, timeout=6 * 3600)
        if args.method == "pnr":
            etas = logged(run, "eta")
            print(f"eta the run used: {etas[max(etas)]:.2f}" if etas else "eta: not logged", flush=True)
        print_revise_pulls(run, plan)
        sources, captured = training_views(source / "config.yml")
        poses = training_poses(source / "config.yml")
        read = ring_views(poses) if args.capture == "dome" else list(range(len(poses)))
        sources, captured, poses = ([values[i] for i in read] for values in (sources, captured, poses))
        colour = args.target_colour or args.colour  # what the edit should show
        print(f"| checkpoint | phase | identity (dB) | object pixels | read {colour} | read cube | roundness | cube / ball fit |")
        print("|---|---|---|---|---|---|---|---|")
        print(checkpoint_row("source | -", sources, sources, captured, poses, colour), flush=True)
        rows = [captured, sources]
        for step, views in kept_checkpoint_views(run):
            views = [views[i] for i in read]
            phase = f"{plan.phase(step).label} {plan.step_in_phase(step)}" if args.method == "pnr" else f"pds {step}"
            print(checkpoint_row(f"{step} | {phase}", views, sources, captured, poses, colour), flush=True)
            if step > (revise_start if args.method == "pnr" else steps) - args.every:  # the last checkpoint of the edit steps and every one after
                rows.append(views)
    if not args.no_write:
        stem = f"{args.method}_shape_edit" if args.prior == "single" else f"{args.method}_multiview_shape_edit_{args.representation}{'_region' if args.region else ''}{'_dome' if args.capture == 'dome' else ''}"
        ipg = "" if args.ipg_resolution is None else f"_ipg{args.ipg_resolution}"
        ipg += "" if args.ipg_weight_scale == _default_ipg_weight_scale(args) else f"_ipgweight{args.ipg_weight_scale:g}"
        extra = f"_{flags_digest(args.extra_flags)}" if args.extra_flags else ""
        prior = f"_{args.model_id.name}" if args.model_id else ""
        reduced = ("" if args.source_steps is None else f"_source{args.source_steps}") + ("" if args.eta is None else f"_eta{args.eta:g}")
        reduced += f"_sourceflags{flags_digest(source_flags)}" if source_flags else ""
        reduced += "" if args.seed == 1 else f"_seed{args.seed}"  # (pictures before 2026-12-07's pds runs left it out)
        name = f"{stem}{prior}{_object_suffix(args)}{_scale_suffix(args)}{ipg}{reduced}{extra}.png"
        save_views(rows, ROOT / "docs" / name)


if __name__ == "__main__":
    main()
