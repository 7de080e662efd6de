"""Does the toy-world prior know its world? Sample images for every caption with the real diffusers pipeline and read
their colour and shape with :mod:`toy_world.classify`; write the accuracy per caption and a grid of samples.

    python -m toy_world.evaluate_prior                      # toy_world/prior; writes docs/toy_world.md and its PNG

A prior trained with dark objects (``train_prior --dark-share``) is also sampled for its dark captions; the brightness
column (the mean largest channel of the pixels the classifier reads as the object) tells whether it draws them darker.
It reads saturated pixels only, so a dark object's shaded side drops out: dark objects read brighter than they are,
and dark balls read as not round. The picture is named after the model's folder (toy_world_prior_samples.png for
toy_world/prior).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from toy_world import PRIOR
from toy_world.classify import read
from toy_world.report import replace_section
from toy_world.train_prior import CARD_NAME, read_card
from toy_world.world import COLOURS, SHAPES, caption, dark

ROOT = Path(__file__).resolve().parents[1]

MARKER = "<!-- bench:toy-prior-accuracy -->"


def sample(pipe, prompt: str, count: int, guidance_scale: float, steps: int, seed: int) -> np.ndarray:
    """``count`` samples [N, H, W, 3] uint8 of ``prompt``."""
    generator = torch.Generator().manual_seed(seed)
    images = pipe(
        [prompt] * count, guidance_scale=guidance_scale, num_inference_steps=steps, generator=generator, output_type="np"
    ).images
    return (images * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PRIOR)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "toy_world.md")
    args = parser.parse_args()
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rows: List[str] = []
    grid: List[np.ndarray] = []
    if not (args.model / CARD_NAME).is_file():
        raise SystemExit(f"{args.model}: no {CARD_NAME}; evaluate_prior reads the priors toy_world.train_prior writes")
    card = read_card(args.model)
    shades = [False, True] if card.get("dark_share", 0.0) > 0 else [False]  # a prior trained with dark objects
    committed = args.model.name == PRIOR.name
    for darkened in shades:
        totals: Dict[str, List[float]] = {"colour": [], "shape": [], "both": []}
        for shape in SHAPES:
            for index, colour in enumerate(COLOURS):
                prompt = caption(dark(colour) if darkened else colour, shape)
                seed = index + 10 * SHAPES.index(shape) + 100 * darkened
                images = sample(pipe, prompt, args.samples, args.guidance_scale, args.steps, seed)
                readings = [read(image) for image in images]
                colour_ok = np.mean([r.colour == colour for r in readings])
                shape_ok = np.mean([r.shape == shape for r in readings])
                both = np.mean([r.colour == colour and r.shape == shape for r in readings])
                for name, value in (("colour", colour_ok), ("shape", shape_ok), ("both", both)):
                    totals[name].append(value)
                lit = [image[r.mask].max(-1).mean() / 255 for image, r in zip(images, readings) if r.mask.any()]
                brightness = f"{np.mean(lit):.2f}" if lit else "no object read"
                rows.append(f"| {prompt} | {colour_ok:.0%} | {shape_ok:.0%} | {both:.0%} | {brightness} |")
                grid.append(np.concatenate(list(images[:8]), axis=1))
        mean = [f"{np.mean(totals[name]):.0%}" for name in ("colour", "shape", "both")]
        rows.append(f"| mean{' (dark captions)' if darkened else ''} | {' | '.join(mean)} | |")
    picture = args.doc.with_name(f"toy_world_{args.model.name}_samples.png")
    shown = args.model.resolve().relative_to(ROOT) if ROOT in args.model.resolve().parents else args.model
    Image.fromarray(np.concatenate(grid, axis=0)).resize((grid[0].shape[1] * 3, len(grid) * grid[0].shape[0] * 3), Image.NEAREST).save(picture)
    body = "\n".join([
        f"### Samples of the toy-world prior{'' if committed else ' ' + args.model.name} read by the world's classifier",
        "",
        f"{args.samples} samples per caption, DDIM {args.steps} steps, guidance scale {args.guidance_scale}, "
        f"`python -m toy_world.evaluate_prior --model {shown}`; the first 8 of each caption (a row each) are in "
        f"[{picture.name}]({picture.name}).",
        "",
        "| caption | colour read | shape read | both | brightness |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Chance is 25% for the colour and 50% for the shape. The classifier itself reads the world's own renders at "
        "32 px with 100% (colour) and about 90% (shape) accuracy (tests/toy_world/test_world.py).",
    ])  # fmt: skip
    print(body)
    replace_section(args.doc, MARKER if committed else MARKER.replace(" -->", f":{args.model.name} -->"), body)


if __name__ == "__main__":
    main()
