"""How much it matters that a splat edit renders its guidance view at 512 px directly, where the official release
renders at the data's resolution and resizes the image to 512.

gsplat (and pds_nerfstudio.scenes.splat_cpu) add ``eps2d`` = 0.3 px of screen-space blur to every projected Gaussian: at a
lower resolution that blur covers more of the scene, so the two images differ most for small Gaussians. This renders a
random scene of Gaussians with the CPU rasteriser (gsplat's math) both ways and reports the difference in [0, 1] units
(and PSNR of one against the other), for data at 1.5x and 2x the guidance resolution.

    python bench/render_scale.py            # writes its table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pds_nerfstudio.scenes.splat_cpu import rasterize_on_cpu  # noqa: E402
from toy_world.report import replace_section  # noqa: E402

MARKER = "<!-- bench:render-scale -->"


def scene(count: int, seed: int):
    """Gaussians in front of a camera at the origin looking down +z, 0.001 to 0.02 units across at depth 2.5 to 3.5."""
    generator = torch.Generator().manual_seed(seed)
    means = (torch.rand(count, 3, generator=generator) - 0.5) * torch.tensor([2.0, 2.0, 1.0]) + torch.tensor([0.0, 0.0, 3.0])
    scales = torch.exp(torch.empty(count, 3).uniform_(math.log(0.001), math.log(0.02), generator=generator))
    quats = torch.randn(count, 4, generator=generator)
    opacities = torch.rand(count, generator=generator) * 0.8 + 0.2
    colors = torch.rand(count, 3, generator=generator)
    return means, quats, scales, opacities, colors


def render(gaussians, size: int) -> torch.Tensor:
    focal = size * 0.9
    K = torch.tensor([[[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]]])
    image, _, _ = rasterize_on_cpu(*gaussians, torch.eye(4)[None], K, size, size, backgrounds=torch.ones(1, 3), pixel_chunk=2048)
    return image[0].permute(2, 0, 1)[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidance-resolution", type=int, default=512)
    parser.add_argument("--gaussians", type=int, default=800)
    parser.add_argument("--doc", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    args = parser.parse_args()
    gaussians = scene(args.gaussians, seed=0)
    size = args.guidance_resolution
    with torch.no_grad():
        direct = render(gaussians, size)
        rows = []
        for factor in (1.5, 2.0):
            data = render(gaussians, int(size * factor))
            for antialias in (False, True):
                resized = F.interpolate(data, size=(size, size), mode="bilinear", antialias=antialias, align_corners=False)
                difference = (resized - direct).abs()
                psnr = -10 * math.log10(((resized - direct) ** 2).mean().item())
                rows.append(f"| {int(size * factor)} px | {'bilinear, antialiased' if antialias else 'bilinear'} | "
                            f"{difference.mean().item():.4f} | {difference.max().item():.3f} | {psnr:.1f} dB |")  # fmt: skip
    body = "\n".join([
        f"### Guidance view rendered at {size} px directly vs at the data's size and resized (splats, CPU rasteriser)",
        "",
        f"{args.gaussians} random Gaussians of {0.9 * size * 0.001 / 3.5:.1f} to {0.9 * size * 0.02 / 2.5:.1f} px at {size} px, "
        "white background; the release's resize is bilinear; `python bench/render_scale.py`.",
        "",
        "| data's size | resize | mean abs difference | max | PSNR |",
        "|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    print(body)
    replace_section(args.doc, MARKER, body)


if __name__ == "__main__":
    main()
