"""Does a prior's PDS gradient pull a drifted render back to its source? Measured without a scene, per timestep.

A no-op edit (target prompt = source prompt) should keep the scene: when the render x0_tgt has drifted from the
source x0_src by d, the PDS gradient g descended by the field should shrink d, i.e. <g, d> > 0. Linearised,
g = psi(t) d + chi(t) sqrt(a_t) J d, with J the Jacobian of the guided noise prediction eps_u + s (eps_c - eps_u):
the guidance scale s multiplies the Jacobian of the conditional gap, and where that part turns g away from d the
no-op drifts instead of holding. This script draws the toy world's views (every colour and shape, 4 ring cameras),
drifts each by a floor tinted 0.05 towards a random hue (the drift the outcome matrix sees), encodes both with the
prior's VAE (posterior means), and reads cos(g, d) at every tenth of the timestep range for each guidance scale.

    python bench/noop_stability.py                       # the toy prior, scales 7.5, 30, 100 (1-2 min on 2 cores)
    python bench/noop_stability.py --model-id PATH --scales 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


RATIOS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
"""The t ratios read: every tenth of the range, at its middle."""


def drifted_pairs(size: int, seed: int = 0):
    """(source image, drifted image) [N, 3, H, W] in [0, 1]: every object of the world from 4 ring cameras, the
    drifted one's floor and sky (unsaturated pixels) moved 0.05 towards a random hue."""
    import torch

    from toy_world.classify import object_mask
    from toy_world.world import COLOURS, SHAPES, Thing, render, ring_camera

    rng = np.random.default_rng(seed)
    sources, drifted = [], []
    for shape in SHAPES:
        for colour in COLOURS:
            for azimuth in (0.3, 1.9, 3.5, 5.1):
                image = render(Thing(colour, shape), ring_camera(azimuth), size)
                hue = rng.normal(size=3)
                tint = 0.05 * (hue - hue.mean()) / np.linalg.norm(hue - hue.mean())
                rest = ~object_mask(image)
                sources.append(image)
                drifted.append(np.where(rest[..., None], np.clip(image + tint, 0, 1), image))
    as_tensor = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # noqa: E731
    return as_tensor(sources), as_tensor(drifted)


def measure(model_id: str, scales, ratios, noises: int = 4):
    """{scale: [(t ratio, mean cos(g, d), fraction of draws with cos > 0)]}."""
    import torch

    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from toy_world.world import caption

    guidance = GuidanceConfig(model_id=model_id).setup(device="cpu")  # the method's defaults: pds, 500 steps, official coefficients
    vae = guidance.pipe.vae
    sources, drifted = drifted_pairs(vae.config.sample_size)
    x0_src, x0_tgt = posterior_means(guidance, sources), posterior_means(guidance, drifted)
    d = (x0_tgt - x0_src).flatten(1)
    prompts = [caption(colour, shape) for shape in ("ball", "cube") for colour in ("red", "green", "blue", "yellow") for _ in range(4)]
    pairs = [(prompt, prompt) for prompt in prompts]
    reading = lambda index, grad: float(torch.nn.functional.cosine_similarity(grad.flatten(1), d[index : index + 1]))  # noqa: E731
    return cosines_by_ratio(guidance, x0_tgt, x0_src, pairs, reading, scales, ratios, noises, "cos(g, d)", "restoring")


def posterior_means(guidance, images):
    """The prior's VAE latents of ``images`` [N, 3, H, W] in [0, 1]: the posterior's means (the guidance's own
    ``encode_images`` draws a sample), scaled as the UNet reads them."""
    import torch

    vae = guidance.pipe.vae
    with torch.no_grad():
        return vae.encode(2 * images - 1).latent_dist.mean * vae.config.scaling_factor


def cosines_by_ratio(guidance, x0_tgt, x0_src, prompts, reading, scales, ratios, noises: int, name: str, positive: str):
    """{scale: [(t ratio, mean reading, fraction of draws reading > 0)]}: ``reading(index, grad)`` of the guidance's
    gradient for each row of ``x0_tgt`` against ``x0_src`` (its (target, source) prompts), at each t ratio and scale,
    ``noises`` draws each; every row printed as it is read."""
    import torch

    results = {}
    for scale in scales:
        rows = []
        for ratio in ratios:
            values = []
            for draw in range(noises):
                for index, (tgt_prompt, src_prompt) in enumerate(prompts):
                    generator = torch.Generator().manual_seed(1000 * draw + index)
                    one = slice(index, index + 1)
                    out = guidance(x0_tgt[one], x0_src[one], tgt_prompt, src_prompt, (ratio, ratio), generator, scale)
                    values.append(reading(index, out.grad))
            rows.append((ratio, float(np.mean(values)), float(np.mean(np.array(values) > 0))))
            print(f"scale {scale:g}, t ratio {ratio:.2f}: {name} {rows[-1][1]:+.3f}, {positive} in {rows[-1][2]:.0%}", flush=True)
        results[scale] = rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=None, help="default: toy_world/prior")
    parser.add_argument("--scales", nargs="+", type=float, default=[7.5, 30.0, 100.0])
    parser.add_argument("--noises", type=int, default=2)
    args = parser.parse_args()
    from toy_world import PRIOR

    results = measure(args.model_id or str(PRIOR), args.scales, RATIOS, args.noises)
    print("| t ratio | " + " | ".join(f"scale {s:g}: mean cos, restoring" for s in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, ratio in enumerate(RATIOS):
        print(f"| {ratio:.2f} | " + " | ".join(f"{rows[i][1]:+.2f}, {rows[i][2]:.0%}" for rows in results.values()) + " |")


if __name__ == "__main__":
    main()
