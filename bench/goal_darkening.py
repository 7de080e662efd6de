"""At the goal of a colour edit, does the prior's PDS gradient darken the object? Measured without a scene.

The outcome matrix with prior v2 finds its pds edits keep the object's outline (its contrast with the floor) while the
object turns darker the longer the edit runs (the red ball to green or blue: a bright ball at 200 steps, a dark one at
400), so that fewer of its pixels stay saturated and effect and structure fall. This script puts the edit at its goal:
the render is the world's own image of the target object (the source's shape, the target's colour) and the source is
the world's image of the source object, as a pds edit sees them once it has succeeded. Descending the PDS gradient g
moves the render's latent by -g; the direction that darkens the object is d = enc(object at 0.8 of its brightness) -
enc(object). Both are read orthogonal to the way back to the source (enc(source) - enc(goal)), which PDS's psi(t) term
pulls at any goal and which darkens some colours by itself: positive cos(-g, d) then means the step from the goal
darkens the object beyond that pull. Read for every colour edit of the world (12 pairs, ball and cube), 4 ring views, every tenth of
the t range, for each guidance scale.

    python bench/goal_darkening.py                                            # prior and prior v2, scales 30, 100
    python bench/goal_darkening.py --models toy_world/prior_v2 --scales 7.5 30 50 100
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AZIMUTHS = (0.3, 1.9, 3.5, 5.1)
DARKER = 0.8
"""How much darker the object of the darkening direction is (its pixels times this)."""


def goal_images(size: int, darker_by: float = DARKER):
    """(goals, sources, darker goals) [N, 3, H, W] in [0, 1] (the darker goal's object pixels times ``darker_by``), the
    goals' object masks [N, H, W] and each row's (shape, source, target): every colour edit of the world from 4 ring
    cameras."""
    import torch

    from toy_world.world import COLOURS, SHAPES, Thing, render, ring_camera, thing_masks

    goals, sources, darker, masks, rows = [], [], [], [], []
    for shape in SHAPES:
        for source, target in itertools.permutations(COLOURS, 2):
            for azimuth in AZIMUTHS:
                pose = ring_camera(azimuth)
                goal = render(Thing(target, shape), pose, size)
                masks.append(thing_masks(Thing(target, shape), pose, size)[0])
                goals.append(goal)
                sources.append(render(Thing(source, shape), pose, size))
                darker.append(np.where(masks[-1][..., None], goal * darker_by, goal))
                rows.append((shape, source, target))
    as_tensor = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # noqa: E731
    return as_tensor(goals), as_tensor(sources), as_tensor(darker), np.stack(masks), rows


def measure(model_id: str, scales, ratios, noises: int = 2):
    """{scale: [(t ratio, mean cos(-g, d), fraction of draws with cos > 0)]}, both -g and d taken orthogonal to the way
    back to the source (x0_src - x0_goal): the darkening beyond the pull back that PDS's psi(t) term always has at a
    goal (and whose colour change partly darkens)."""
    import torch
    from noop_stability import cosines_by_ratio, posterior_means

    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from toy_world.world import caption

    guidance = GuidanceConfig(model_id=model_id).setup(device="cpu")  # the method's defaults: pds, 500 steps, official coefficients
    goals, sources, darker, _, rows = goal_images(guidance.pipe.vae.config.sample_size)
    x0_goal, x0_src, x0_dark = (posterior_means(guidance, images) for images in (goals, sources, darker))
    d = (x0_dark - x0_goal).flatten(1)

    def reading(index: int, grad) -> float:
        one = slice(index, index + 1)
        back = (x0_src[one] - x0_goal[one]).flatten(1)  # the way back to the source, which PDS's psi(t) term pulls
        away = lambda v: v - (v * back).sum() / (back * back).sum() * back  # noqa: E731
        return float(torch.nn.functional.cosine_similarity(away(-grad.flatten(1)), away(d[one])))

    prompts = [(caption(target, shape), caption(source, shape)) for shape, source, target in rows]
    return cosines_by_ratio(guidance, x0_goal, x0_src, prompts, reading, scales, ratios, noises, "cos(-g, darker)", "darkening")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["toy_world/prior", "toy_world/prior_v2"])
    parser.add_argument("--scales", nargs="+", type=float, default=[30.0, 100.0])
    parser.add_argument("--noises", type=int, default=2)
    args = parser.parse_args()
    from noop_stability import RATIOS
    columns = {}
    for model in args.models:
        for scale, table in measure(str(ROOT / model), args.scales, RATIOS, args.noises).items():
            columns[f"{Path(model).name}, scale {scale:g}"] = table
    print("| t ratio | " + " | ".join(f"{name}: mean cos, darkening" for name in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for i, ratio in enumerate(RATIOS):
        print(f"| {ratio:.2f} | " + " | ".join(f"{table[i][1]:+.2f}, {table[i][2]:.0%}" for table in columns.values()) + " |")
    print("| mean | " + " | ".join(f"{np.mean([row[1] for row in table]):+.2f}, {np.mean([row[2] for row in table]):.0%}" for table in columns.values()) + " |")


if __name__ == "__main__":
    main()
