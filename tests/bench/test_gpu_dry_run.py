"""bench/gpu/run.py on the CPU at tiny sizes: the same file the GPU runs, with only its size flags changed, so that a
missing import or a typo never costs GPU minutes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from toy_world.runs import COMMAND_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "bench" / "gpu"
CUDA_ONLY = {"gsplat-compile", "gsplat-vs-cpu"}
DRY_RUN_FLAGS = ["--device", "cpu", "--size", "32", "--steps", "3", "--sd", "tiny", "--precision-size", "32",
                 "--dreambooth-resolution", "32", "--dreambooth-steps", "2", "--gaussians", "64", "--splat-size", "32"]  # fmt: skip
NOT_NEEDED_THERE = {
    "pds-nerfstudio": "the repository itself, on the path",
    "httpx2": "huggingface_hub 2's client here; the GPU image's huggingface_hub 1.33 uses httpx",
    "httpcore2": "the same",
    "truststore": "imported by httpcore2",
    "PySocks": "urllib3's optional SOCKS support",
    "defusedxml": "Pillow's optional safe XML parser",
    "jaraco.context": "setuptools' vendored copies there",
    "jaraco.functools": "setuptools' vendored copies there",
    "jaraco.text": "setuptools' vendored copies there",
    "backports.tarfile": "setuptools' vendored copies there",
    "more-itertools": "setuptools' vendored copies there",
}
"""Distributions the dry run imports here that the GPU machine needs neither in its image nor carried, and why."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: Path) -> set:
    words = [w for line in path.read_text().splitlines() if not line.lstrip().startswith("#") for w in line.split()]
    return {canonical(w.split("==")[0]) for w in words}


def test_the_gpu_script_runs_every_stage_at_tiny_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(GPU / "run.py"), "--out", str(out), *DRY_RUN_FLAGS, "--cap-scale", "5"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["environment", "assets", "nerfacto-chunked", "nerfacto-full-graph", "gsplat-compile",
                             "splatfacto", "gsplat-vs-cpu", "precision", "dreambooth-lora", "estimate"]  # fmt: skip
    for name, entry in results.items():
        if name in CUDA_ONLY:
            assert (entry["status"], entry.get("reason")) == ("skipped", "no CUDA"), (name, entry)
        else:
            assert entry["status"] == "ok", (name, entry.get("error", entry))

    for name in ("nerfacto-chunked", "nerfacto-full-graph", "splatfacto"):
        step = results[name]["result"]
        assert step["timed_steps"] == 2 and step["median_seconds_per_step"] > 0 and step["peak_mib"] > 0
        parts = step["phase_seconds"]
        assert set(parts) == {"render", "vae", "unet", "backward", "optimizer"} and all(v > 0 for v in parts.values())
        assert sum(parts.values()) <= 1.05 * step["seconds_per_step"] * 2  # the parts lie within the steps
    assert results["precision"]["result"]["float32"]["worst_cosine"] > 0.9999
    assert results["dreambooth-lora"]["result"]["trained_parameters"] > 0
    minutes = results["estimate"]["result"]["pds (nerfacto)"]
    assert (
        minutes["steps"] == 30000
        and minutes["seconds_per_step"] == results["nerfacto-chunked"]["result"]["median_seconds_per_step"]
    )
    summary = (out / "summary.md").read_text()
    assert "| gsplat-compile | skipped |" in summary and "| estimate | ok |" in summary

    imported = {canonical(d) for entry in results.values() for d in entry.get("distributions", [])}
    there = listed(GPU / "image_packages.txt") | listed(GPU / "wheels.txt") | {canonical(n) for n in NOT_NEEDED_THERE}
    assert "nerfstudio" in imported and "diffusers" in imported
    assert imported <= there, f"imported but neither on the GPU image nor carried: {sorted(imported - there)}"


def test_the_carried_wheels_are_the_tested_versions():
    """Each wheel is constraints.txt's version, except where wheels.txt says why not."""
    pinned = {
        canonical(n): v for n, v in re.findall(r"^([\w.-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
    }
    text = (GPU / "wheels.txt").read_text()
    for name, version in re.findall(r"^([\w.-]+)==(\S+)", text, re.M):
        if pinned.get(canonical(name)) != version:
            assert f"{name} {pinned[canonical(name)]}" in text, (
                f"{name}=={version} differs from constraints.txt without a reason"
            )
