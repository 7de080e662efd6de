"""Where an edit's first gradient lands: on the object, or on the floor it should keep; in the prior's latent, and in
the image after the VAE encoder. Measured without a scene.

At an edit's first step the render is the source, and the PDS gradient is chi(t) (eps(x_t, y_tgt) - eps(x_t, y_src))
in latent space: the prior's conditional difference between the two captions. The field receives it in image space,
through the VAE encoder's vector-Jacobian product. For every colour edit of the world (both shapes, 4 ring views, t at
every tenth of the range, 2 noises) this reads the share of the gradient's squared norm on the object, against the
object's share of the area, once in the latent (the object's footprint: latent cells with an object pixel) and once
in the image (the object's pixels): a share near the area's means the gradient is as much the floor's as the
object's. If the latent share is high and the image share low, the encoder spreads it (its group normalisations);
if the latent share is already low, the prior's own conditional difference does.

    python bench/gradient_locality.py            # the toy prior (about 2 minutes on 2 cores)
    python bench/gradient_locality.py --model-id PATH
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(model_id: str, noises: int = 2, scale: float = 100.0):
    import torch

    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from toy_world.classify import object_mask
    from toy_world.world import COLOURS, SHAPES, Thing, caption, render, ring_camera

    guidance = GuidanceConfig(model_id=model_id).setup(device="cpu")
    vae = guidance.pipe.vae
    size = vae.config.sample_size
    ratios = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]
    latent_share, image_share, area_latent, area_image, image_on_footprint = [], [], [], [], []
    for shape, (source, target), azimuth in itertools.product(SHAPES, itertools.permutations(COLOURS, 2), (0.3, 1.9, 3.5, 5.1)):
        image = render(Thing(source, shape), ring_camera(azimuth), size)
        mask = torch.from_numpy(object_mask(image))
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().requires_grad_(True)
        latent = vae.encode(2 * x - 1).latent_dist.mean * vae.config.scaling_factor
        footprint = torch.nn.functional.max_pool2d(mask[None, None].float(), size // latent.shape[-1])[0, 0] > 0
        for ratio, draw in itertools.product(ratios, range(noises)):
            generator = torch.Generator().manual_seed(draw)
            g = guidance(latent.detach(), latent.detach(), caption(target, shape), caption(source, shape), (ratio, ratio), generator, scale).grad
            (pixel_grad,) = torch.autograd.grad(latent, x, g, retain_graph=True)
            latent_energy = (g[0] ** 2).sum(0)
            image_energy = (pixel_grad[0] ** 2).sum(0)
            latent_share.append(float(latent_energy[footprint].sum() / latent_energy.sum()))
            image_share.append(float(image_energy[mask].sum() / image_energy.sum()))
            # the same cells as the latent's footprint, in pixels: the encoder's share on equal terms
            cells = footprint.repeat_interleave(size // latent.shape[-1], 0).repeat_interleave(size // latent.shape[-1], 1)
            image_on_footprint.append(float(image_energy[cells].sum() / image_energy.sum()))
            area_latent.append(float(footprint.float().mean()))
            area_image.append(float(mask.float().mean()))
    return {name: float(np.mean(values)) for name, values in
            (("latent_share", latent_share), ("latent_area", area_latent), ("image_share", image_share), ("image_area", area_image),
             ("image_on_footprint", image_on_footprint))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", default=None, help="default: toy_world/prior")
    parser.add_argument("--noises", type=int, default=2)
    parser.add_argument("--scale", type=float, default=100.0)
    args = parser.parse_args()
    from toy_world import PRIOR

    result = measure(args.model_id or str(PRIOR), args.noises, args.scale)
    print(f"latent: {result['latent_share']:.0%} of the gradient on the object's footprint ({result['latent_area']:.0%} of the cells); "
          f"image: {result['image_share']:.0%} on the object's pixels ({result['image_area']:.0%} of the pixels), "
          f"{result['image_on_footprint']:.0%} on the footprint's pixels")


if __name__ == "__main__":
    main()
