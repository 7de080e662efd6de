"""What the toy multi-view prior does with its cameras: how much its samples change when only the cameras do, and
which way it turns the cube it draws, from noise and from renders of the red ball (the shape edit's start).

A multi-view prior in MVDream's format is told each view's camera (the flattened camera-to-object matrix, added to
the time embedding). If it uses them, what it draws moves with the camera as the world does: higher cameras see
more of the floor and the cube's top, a camera turned 45 degrees sees a cube's corner instead of its face. And since
the toy world's cubes are turned at random in its training (``--max-turn`` of ``toy_world.train_multiview_prior``),
nothing tells it which way a cube should face; if each orbit group's targets draw a cube at a turn of their own, an
edit's steps pull the object towards cubes facing every way, whose average is round about the vertical: a drum.

1. **camera effect**: the same noise sampled (DDIM 30 steps, scale 7.5, "a photo of a red cube on a grey floor") at three fixed groups of 4
   views (elevation 5 and azimuths 0, 90, 180, 270; the same turned 45 degrees; elevation 30), the mean absolute
   change of the samples' pixels between groups, beside the change of the world's own renders of its cube at those
   cameras and the samples' change from one noise to another at the same cameras;
2. **sample turns**: ``--sample-groups`` groups sampled from noise at orbit groups drawn as the edit draws them,
   each group's 4 views fitted with the world's cubes seen by its cameras (every size of
   :data:`toy_world.outcome.FIT_SCALES` and turn of :data:`toy_world.outcome.FIT_TURNS`): the best turn, the fit's IoU
   beside the best ball's, and how much the turn matters (the best turn's IoU over the worst's at the best size);
3. **target turns**: the same read on the x0 targets the product's multi-view guidance gives (the toy world's scale,
   5) at each t, for ``--groups`` drawn groups and ``--seeds`` noises each, from renders of the red ball and, as a
   control, of the red cube at a known turn (do the targets keep it?).

    python bench/multiview_cameras.py                                     # the committed prior, about 3 minutes
    python bench/multiview_cameras.py --model-id /tmp/mv --timesteps 500  # another prior folder
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fitted_turn(images: Sequence[np.ndarray], poses: Sequence[np.ndarray], focal: float) -> Tuple[float, float, float, float]:
    """The turn (degrees) of the world's cube whose silhouettes, seen by ``poses`` at ``focal``, best match the
    images' object pixels; that fit's IoU; the best turn's IoU over the worst turn's at the best size; the best
    ball's IoU."""
    from toy_world.classify import object_mask
    from toy_world.outcome import FIT_TURNS, silhouette_fits

    cubes, balls = silhouette_fits([object_mask(image) for image in images], poses, focal)
    scale_index, turn_index = np.unravel_index(np.argmax(cubes), cubes.shape)
    row = cubes[scale_index]
    return float(np.rad2deg(FIT_TURNS[turn_index])), float(row.max()), float(row.max() / max(row.min(), 1e-6)), float(balls.max())


CAMERA_CASES = {"elevation 5": (5.0, 0.0), "turned 45": (5.0, 45.0), "elevation 30": (30.0, 0.0)}
"""The camera-effect groups: (elevation, azimuth offset) in degrees, fovy 40, at 0.9 of the orbit's relative distance."""


def fixed_group(elevation: float, offset: float, size: int, views: int):
    """An orbit group (:class:`pds_nerfstudio.scenes.orbit.OrbitGroup`) at one elevation, azimuths ``offset`` + k 360 /
    ``views`` (degrees), fovy 40 at 0.9 of the relative distance, round the toy object."""
    from pds_nerfstudio.scenes.orbit import OrbitRanges, draw_orbit_group
    from toy_world.train_multiview_prior import TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS

    ranges = OrbitRanges((elevation, elevation), (40.0, 40.0), (0.9, 0.9))
    group = draw_orbit_group(torch.Generator().manual_seed(0), TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, size, views, ranges, offset)
    assert abs(group.elevation - elevation) < 1e-9, "this seed draws the released code's other elevation rule"
    return group


def print_camera_effect(guidance, prompt: str, picture: Optional[Path] = None, noises: int = 4) -> None:
    """The mean absolute change of the samples' pixels from the first camera group of :data:`CAMERA_CASES` to each
    other, the same noises at both; beside it the world's renders' change and the samples' change between noises.
    ``picture``: a row a camera group, the world's 4 renders then the first two noises' samples."""
    import math

    from toy_world.evaluate_multiview_prior import sample_at
    from toy_world.train_multiview_prior import orbit_pose
    from toy_world.world import Thing, render

    latent_size = int(guidance.pipe.unet.config.sample_size)
    samples, worlds = {}, {}
    for name, (elevation, offset) in CAMERA_CASES.items():
        group = fixed_group(elevation, offset, latent_size, guidance.num_views)
        images = sample_at(guidance.pipe, guidance.pipe.unet, prompt, [group] * noises, 7.5, 30, torch.Generator().manual_seed(123))
        samples[name] = images.astype(np.float32) / 255
        focal = 0.5 * 2 * latent_size / math.tan(math.radians(group.fovy) / 2)
        worlds[name] = np.stack([render(Thing("red", "cube"), orbit_pose(c2w), 2 * latent_size, focal) for c2w in group.cameras.camera_to_worlds])
    if picture is not None:
        from toy_world.outcome import save_views

        save_views([[*worlds[name], *samples[name][0], *samples[name][1]] for name in CAMERA_CASES], picture)
    first = next(iter(CAMERA_CASES))
    between_noises = float(np.abs(samples[first][1:] - samples[first][:1]).mean())
    for name in list(CAMERA_CASES)[1:]:
        print(f"camera effect, {first} -> {name}: the world's renders change by {np.abs(worlds[name] - worlds[first]).mean():.3f}, "
              f"the samples (same noise) by {np.abs(samples[name] - samples[first]).mean():.3f}; from one noise to another {between_noises:.3f}", flush=True)


def print_sample_turns(guidance, prompt: str, groups: int) -> None:
    """The turns of the cubes the prior draws from noise: ``groups`` groups of ``prompt`` sampled at orbit groups drawn
    as the edit draws them (:func:`toy_world.evaluate_multiview_prior.sample_at`), each group's 4 views fitted."""
    import math

    from pds_nerfstudio.scenes.orbit import draw_orbit_group
    from toy_world.evaluate_multiview_prior import sample_at
    from toy_world.train_multiview_prior import TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, orbit_pose

    generator = torch.Generator().manual_seed(7)
    latent_size = int(guidance.pipe.unet.config.sample_size)
    orbits = [draw_orbit_group(generator, TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, latent_size, guidance.num_views) for _ in range(groups)]
    samples = sample_at(guidance.pipe, guidance.pipe.unet, prompt, orbits, 7.5, 30, generator).astype(np.float32) / 255
    fits = []
    for orbit, views in zip(orbits, samples):
        poses = [orbit_pose(c2w) for c2w in orbit.cameras.camera_to_worlds]
        fits.append(fitted_turn(list(views), poses, 0.5 * views.shape[1] / math.tan(math.radians(orbit.fovy) / 2)))
    print(f"samples of {prompt!r} from noise, {groups} groups: turns {' '.join(f'{fit[0]:.0f}' for fit in fits)}; "
          f"cube / ball fit {np.mean([f[1] for f in fits]):.2f} / {np.mean([f[3] for f in fits]):.2f}; best turn's IoU over the worst's {np.mean([f[2] for f in fits]):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3, help="noises per group")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[300, 500, 750])
    parser.add_argument("--control-turn", type=float, default=30.0, help="the turn (degrees) of the control's cube")
    parser.add_argument("--model-id", type=Path, help="a multi-view prior folder; default toy_world/multiview_prior")
    parser.add_argument("--picture", type=Path, help="where to save the camera groups' world renders and samples (a row a group)")
    parser.add_argument("--sample-groups", type=int, default=16, help="groups of the prompt sampled from noise (DDIM 30 steps, scale 7.5), their turns read too")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pds_nerfstudio.priors.multiview import camera_vectors
    from pds_nerfstudio.priors.multiview_guidance import MultiViewGuidance, MultiViewGuidanceConfig
    from pds_nerfstudio.scenes.orbit import draw_orbit_group
    from toy_world import MULTIVIEW_PRIOR
    from toy_world.multiview_targets import decoded_targets
    from toy_world.train_multiview_prior import (
        TOY_MULTIVIEW_GUIDANCE_SCALE,
        TOY_OBJECT_CENTRE,
        TOY_ORBIT_RADIUS,
        orbit_pose,
    )
    from toy_world.world import Thing, caption, render

    size = 32
    guidance = MultiViewGuidance(MultiViewGuidanceConfig(model_id=str(args.model_id or MULTIVIEW_PRIOR)), "cpu")
    generator = torch.Generator().manual_seed(0)
    groups = [draw_orbit_group(generator, TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, size, guidance.num_views) for _ in range(args.groups)]
    prompt = caption("red", "cube")
    objects = {"red ball": Thing("red", "ball"), f"red cube at {args.control_turn:g} deg": Thing("red", "cube", turn=float(np.deg2rad(args.control_turn)))}
    print(f"prompt {prompt!r}, scale {TOY_MULTIVIEW_GUIDANCE_SCALE:g}, {args.groups} groups x {args.seeds} noises")
    print_camera_effect(guidance, prompt, args.picture)
    if args.sample_groups:
        print_sample_turns(guidance, prompt, args.sample_groups)
    print("| object | t | best turn per group and noise (deg) | cube / ball fit IoU (means) | best turn's IoU over the worst's (mean) |")
    print("|---|---|---|---|---|")
    for name, thing in objects.items():
        poses: List[List[np.ndarray]] = []
        views, cameras = [], []
        for group in groups:
            group_poses = [orbit_pose(c2w) for c2w in group.cameras.camera_to_worlds]
            poses.append(group_poses)
            focal = float(group.cameras.fx[0])
            views.append(torch.from_numpy(np.stack([render(thing, pose, size, focal) for pose in group_poses])).permute(0, 3, 1, 2).float())
            cameras.append(camera_vectors(group.object_c2w))
        with torch.no_grad():
            latents = guidance.encode_images(torch.cat(views), torch.Generator().manual_seed(1))
        cameras_all = torch.cat(cameras)
        rendered = [fitted_turn([v.permute(1, 2, 0).numpy() for v in group_views], group_poses, float(group.cameras.fx[0]))
                    for group_views, group_poses, group in zip(views, poses, groups)]  # fmt: skip
        print(f"| {name} | the renders | {' '.join(f'{r[0]:.0f}' for r in rendered)} | {np.mean([r[1] for r in rendered]):.2f} / {np.mean([r[3] for r in rendered]):.2f} | {np.mean([r[2] for r in rendered]):.2f} |", flush=True)
        for t in args.timesteps:
            turns, ious, margins, balls = [], [], [], []
            for seed in range(args.seeds):
                targets = decoded_targets(guidance, latents, cameras_all, prompt, t, TOY_MULTIVIEW_GUIDANCE_SCALE, seed=100 + 1000 * seed)
                images = targets.images.permute(0, 2, 3, 1).numpy()
                for index, group in enumerate(groups):
                    turn, iou, margin, ball = fitted_turn(images[4 * index:4 * index + 4], poses[index], float(group.cameras.fx[0]))
                    turns.append(turn)
                    balls.append(ball)
                    ious.append(iou)
                    margins.append(margin)
            by_group = " ".join("/".join(f"{turns[seed * args.groups + g]:.0f}" for seed in range(args.seeds)) for g in range(args.groups))
            print(f"| {name} | {t} | {by_group} | {np.mean(ious):.2f} / {np.mean(balls):.2f} | {np.mean(margins):.2f} |", flush=True)


if __name__ == "__main__":
    main()
