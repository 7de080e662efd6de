"""Memory and time of a `pds-dreambooth` training step, full fine-tuning against LoRA, on SD-1.5-shaped models.

    python bench/dreambooth.py                                  # CPU, 64 px (the sizes a CPU allows)
    python bench/dreambooth.py --device cuda --resolution 512   # GPU: the official setting

Each mode runs in a fresh process: the SD-1.5-shaped pipeline (random weights: the same compute and memory
as the real one) is built from config, and DreamBooth's own trainer takes --steps steps on one instance and
one class image (prior preservation on, as released). Reported: the process's peak resident memory (CPU)
or peak torch.cuda.max_memory_allocated (CUDA), and the median seconds per step after the first. The
result replaces this benchmark's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.render_memory import PeakRSS  # noqa: E402
from toy_world.report import replace_section  # noqa: E402

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def measure(mode: str, resolution: int, steps: int, device: str, model_id: Optional[str] = None) -> dict:
    """``steps`` DreamBooth training steps of ``mode`` on the SD-1.5-shaped pipeline built from config (or the saved
    pipeline ``model_id``): trained parameters, peak memory (MiB) and the median seconds of a step after the first."""
    import random

    import torch

    from pds_nerfstudio.cli.dreambooth import DreamBooth
    from pds_nerfstudio.priors.dreambooth import DreamBoothTrainer
    from pds_nerfstudio.priors.loading import load_stable_diffusion
    from toy_world.models import build_tiny_stable_diffusion, sd15_shaped_pipeline

    if model_id is not None:
        pipe = load_stable_diffusion(model_id, torch.float32)
    else:
        with tempfile.TemporaryDirectory() as work:
            pipe = sd15_shaped_pipeline(build_tiny_stable_diffusion(Path(work) / "tiny"))
    config = DreamBooth(source=Path("."), instance_prompt="a photo of a sks bear", class_prompt="a photo of a bear",
                        mode=mode, resolution=resolution, device=device)  # fmt: skip
    pipe.to(device)
    trainer = DreamBoothTrainer(config, pipe, torch.device(device))
    embeddings = torch.cat([trainer.text_embedding(config.instance_prompt), trainer.text_embedding(config.class_prompt)])
    images = torch.rand(2, 3, resolution, resolution) * 2 - 1
    trained = sum(p.numel() for p in trainer.parameters)
    seconds = []
    with PeakRSS() as rss:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for step in range(steps):
            start = time.perf_counter()
            trainer.training_step(images, embeddings, torch.Generator().manual_seed(random.Random(step).getrandbits(63)))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else rss.peak / 2**20
    timed = sorted(seconds[1:]) or seconds
    return {"mode": mode, "trained_parameters": trained, "peak_mib": peak, "seconds_per_step": timed[len(timed) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one mode in this process
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.resolution, args.steps, args.device)), flush=True)
        return
    rows = []
    for mode in args.modes:
        command = [sys.executable, __file__, "--one", mode, "--device", args.device, "--resolution", str(args.resolution),
                   "--steps", str(args.steps)]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(output.split("RESULT ", 1)[1])
        row = (f"| {mode} | {result['trained_parameters'] / 1e6:.1f}M | {result['peak_mib']:.0f} "
               f"| {result['seconds_per_step']:.2f} |")  # fmt: skip
        print(row, flush=True)
        rows.append(row)
    if not args.no_report:
        write_report(args, rows)


def write_report(args, rows) -> None:
    import torch

    memory = "peak torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak resident memory of the process"
    section = "\n".join([
        f"### DreamBooth training step, {args.device}, {args.resolution} px",
        "",
        f"`python bench/dreambooth.py --device {args.device} --resolution {args.resolution}` on {platform.machine()}, "
        f"torch {torch.__version__}; SD-1.5-shaped pipeline (random weights), batch 1 instance + 1 class image, "
        f"AdamW, gradient checkpointing, {'fp16 autocast' if args.device.startswith('cuda') else 'float32'}; "
        f"median of {args.steps - 1} steps after the first; memory: {memory}, weights included.",
        "",
        "| mode | trained parameters | peak memory (MiB) | s/step |",
        "|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    replace_section(REPORT, f"<!-- bench:dreambooth:{args.device} -->", section)
    print(f"written to {REPORT}")


if __name__ == "__main__":
    main()
