"""How precisely the gradient of a pds step reaches the rendered image, per precision of the diffusion model.

    python bench/precision.py                       # CPU, SD-1.5-shaped models, 64 and 128 px
    python bench/precision.py --device cuda --sizes 64 256 512

For each precision the same step (same image, source, t, noise and VAE sample) is taken with an
SD-1.5-shaped UNet, VAE and text encoder built from config (random weights), and the gradient that
reaches the rendered image is compared with the one computed in float32 throughout (the official
release's precision): cosine similarity and relative error, with the step's time and peak memory.
The result replaces this benchmark's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toy_world.report import replace_section  # noqa: E402

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
MARKER = "precision"
PRECISIONS = {
    "float32": "float32 throughout (the release's and our default)",
    "float16": "float16 UNet and text encoder, float32 VAE (--pipeline.guidance.dtype float16)",
    "float16-vae": "float16 throughout, VAE included (the former CUDA default)",
}


def guidance_in(precision: str, pipe, device: str):
    """The package's guidance on a copy of ``pipe`` in ``precision``."""
    import torch

    from pds_nerfstudio.priors.guidance import GuidanceConfig

    guidance = GuidanceConfig(dtype="float32" if precision == "float32" else "float16").setup(device=device)
    prepared = guidance.prepare(copy.deepcopy(pipe))
    if precision == "float16-vae":
        prepared.vae.to(torch.float16)
    return guidance


def measure(pipe, precision: str, size: int, device: str, repeats: int) -> Dict[str, object]:
    import torch

    from toy_world.models import rendered_image_gradient

    guidance = guidance_in(precision, pipe, device)
    generator = torch.Generator().manual_seed(size)
    image = torch.rand(1, 3, size, size, generator=generator).to(device)
    source = torch.rand(1, 3, size, size, generator=generator).to(device)
    grads, seconds = [], []
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for seed in range(repeats):
        start = time.perf_counter()
        grads.append(rendered_image_gradient(guidance, image, source, "a photo of a polar bear", "a photo of a bear", seed))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return {"grads": [g.double().cpu() for g in grads], "seconds": sorted(seconds)[len(seconds) // 2], "peak_mib": peak}


def compare(grad, reference) -> Dict[str, float]:
    import torch

    cosine = torch.nn.functional.cosine_similarity(grad.flatten(), reference.flatten(), dim=0).item()
    relative = ((grad - reference).norm() / reference.norm()).item()
    return {"cosine": cosine, "relative_error": relative}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=3, help="steps (seeds) per precision and size")
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/benchmarks.md as it is")
    args = parser.parse_args()

    import torch

    from toy_world.models import build_tiny_stable_diffusion, sd15_shaped_pipeline

    with tempfile.TemporaryDirectory() as work:
        pipe = sd15_shaped_pipeline(build_tiny_stable_diffusion(Path(work) / "tiny"))
    rows: List[str] = []
    for size in args.sizes:
        results = {precision: measure(pipe, precision, size, args.device, args.repeats) for precision in PRECISIONS}
        for precision, result in results.items():
            scores = [compare(g, r) for g, r in zip(result["grads"], results["float32"]["grads"])]
            worst = min(scores, key=lambda score: score["cosine"])
            row = (
                f"| {size} | {PRECISIONS[precision]} | {worst['cosine']:.6f} | {worst['relative_error']:.2e} "
                f"| {result['seconds']:.2f} | {result['peak_mib']:.0f} |"
            )
            print(row, flush=True)
            rows.append(row)
    if not args.no_report:
        write_report(args, rows, torch.__version__)


def write_report(args, rows: List[str], torch_version: str) -> None:
    command = "python bench/precision.py" + (f" --device {args.device}" if args.device != "cpu" else "")
    command += f" --sizes {' '.join(map(str, args.sizes))}"
    section = "\n".join(
        [
            f"### Gradient precision, {args.device}",
            "",
            f"`{command}` on {platform.machine()}, torch {torch_version}; SD-1.5-shaped UNet, VAE and text encoder",
            f"(random weights), guidance scale 100, PDS; worst of {args.repeats} steps (seeds) per cell, compared",
            "with float32 throughout. Peak memory is CUDA's max_memory_allocated (nan on the CPU).",
            "",
            "| size (px) | precision | cosine with float32 | relative error | s/step | peak (MiB) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    replace_section(REPORT, f"<!-- bench:{MARKER}:{args.device} -->", section)
    print(f"written to {REPORT}")


if __name__ == "__main__":
    main()
