"""Every figure that only a GPU can give, in one command: a real-size edit's memory and time, gsplat's kernels against
the CPU rasteriser, the precision of the gradient, DreamBooth at 512 px, and the time of each method's default edit.

    python bench/gpu/run.py --out gpu-results                       # on a CUDA machine with the package installed
    python bench/gpu/run.py --out gpu-results --wheels .whl         # where nerfstudio and diffusers are missing:
                                                                    #   the wheels of bench/gpu/fetch_wheels.sh
    python bench/gpu/run.py --out /tmp/dry --device cpu --size 32 --steps 3 --sd tiny \\
        --precision-size 32 --dreambooth-resolution 32                # the dry run the tests take on a CPU

Each stage runs in a process of its own under its own time cap, built on the benchmarks beside this folder
(``bench/render_memory.py``, ``bench/precision.py``, ``bench/dreambooth.py``, ``bench/splat_cpu_vs_gsplat.py``),
and its result is written to ``--out`` as soon as it ends (``results.json``, ``summary.md``, ``log.txt``), so a run
that is cut off still leaves what it measured. A stage that needs CUDA is skipped on a machine without it, with
that reason; any other failure is recorded with the end of its error output, and the next stage runs.

Stages, in order:

1. ``environment``: versions, the device, the wheels installed.
2. ``assets``: the toy-world scene and a Stable-Diffusion-1.5-shaped pipeline built from config (random weights time
   and weigh the same as the real ones) saved with ``save_pretrained``.
3. ``nerfacto-chunked`` and ``nerfacto-full-graph``: the ``pds`` step at ``--size`` px on nerfacto: peak
   ``torch.cuda.max_memory_allocated`` during the steps, the median step time over ``--steps`` steps after a warm-up
   step, and the median of each part of a step (render, VAE, UNet, backward, optimizer).
4. ``gsplat-compile``: gsplat builds its CUDA kernels on first use; capped apart, its error recorded if it fails.
5. ``splatfacto``: the same ``pds`` step on splatfacto's Gaussians, rasterised by gsplat (the CPU rasteriser on a CPU).
6. ``gsplat-vs-cpu``: gsplat's kernels against ``pds_nerfstudio.scenes.splat_cpu`` on one scene (images and gradients).
7. ``precision``: the gradient that reaches the image in float32 with TF32 matrix products off and on, and with a
   float16 UNet, against float32 without TF32.
8. ``dreambooth-lora``: ``pds-dreambooth --mode lora`` steps at ``--dreambooth-resolution`` (peak memory, step time).
9. ``estimate``: each method's default edit, its number of steps times the measured step time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

NO_CUDA = "no CUDA"
"""The one reason a stage may be skipped for (the dry run on a CPU fails on any other)."""

STAGES: Dict[str, Callable[[argparse.Namespace, Dict[str, Any]], Dict[str, Any]]] = {}
CAPS = {"environment": 60, "assets": 180, "nerfacto-chunked": 120, "nerfacto-full-graph": 120, "gsplat-compile": 240,
        "splatfacto": 120, "gsplat-vs-cpu": 120, "precision": 120, "dreambooth-lora": 120, "estimate": 30}  # fmt: skip
"""Each stage's time cap in seconds on a GPU (about 5 minutes in all on an H100 when none reaches its cap)."""


class Skipped(Exception):
    """A stage that cannot run here, and why."""


def stage(name: str):
    def register(function):
        STAGES[name] = function
        return function

    return register


def cuda_or_skip(args: argparse.Namespace) -> None:
    if not args.device.startswith("cuda"):
        raise Skipped(NO_CUDA)


@stage("environment")
def environment(args, results) -> Dict[str, Any]:
    import importlib.metadata as metadata

    import torch

    versions = {}
    for name in ("torch", "nerfstudio", "diffusers", "transformers", "gsplat", "numpy", "peft"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {"versions": versions, "python": sys.version.split()[0], "device": args.device}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


@stage("assets")
def assets(args, results) -> Dict[str, Any]:
    from bench.render_memory import prepare_assets

    return prepare_assets(Path(args.work), args.sd)


def pds_step(args, results, mode: str) -> Dict[str, Any]:
    from bench.render_memory import measure

    return measure(results["assets"], args.size, mode, args.steps, args.device, args.chunk, phases=True)


@stage("nerfacto-chunked")
def nerfacto_chunked(args, results) -> Dict[str, Any]:
    return pds_step(args, results, "chunked")


@stage("nerfacto-full-graph")
def nerfacto_full_graph(args, results) -> Dict[str, Any]:
    return pds_step(args, results, "full-graph")


@stage("gsplat-compile")
def gsplat_compile(args, results) -> Dict[str, Any]:
    cuda_or_skip(args)
    import torch
    from gsplat import rasterization

    from bench.splat_cpu_vs_gsplat import render, scene

    start = time.perf_counter()
    image, _ = render(rasterization, scene(64, args.device), 32)
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "finite": bool(torch.isfinite(image).all())}


@stage("splatfacto")
def splatfacto(args, results) -> Dict[str, Any]:
    if args.device.startswith("cuda") and results.get("gsplat-compile", {}).get("status") != "ok":
        raise RuntimeError("gsplat's kernels did not build (stage gsplat-compile)")
    return pds_step(args, results, "splatfacto")


@stage("gsplat-vs-cpu")
def gsplat_vs_cpu(args, results) -> Dict[str, Any]:
    cuda_or_skip(args)
    from bench.splat_cpu_vs_gsplat import compare

    return {name: {"max_abs_difference": diff, "largest_gsplat_value": top} for name, (diff, top) in
            compare(args.gaussians, args.splat_size).items()}  # fmt: skip


@stage("precision")
def precision(args, results) -> Dict[str, Any]:
    import torch

    from bench.precision import compare, measure
    from pds_nerfstudio.priors.loading import load_stable_diffusion

    pipe = load_stable_diffusion(results["assets"]["sd"], torch.float32)  # the stage assets' pipeline
    cuda = args.device.startswith("cuda")
    runs = {}
    for name, dtype, tf32 in (
        ("float32", "float32", False),
        ("float32-tf32", "float32", True),
        ("float16-unet", "float16", True),
    ):
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        runs[name] = measure(pipe, dtype, args.precision_size, args.device, repeats=3)
    reference = runs["float32"]["grads"]
    return {
        name: {"worst_cosine": min(compare(g, r)["cosine"] for g, r in zip(run["grads"], reference)),
               "seconds": run["seconds"], "peak_mib": run["peak_mib"], "tf32": name != "float32" and cuda}
        for name, run in runs.items()
    }  # fmt: skip


@stage("dreambooth-lora")
def dreambooth_lora(args, results) -> Dict[str, Any]:
    from bench.dreambooth import measure

    return measure(
        "lora", args.dreambooth_resolution, args.dreambooth_steps, args.device, model_id=results["assets"]["sd"]
    )


@stage("estimate")
def estimate(args, results) -> Dict[str, Any]:
    """Each method's default edit: its default number of steps times the measured median step time."""
    from pnr_nerfstudio.pipeline import PnRPipelineConfig

    phases = PnRPipelineConfig().phases
    plans = {
        "pds (nerfacto)": ("nerfacto-chunked", 30000),
        "pds (splatfacto)": ("splatfacto", 30000),
        "pds-refine (nerfacto; step taken as a pds step)": ("nerfacto-chunked", 15000),
        "pnr (nerfacto; step taken as a pds step)": ("nerfacto-chunked", phases.total_steps),
    }
    out = {}
    for method, (source, steps) in plans.items():
        measured = results.get(source, {})
        if measured.get("status") == "ok":
            seconds = measured["result"]["median_seconds_per_step"]
            out[method] = {"steps": steps, "seconds_per_step": seconds, "minutes": steps * seconds / 60}
    if not out:
        raise RuntimeError("no step time was measured")
    return out


def imported_distributions() -> List[str]:
    """The installed distributions this process imported from (what the GPU machine must have or be carried)."""
    import importlib.metadata as metadata

    owners = metadata.packages_distributions()
    tops = {name.split(".")[0] for name in list(sys.modules)}
    return sorted({dist for top in tops for dist in owners.get(top, [])})


def install_wheels(folder: Path, target: Path) -> List[str]:
    """The carried wheels, installed offline into ``target`` (put first on the stages' PYTHONPATH)."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", str(target), *wheels],
            check=True,
        )  # fmt: skip
    return [Path(w).name for w in wheels]


def run_stage(name: str, args: argparse.Namespace, results: Dict[str, Any], env: Dict[str, str]) -> Dict[str, Any]:
    """One stage in a process of its own, under its cap: {"status": ok | skipped | failed | timeout, ...}."""
    cap = args.cap_scale * CAPS[name]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(results, handle)
    command = [sys.executable, __file__, "--stage", name, "--results", handle.name, *args.forwarded]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=cap, cwd=ROOT)
    except subprocess.TimeoutExpired as error:
        output = (error.stderr or b"")[-2000:]
        return {
            "status": "timeout",
            "seconds": cap,
            "error": output.decode(errors="replace") if isinstance(output, bytes) else output,
        }
    finally:
        os.unlink(handle.name)
    seconds = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("STAGE ")]
    if done.returncode == 0 and lines:
        return {**json.loads(lines[-1][len("STAGE ") :]), "seconds": seconds}
    return {"status": "failed", "seconds": seconds, "error": (done.stderr or done.stdout)[-3000:]}


def summary(results: Dict[str, Any]) -> str:
    lines = ["# GPU benchmark results", "", "| stage | status | seconds | result |", "|---|---|---|---|"]
    for name, entry in results.items():
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', 0):.1f} | {outcome(entry)[:300]} |")
    return "\n".join(lines) + "\n"


def outcome(entry: Dict[str, Any]) -> str:
    """A stage's result in one line: why it was skipped, the last line of its error, or its figures."""
    if entry.get("reason"):
        return entry["reason"]
    if entry.get("error", "").strip():
        return entry["error"].strip().splitlines()[-1]
    return json.dumps(entry.get("result"))


MEASUREMENT_FLAGS = ("size", "steps", "sd", "chunk", "gaussians", "splat_size", "precision_size", "dreambooth_resolution",
                     "dreambooth_steps")  # fmt: skip
"""The flags a stage reads, handed on from the command line as parsed (with their defaults)."""


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where results.json, summary.md and log.txt go")
    parser.add_argument(
        "--wheels", type=Path, help="a folder of wheels to install offline first (bench/gpu/fetch_wheels.sh)"
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--size", type=int, default=512, help="short side of the guided view, px (official: 512)")
    parser.add_argument("--steps", type=int, default=21, help="steps a pds measurement takes (the first is not timed)")
    parser.add_argument(
        "--sd", choices=["tiny", "full"], default="full", help="SD-1.5-shaped (full) or the tiny test model"
    )
    parser.add_argument("--chunk", type=int, default=4096, help="rays per chunk in chunked rendering")
    parser.add_argument("--gaussians", type=int, default=2000, help="Gaussians of the gsplat-against-CPU scene")
    parser.add_argument("--splat-size", type=int, default=128, help="image side of the gsplat-against-CPU scene, px")
    parser.add_argument("--precision-size", type=int, default=512)
    parser.add_argument("--dreambooth-resolution", type=int, default=512)
    parser.add_argument("--dreambooth-steps", type=int, default=5)
    parser.add_argument("--cap-scale", type=float, default=1.0, help="multiplies every stage's time cap")
    parser.add_argument("--only", nargs="+", choices=list(STAGES), help="run these stages (and those they need)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.stage:  # one stage, in this process
        results = json.loads(Path(args.results).read_text())
        results = {k: v.get("result", {}) if k == "assets" else v for k, v in results.items()}
        try:
            entry = {"status": "ok", "result": STAGES[args.stage](args, results)}
        except Skipped as reason:
            entry = {"status": "skipped", "reason": str(reason)}
        entry["distributions"] = imported_distributions()
        print("STAGE " + json.dumps(entry, default=str), flush=True)
        return

    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pds-gpu-bench-"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    installed: List[str] = []
    if args.wheels:
        installed = install_wheels(args.wheels, work / "site")
        env["PYTHONPATH"] = os.pathsep.join([str(work / "site"), str(ROOT), env.get("PYTHONPATH", "")])
    env["TORCH_HOME"] = str(work / "assets" / "torch_home")
    measurement = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in MEASUREMENT_FLAGS]
    args.forwarded = [*measurement, "--work", str(work / "assets"), "--device", args.device]
    (work / "assets").mkdir()
    results: Dict[str, Any] = {}
    log = (args.out / "log.txt").open("a")
    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}; wheels: {installed}\n")
    for name in STAGES:
        if args.only and name not in args.only and name not in ("environment", "assets"):
            continue
        entry = run_stage(name, args, results, env)
        results[name] = entry
        log.write(f"{name}: {entry['status']} in {entry.get('seconds', 0):.1f} s\n")
        log.flush()
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (args.out / "summary.md").write_text(summary(results))
        print(f"{name}: {entry['status']} ({entry.get('seconds', 0):.1f} s)", flush=True)
        if name == "assets" and entry["status"] != "ok":
            break  # every measurement needs them
    log.close()


if __name__ == "__main__":
    main()
