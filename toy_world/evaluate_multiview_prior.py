"""Does the toy world's multi-view prior know its world, and do its 4 views agree? Sample groups of 4 views for every
caption (DDIM, each view with its orbit camera drawn as the released objects code draws them), read each view's colour
and shape with :mod:`toy_world.classify`, and count the groups whose 4 views all read the same; the same UNet with
its cross-view attention off (each view denoised alone) beside it. Writes a table and a grid of samples.

    python -m toy_world.evaluate_multiview_prior --model toy_world/multiview_prior   # writes docs/toy_world.md's section
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from toy_world.classify import read
from toy_world.report import replace_section
from toy_world.train_multiview_prior import TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, VIEWS
from toy_world.world import COLOURS, SHAPES, caption

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- bench:toy-multiview-prior -->"


@torch.no_grad()
def sample_groups(pipe, unet, prompt: str, groups: int, guidance_scale: float, steps: int, seed: int) -> np.ndarray:
    """``groups`` groups of 4 views [groups, 4, H, W, 3] uint8 of ``prompt``, each group at its own orbit cameras."""
    from pds_nerfstudio.scenes.orbit import draw_orbit_group

    generator = torch.Generator().manual_seed(seed)
    size = int(unet.config.sample_size)
    orbits = [draw_orbit_group(generator, TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, size, VIEWS) for _ in range(groups)]
    return sample_at(pipe, unet, prompt, orbits, guidance_scale, steps, generator)


@torch.no_grad()
def sample_at(pipe, unet, prompt: str, orbits, guidance_scale: float, steps: int, generator: torch.Generator) -> np.ndarray:
    """Groups of 4 views [len(orbits), 4, H, W, 3] uint8 of ``prompt`` (DDIM, classifier-free guidance against ""), a
    group at each orbit group's cameras (:class:`pds_nerfstudio.scenes.orbit.OrbitGroup`), the noise from ``generator``."""
    from diffusers import DDIMScheduler

    from pds_nerfstudio.priors.multiview import camera_vectors

    size = int(unet.config.sample_size)
    cameras = torch.cat([camera_vectors(orbit.object_c2w.float()) for orbit in orbits])
    count = len(orbits) * VIEWS
    tokens = pipe.tokenizer([prompt, ""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    text, empty = pipe.text_encoder(tokens.input_ids).last_hidden_state
    hidden = torch.cat([text.expand(count, -1, -1), empty.expand(count, -1, -1)])
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    latents = torch.randn((count, unet.config.in_channels, size, size), generator=generator)
    for t in scheduler.timesteps:
        eps = unet(torch.cat([latents, latents]), t, encoder_hidden_states=hidden, class_labels=torch.cat([cameras, cameras])).sample
        cond, uncond = eps.chunk(2)
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    images = ((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return images.reshape(len(orbits), VIEWS, *images.shape[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "toy_world" / "multiview_prior")
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "toy_world.md")
    args = parser.parse_args()
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0
    from PIL import Image

    from pds_nerfstudio.priors.multiview import install_multiview_attention, load_multiview_unet, read_multiview_info

    info = read_multiview_info(args.model)
    assert info is not None, f"{args.model} is not a multi-view prior folder"
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False)
    unet = load_multiview_unet(args.model, info).eval()
    rows: List[str] = []
    grid: List[np.ndarray] = []
    totals: Dict[str, List[float]] = {}
    for shape in SHAPES:
        for index, colour in enumerate(COLOURS):
            prompt = caption(colour, shape)
            cells = []
            for joint in (True, False):
                if joint:
                    install_multiview_attention(unet, VIEWS)
                else:
                    unet.set_attn_processor(AttnProcessor2_0())
                groups = sample_groups(pipe, unet, prompt, args.groups, args.guidance_scale, args.steps, seed=index + 10 * SHAPES.index(shape))
                readings = [[read(view) for view in group] for group in groups]
                right = np.mean([r.colour == colour and r.shape == shape for group in readings for r in group])
                agree = np.mean([len({(r.colour, r.shape) for r in group}) == 1 for group in readings])
                key = "joint" if joint else "alone"
                totals.setdefault(f"{key} right", []).append(right)
                totals.setdefault(f"{key} agree", []).append(agree)
                cells += [f"{right:.0%}", f"{agree:.0%}"]
                if joint:
                    grid.append(np.concatenate([np.concatenate(list(group), axis=1) for group in groups[:2]], axis=1))
            rows.append(f"| {prompt} | " + " | ".join(cells) + " |")
    picture = args.doc.with_name("toy_world_multiview_prior_samples.png")
    picture.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(grid, axis=0)).resize((grid[0].shape[1] * 3, len(grid) * grid[0].shape[0] * 3), Image.NEAREST).save(picture)
    mean = " | ".join(f"{np.mean(totals[k]):.0%}" for k in ("joint right", "joint agree", "alone right", "alone agree"))
    body = "\n".join([
        "### Samples of the toy-world multi-view prior read by the world's classifier",
        "",
        f"{args.groups} groups of {VIEWS} views per caption, each group at orbit cameras drawn as the released objects code "
        f"draws them, DDIM {args.steps} steps, guidance scale {args.guidance_scale}, `python -m "
        f"toy_world.evaluate_multiview_prior --model {args.model}`. *Right*: views read as the caption's colour and shape; "
        "*agree*: groups whose 4 views all read the same. *Alone*: the same UNet with its cross-view attention off. "
        f"Two groups per caption (a row each) are in [{picture.name}]({picture.name}).",
        "",
        "| caption | right | agree | right, alone | agree, alone |",
        "|---|---|---|---|---|",
        *rows,
        f"| mean | {mean} |",
    ])  # fmt: skip
    print(body)
    replace_section(args.doc, MARKER, body)


if __name__ == "__main__":
    main()
