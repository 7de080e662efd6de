"""Where along the way from the source to the target does a pds colour edit stop? Measured without a scene.

The outcome matrix finds pds edits on prior v2 keep the object's shape and take the target's hue but end darker and
duller than the world draws the target, the more so the lower the guidance scale (object brightness 0.83 at scale 30,
0.89 at 50, 0.99 at 70, 1.12 at 100), and bench/goal_darkening.py finds no darkening in the step at the goal itself.
This script reads the step on the straight way between the two latents, z(l) = z_src + l (z_goal - z_src) (l = 0 the
source object, 1 the world's target object): the mean over t (every tenth of the range) and noise draws of the step
-g projected on the unit way u, split into PDS's two parts, the identity term -psi(t) (z - z_src), which always pulls
back to the source, and the noise term -chi(t) (eps_tgt - eps_src), which the prior's target prompt drives. The edit
can only come to rest where the two balance, at l*; the script decodes z(l*) and reads the object's brightness there
(its pixels' mean largest channel over the decoded goal's, in the world's target masks). Every colour edit of the
world (12 pairs, ball and cube), 4 ring views each; per guidance scale.

    python bench/edit_equilibrium.py                         # prior v2, scales 30 50 70 100 (about 2 min a scale)
    python bench/edit_equilibrium.py --model-id toy_world/prior --scales 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAY = (0.25, 0.5, 0.75, 1.0, 1.25)
"""The points read on the way, as fractions of it from the source (0) to the goal (1)."""


def measure(model_id: str, scales, ratios, noises: int = 2, start_brightness: Optional[float] = None):
    """({scale: (steps [pairs, len(WAY)], identity parts [pairs, len(WAY)], brightness at rest [pairs], l* [pairs])}, each
    pair's (shape, source, target), each view's way length): the mean
    step along the way (positive: towards the goal) and its identity term's share, each edit's resting point l* (where
    the step first turns back; WAY's last point where it never does) and its decoded object's brightness there.
    ``start_brightness``: the way starts at the target object darkened to this fraction of its brightness (the dark end
    of an edit) instead of at the source object; the identity term still pulls to the source."""
    import torch
    from goal_darkening import AZIMUTHS, goal_images
    from noop_stability import posterior_means

    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from pds_nerfstudio.score_distillation.gradients import pds_psi_chi, sample_timesteps
    from toy_world.world import caption

    guidance = GuidanceConfig(model_id=model_id).setup(device="cpu")  # the method's defaults: pds, 500 steps, official coefficients
    goals, sources, dark, masks, rows = goal_images(guidance.pipe.vae.config.sample_size, 1.0 if start_brightness is None else start_brightness)
    views = len(AZIMUTHS)
    decode = lambda z: guidance.decode_latents(z).permute(0, 2, 3, 1).numpy()  # noqa: E731
    z_src, z_goal = posterior_means(guidance, sources), posterior_means(guidance, goals)
    z_start = z_src if start_brightness is None else posterior_means(guidance, dark)
    goal_brightness = brightness(decode(z_goal), masks)
    # each t ratio's one (t, t_prev) as the guidance draws it, and the identity term's weight psi(t) there
    psi_at = {}
    for ratio in ratios:
        t, t_prev = sample_timesteps(guidance.timestep_grid, ratio, ratio, 1)
        psi_at[ratio] = (t, pds_psi_chi(guidance.alphas_cumprod, t, t_prev, "official", guidance.pipe.scheduler.betas)[0].float())
    way = (z_goal - z_start).flatten(1)
    length = way.norm(dim=1)
    unit = way / length[:, None]

    results = {}
    for scale in scales:
        steps = np.zeros((len(rows) // views, len(WAY)))
        identity = np.zeros_like(steps)
        for pair, first in enumerate(range(0, len(rows), views)):
            shape, source, target = rows[first]
            one = slice(first, first + views)
            for k, fraction in enumerate(WAY):
                z = z_start[one] + fraction * (z_goal[one] - z_start[one])
                along, pulled = [], []
                for ratio in ratios:
                    t, psi = psi_at[ratio]
                    for draw in range(noises):
                        generator = torch.Generator().manual_seed(1000 * draw + pair)
                        out = guidance(z, z_src[one], caption(target, shape), caption(source, shape), (ratio, ratio), generator, scale)
                        assert bool((out.t == t).all()), (out.t, t)
                        along.append(float((-out.grad.flatten(1) * unit[one]).sum(1).mean()))
                        pulled.append(float((-psi * (z - z_src[one]).flatten(1) * unit[one]).sum(1).mean()))
                steps[pair, k], identity[pair, k] = np.mean(along), np.mean(pulled)
            print(f"scale {scale:g}, {shape} {source} -> {target}: step along the way " + " ".join(f"{v:+.3f}" for v in steps[pair]), flush=True)
        rest = np.array([resting_point(row) for row in steps])
        with torch.no_grad():
            at_rest = z_start + torch.from_numpy(np.repeat(rest, views)).float()[:, None, None, None] * (z_goal - z_start)
            rest_brightness = brightness(decode(at_rest), masks) / goal_brightness
        results[scale] = (steps, identity, rest_brightness.reshape(-1, views).mean(1), rest)
    return results, rows[::views], length.numpy()


def resting_point(steps: np.ndarray) -> float:
    """The first l on WAY where the step along the way turns from forwards to back, linearly interpolated; WAY's
    first point where the step is back already and its last where it never turns (bounds, counted apart)."""
    if steps[0] <= 0:
        return WAY[0]
    for k in range(1, len(WAY)):
        if steps[k] <= 0:
            return WAY[k - 1] + (WAY[k] - WAY[k - 1]) * steps[k - 1] / (steps[k - 1] - steps[k])
    return WAY[-1]


def brightness(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[N] mean largest channel of each image's pixels in its mask."""
    return np.array([image[mask].max(-1).mean() for image, mask in zip(images, masks)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default="toy_world/prior_v2")
    parser.add_argument("--scales", nargs="+", type=float, default=[30.0, 50.0, 70.0, 100.0])
    parser.add_argument("--noises", type=int, default=2)
    parser.add_argument("--start-brightness", type=float, default=None, help="start the way at the target object this dark (e.g. 0.6) instead of at the source")
    args = parser.parse_args()
    from noop_stability import RATIOS

    results, rows, lengths = measure(str(ROOT / args.model_id), args.scales, RATIOS, args.noises, args.start_brightness)
    print(f"The way's length (latent norm): mean {lengths.mean():.2f} (min {lengths.min():.2f}, max {lengths.max():.2f}); a step of s moves l by s / length.\n")
    print("| guidance scale | step along the way at l = " + ", ".join(f"{f:g}" for f in WAY) + " (identity term's part) | resting point l*: mean (min, max) | at the way's ends (bounds: back at its first point, never back) | brightness at rest: mean (min, max) | edits resting short of the goal (l* < 0.95) |")
    print("|---|---|---|---|---|---|")
    for scale, (steps, identity, rest_brightness, rest) in results.items():
        way = ", ".join(f"{s:+.2f} ({i:+.2f})" for s, i in zip(steps.mean(0), identity.mean(0)))
        ends = f"{int((steps[:, 0] <= 0).sum())}, {int((steps > 0).all(1).sum())}"
        print(f"| {scale:g} | {way} | {rest.mean():.2f} ({rest.min():.2f}, {rest.max():.2f}) | {ends} | {rest_brightness.mean():.2f} ({rest_brightness.min():.2f}, {rest_brightness.max():.2f}) | {int((rest < 0.95).sum())} of {len(rest)} |")


if __name__ == "__main__":
    main()
