"""Where the released objective pulls an object that is already right: the toy multi-view prior's x0 targets at renders
of the world's red cube (the shape edit's goal) and red ball (its start), per guidance scale and t.

pnr's objects protocol descends 0.5 |z - sg(x0)|^2, x0 the rescaled guided one-step estimate
(:class:`pds_nerfstudio.priors.multiview_guidance.MultiViewGuidance`, the product's class at its defaults: the released
negative prompt, std rescale 0.5). If the target object itself is not near a fixed point of that pull (its targets
larger than it, or another colour), no edit can hold it. For 8 orbit groups drawn as the edit draws them (released
ranges, round the toy object at its orbit radius), the world renders the object at scale 1 with a random turn; the VAE
encodes the views; the guidance gives the target at a fixed t from a seeded noise; the decoded targets are read by the
world's classifier against the decoded latents: object pixels (ratio), views read cube, views read red. The edit's t
is annealed from 0.75 to the range (0.02, 0.40) (pnr_nerfstudio/schedules.py).

    python bench/multiview_targets.py            # writes its table into docs/toy_world.md, its picture into docs/
    python bench/multiview_targets.py --scales 5 50 --groups 2 --no-write   # a check, a minute
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.report import replace_section  # noqa: E402

MARKER = "<!-- bench:multiview-targets -->"
TIMESTEPS = (20, 100, 300, 400, 600, 750, 980)
"""t on the 1000-step schedule: the edit starts at 750 and ends drawing from 20-400 (pnr_nerfstudio/schedules.py)."""
PICTURE_TIMESTEPS = (100, 300, 600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 5.0, 7.5, 10.0, 15.0, 25.0, 50.0])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ as it is")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pds_nerfstudio.priors.multiview_guidance import MultiViewGuidance, MultiViewGuidanceConfig
    from toy_world import MULTIVIEW_PRIOR
    from toy_world.multiview_targets import decoded_targets, orbit_renders, read_views
    from toy_world.outcome import save_views
    from toy_world.world import Thing, caption

    prompt = caption("red", "cube")
    objects = {shape: orbit_renders(lambda turn, shape=shape: Thing("red", shape, (0.0, 0.0), 1.0, turn), args.groups) for shape in ("cube", "ball")}
    header = "| scale | object | " + " | ".join(f"t {t}" for t in TIMESTEPS) + " |"
    lines = [header, "|---|---|" + "---|" * len(TIMESTEPS)]
    print(header, flush=True)
    picture: List[List[np.ndarray]] = []
    guidance = MultiViewGuidance(MultiViewGuidanceConfig(model_id=str(MULTIVIEW_PRIOR)), "cpu")
    with torch.no_grad():
        latents = {shape: guidance.encode_images(views, torch.Generator().manual_seed(1)) for shape, (views, _) in objects.items()}
    decoded = {shape: guidance.decode_latents(latent) for shape, latent in latents.items()}
    pixels = {shape: read_views(images, "red").mean_pixels for shape, images in decoded.items()}
    for scale in args.scales:
        for shape, (views, cameras) in objects.items():
            cells, row = [], [views[:4], decoded[shape][:4]]
            for t in TIMESTEPS:
                targets = decoded_targets(guidance, latents[shape], cameras, prompt, t, scale)
                reading = read_views(targets.images, "red")
                cells.append(f"{reading.mean_pixels / pixels[shape]:.2f} / {reading.cube_share:.2f} / {reading.colour_share:.2f} ({targets.factors.mean():.2f})")
                if t in PICTURE_TIMESTEPS:
                    row.append(targets.images[:4])
            if shape == "cube":
                picture.append([view.permute(1, 2, 0).numpy() for part in row for view in part])
            lines.append(f"| {scale:g} | red {shape} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    if args.no_write:
        return
    body = "\n".join([
        f"Each cell: the decoded targets' object pixels over the decoded latents', the share of views read cube and read red, and (in brackets) the std rescale factor (the conditional estimate's spread over the guided one's, mean over groups); {args.groups} orbit groups of 4 views, the prompt \"{prompt}\", the product's multi-view guidance at its defaults but the scale (released 50), `python bench/multiview_targets.py`. Picture: [multiview_targets.png](multiview_targets.png), a row a scale ({', '.join(f'{s:g}' for s in args.scales)}): the world's red cube, its decoded latents, the targets at t {', '.join(map(str, PICTURE_TIMESTEPS))} (4 views each).",
        "",
        *lines,
    ])  # fmt: skip
    replace_section(ROOT / "docs" / "toy_world.md", MARKER, body)
    save_views(picture, ROOT / "docs" / "multiview_targets.png", scale=2)


if __name__ == "__main__":
    main()
