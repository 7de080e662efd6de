"""Peak memory and time of one pds editing step: nerfacto with one-graph (naive) or chunked rendering, and
splatfacto, side by side.

    python bench/render_memory.py                     # CPU: 64, 128, 256 px, tiny Stable Diffusion
    python bench/render_memory.py --modes chunked splatfacto      # nerfacto beside splatfacto
    python bench/render_memory.py --device cuda --sizes 512 --sd full   # GPU: SD-1.5-shaped UNet and VAE
    python bench/render_memory.py --modes chunked --views-per-step 1 2 4   # views a step: views/s and memory

Each (size, mode) runs in a fresh child process of this script, so that one measurement's allocations
cannot hide another's. A step is exactly what nerfstudio's trainer does with the pds pipeline:
``get_train_loss_dict`` (render, VAE-encode, guidance), backward, optimizer step. Peak memory is the
growth of the process's resident memory during the steps over what it held before them (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA). Results go to the terminal and to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.report import replace_section  # noqa: E402

NERFACTO_MODES = ("full-graph", "chunked")
MODES = (*NERFACTO_MODES, "splatfacto")
BENCH_GAUSSIANS = 4096
"""Gaussians of the splatfacto scene (random, in the synthetic scene's box). On a CPU they are rasterised by
pds_nerfstudio.scenes.splat_cpu (every pixel against every Gaussian), on CUDA by gsplat's kernels."""
# A mid-size nerfacto field: nerfacto's default field takes minutes per 256 px step on a 2-core CPU.
BENCH_FIELD = dict(
    num_levels=16,
    log2_hashmap_size=15,
    max_res=512,
    hidden_dim=32,
    hidden_dim_color=32,
    num_proposal_samples_per_ray=(32, 16),
    num_nerf_samples_per_ray=16,
)


class PeakRSS:
    """Resident set size of this process at entry (``start``) and the largest seen while active (``peak``)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._running = False

    def __enter__(self) -> "PeakRSS":
        self._running = True
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def build_full_size_stable_diffusion(path: Path) -> Path:
    """A Stable-Diffusion-1.5-shaped pipeline with random weights (same compute and memory as the real one)."""
    from toy_world.models import build_tiny_stable_diffusion, sd15_shaped_pipeline

    build_tiny_stable_diffusion(path)  # tokenizer and scheduler config
    sd15_shaped_pipeline(path).save_pretrained(path)
    return path


def prepare_assets(work: Path, sd: str) -> Dict[str, str]:
    from toy_world.models import build_tiny_stable_diffusion, seed_torch_home
    from toy_world.runs import make_synthetic_scene

    assets = {"scene": work / "scene", "sd": work / "sd", "torch_home": work / "torch_home"}
    make_synthetic_scene(assets["scene"], num_views=10, size=64)
    (build_full_size_stable_diffusion if sd == "full" else build_tiny_stable_diffusion)(assets["sd"])
    seed_torch_home(assets["torch_home"])
    return {k: str(v) for k, v in assets.items()}


PHASES = ("render", "vae", "unet", "backward", "optimizer")
"""The parts of a step that ``measure(..., phases=True)`` times: the forward render of the view, the VAE encoding of
the render, the UNet's noise predictions, the backward pass (through the VAE and, chunked, the render again with a
graph), and the optimizer's step."""


def measure(
    assets: Dict[str, str],
    size: int,
    mode: str,
    steps: int,
    device: str,
    chunk: int,
    views_per_step: int = 1,
    phases: bool = False,
) -> Dict[str, float]:
    """Run ``steps`` editing steps of ``views_per_step`` views in this process and return peak memory (MiB) and
    seconds per step (mean and median of the steps after the first). With ``phases``, also the median seconds of
    each of :data:`PHASES` in a step (each timed between device synchronisations, which the step's total then
    includes)."""
    os.environ["TORCH_HOME"] = assets["torch_home"]
    import torch
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.engine.optimizers import Optimizers

    from pds_nerfstudio.integration.datamanager import EditDataManagerConfig
    from pds_nerfstudio.methods.pds import PDSPipelineConfig
    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from pds_nerfstudio.scenes.models import EditNerfactoModelConfig, EditSplatfactoModelConfig

    torch.manual_seed(0)
    if mode == "splatfacto":
        model = EditSplatfactoModelConfig(random_init=True, num_random=BENCH_GAUSSIANS, random_scale=1.5)
    else:
        model = EditNerfactoModelConfig(**BENCH_FIELD)
    config = PDSPipelineConfig(
        datamanager=EditDataManagerConfig(data=Path(assets["scene"]), dataparser=NerfstudioDataParserConfig()),
        model=model,  # type: ignore[arg-type]
        guidance=GuidanceConfig(model_id=assets["sd"]),
        tgt_prompt="a photo of a polar bear",
        render_resolution=16,  # warm-up size: loads Stable Diffusion and fills caches before measuring
        render_mode="chunked" if mode == "splatfacto" else mode,
        ray_chunk_size=chunk,
        steps_per_log_image=10**9,
        views_per_step=views_per_step,
    )
    pipeline = config.setup(device=device, test_mode="val")
    optimizers = Optimizers(pipeline.representation.optimizers(), pipeline.get_param_groups())

    spent: Dict[str, float] = {}

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(name: str, call):
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            result = call(*args, **kwargs)
            sync()
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            return result

        return wrapper if phases else call

    pipeline.guidance_views = timed("render", pipeline.guidance_views)
    pipeline.guidance.encode_images = timed("vae", pipeline.guidance.encode_images)
    pipeline.guidance.predict_noise = timed("unet", pipeline.guidance.predict_noise)
    phase_times: Dict[str, List[float]] = {name: [] for name in PHASES}

    def step(i: int) -> None:
        spent.clear()
        optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(i)
        timed("backward", lambda: sum(loss_dict.values()).backward())()
        timed("optimizer", optimizers.optimizer_step_all)()
        for name in PHASES:
            phase_times[name].append(spent.get(name, 0.0))

    step(0)
    config.render_resolution = size
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    with PeakRSS() as rss:
        for i in range(1, steps + 1):
            start = time.perf_counter()
            step(i * pipeline.datamanager.config.change_view_every)  # a new view each step
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        total, peak = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_allocated() - base
    else:
        total, peak = rss.peak, rss.peak - rss.start
    kept = times[1:] if len(times) > 1 else times  # the first step at a new size also encodes the source view
    result = {"peak_mib": peak / 2**20, "total_mib": total / 2**20, "seconds_per_step": sum(kept) / len(kept),
              "median_seconds_per_step": median(kept), "timed_steps": len(kept)}  # fmt: skip
    if phases:
        result["phase_seconds"] = {name: median(values[-len(kept) :]) for name, values in phase_times.items()}
    return result


def median(values: List[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="short side of the rendered view, px")
    parser.add_argument("--steps", type=int, default=3, help="editing steps per measurement (the first is not timed)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--sd", choices=["tiny", "full"], default="tiny", help="tiny test model or SD-1.5-shaped")
    parser.add_argument("--chunk", type=int, default=4096, help="rays per chunk in chunked mode")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(NERFACTO_MODES),
                        help="what to measure: nerfacto rendered full-graph or chunked, or splatfacto")
    parser.add_argument("--views-per-step", type=int, nargs="+", default=[1],
                        help="views a step guides (--pipeline.views-per-step); several: a table of views/s against them")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one measurement, in a fresh process
        job = json.loads(args.child)
        print(json.dumps(measure(**job)))
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as work:
        assets = prepare_assets(Path(work), args.sd)
        rows = []
        for size in args.sizes:
            for views in args.views_per_step:
                result = {}
                for mode in args.modes:
                    job = dict(assets=assets, size=size, mode=mode, steps=args.steps, device=device, chunk=args.chunk,
                               views_per_step=views)  # fmt: skip
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, check=False
                    )
                    if out.returncode != 0:
                        raise SystemExit(f"measurement {size}px {mode} {views} views failed:\n{out.stderr[-3000:]}")
                    result[mode] = r = json.loads(out.stdout.strip().splitlines()[-1])
                    print(f"{size:4d} px  {mode:10s}  {views} views  {r['peak_mib']:9.1f} MiB during the step, "
                          f"{r['total_mib']:9.1f} MiB in all  {r['seconds_per_step']:7.2f} s/step", flush=True)
                rows.append((size, views, result))
    if len(args.views_per_step) > 1:
        write_views_report(args, device, rows)
    else:
        write_report(args, device, [(size, result) for size, _, result in rows])


def setup_line(args, device: str) -> str:
    import platform

    import torch

    return (
        f"on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"diffusion model in float32; nerfacto field {BENCH_FIELD}; chunk {args.chunk} rays; "
        f"splatfacto: {BENCH_GAUSSIANS} Gaussians, SH degree 3, rasterised by "
        f"{'gsplat' if device.startswith('cuda') else 'pds_nerfstudio.scenes.splat_cpu'}; {args.steps} steps each, first not timed."
    )


def section_head(title: str, args, device: str) -> List[str]:
    """A table's heading, the command that made it and the setup it ran on."""
    return [
        f"### {title}, {device}, {'SD-1.5-shaped' if args.sd == 'full' else 'tiny'} Stable Diffusion",
        "",
        f"`python bench/render_memory.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        setup_line(args, device),
        "",
    ]


def write_views_report(args, device: str, rows: List) -> None:
    """Views per second and the step's peak memory against views per step, one row per (size, mode, views)."""
    lines = section_head("pds step against views per step", args, device) + [
        "| size (px) | mode | views per step | step peak (MiB) | in all (MiB) | s/step | views/s | views/s against 1 view a step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    single = {(size, mode): result[mode] for size, views, result in rows for mode in result if views == 1}
    for size, views, result in rows:
        for mode, r in result.items():
            rate = views / r["seconds_per_step"]
            base = single.get((size, mode))
            against = f"{rate * base['seconds_per_step']:.2f}" if base else "-"
            lines.append(
                f"| {size} | {mode} | {views} | {r['peak_mib']:.0f} | {r['total_mib']:.0f} | {r['seconds_per_step']:.2f} | "
                f"{rate:.2f} | {against} |"
            )
    section = "\n".join(lines) + "\n"
    print("\n" + section)
    replace_section(args.output, f"<!-- bench:{device}:{args.sd}:views -->", section)


def write_report(args, device: str, rows: List) -> None:
    modes = [mode for mode in MODES if mode in args.modes]
    both = all(mode in modes for mode in NERFACTO_MODES)  # nerfacto's two renderings: their ratios too
    names = {"full-graph": "one-graph", "chunked": "chunked", "splatfacto": "splatfacto"}
    title = "pds step" if modes != ["splatfacto"] else "pds step, splatfacto"
    header = ["size (px)"]
    header += [f"step peak {names[m]} (MiB)" for m in modes] + (["chunked / one-graph memory"] if both else [])
    header += [f"in all {names[m]} (MiB)" for m in modes]
    header += [f"s/step {names[m]}" for m in modes] + (["chunked / one-graph time"] if both else [])
    lines = section_head(title, args, device) + [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def ratio(result: Dict, key: str) -> List[str]:
        if not both:
            return []
        if result["full-graph"][key] <= 0:
            return ["-"]
        return [f"{result['chunked'][key] / result['full-graph'][key]:.2f}"]

    for size, result in rows:
        cells = [str(size)]
        cells += [format(result[m]["peak_mib"], ".0f") for m in modes] + ratio(result, "peak_mib")
        cells += [format(result[m]["total_mib"], ".0f") for m in modes]
        cells += [format(result[m]["seconds_per_step"], ".2f") for m in modes] + ratio(result, "seconds_per_step")
        lines.append("| " + " | ".join(cells) + " |")
    section = "\n".join(lines) + "\n"
    print("\n" + section)
    marker = f"<!-- bench:{device}:{args.sd}{'' if modes == list(NERFACTO_MODES) else ':' + '+'.join(modes)} -->"
    replace_section(args.output, marker, section)  # this device's and these modes' previous table


if __name__ == "__main__":
    main()
