"""Runs written by version 0.1, before the layer layout (tests/fixtures/runs_v0_1.tar.xz: a pds, a splatfacto pds and a
stopped pnr run, their config.yml files naming the flat module paths), open in ns-viewer, ns-export and pds-eval, and
resume. Their configs also lack any field added since: nerfstudio rebuilds a config from YAML without its __init__, so
every later field must load from them with a plain default."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world.models import build_tiny_stable_diffusion
from toy_world.runs import (
    check_run_opens_without_diffusion_model,
    run_pds_eval,
    run_tiny_edit,
)

ARCHIVE = Path(__file__).resolve().parents[1] / "fixtures" / "runs_v0_1.tar.xz"
RUNS = {"pds": "edits/pds/scene/pds", "splat-pds": "edits/splat-pds/scene/pds", "pnr": "edits/pnr/scene/pnr"}
"""Each old edit's method folder, relative to the archive's folder (where its relative paths hold)."""
STEPS = {"pds": 2, "splat-pds": 2, "pnr": 3}
"""The steps each old run had done."""
OLD_CLASSES = {
    "pds": ("pds_nerfstudio.trainer_config.EditTrainerConfig", "pds_nerfstudio.pipeline.PDSPipelineConfig",
            "pds_nerfstudio.model.EditNerfactoModelConfig", "pds_nerfstudio.guidance.GuidanceConfig",
            "pds_nerfstudio.datamanager.EditDataManagerConfig"),
    "splat-pds": ("pds_nerfstudio.pipeline.PDSPipeline", "pds_nerfstudio.model.EditSplatfactoModelConfig"),
    "pnr": ("pnr_nerfstudio.trainer_config.PnRTrainerConfig", "pnr_nerfstudio.pipeline.PnRPipelineConfig"),
}  # fmt: skip


@pytest.fixture(scope="module")
def old_runs(tmp_path_factory) -> Path:
    """The archive unpacked, with the tiny Stable Diffusion built again at ``sd/`` (seeded: the model the runs used)."""
    folder = tmp_path_factory.mktemp("old-runs")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(folder, filter="data")
    root = folder / "runs_v0_1"
    build_tiny_stable_diffusion(root / "sd")
    return root


def old_run(root: Path, name: str) -> Path:
    """The one run of ``name``, relative to ``root``."""
    (run_dir,) = (root / RUNS[name]).iterdir()
    return run_dir.relative_to(root)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_archive_names_the_flat_module_paths(old_runs, name):
    text = (old_runs / old_run(old_runs, name) / "config.yml").read_text()
    for path in OLD_CLASSES[name]:
        assert path in text
    assert "pds_nerfstudio.integration" not in text and "pds_nerfstudio.methods" not in text


@pytest.mark.parametrize("name, export", [("pds", "pointcloud"), ("splat-pds", "gaussian-splat"), ("pnr", "pointcloud")])
def test_an_old_run_opens_in_ns_viewer_and_ns_export(old_runs, torch_home, tmp_path, name, export):
    check_run_opens_without_diffusion_model(old_run(old_runs, name), torch_home, tmp_path, export, render=False, cwd=old_runs)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_pds_eval_measures_an_old_run(old_runs, torch_home, tiny_clip, tmp_path, name):
    run_dir = old_run(old_runs, name)
    flags = ["--clip-models", str(tiny_clip), "--lpips-nets", "alex"]
    metrics, _ = run_pds_eval(run_dir, tmp_path / "evaluation", torch_home, flags, cwd=old_runs)
    assert metrics["edit_run"] == str(run_dir) and metrics["views"]["count"] == 9
    assert metrics["source_checkpoint"].startswith("outputs/scene/")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_an_old_run_resumes_where_it_stopped(old_runs, torch_home, tmp_path, name):
    done, total = STEPS[name], STEPS[name] + 1
    method = "pnr" if name == "pnr" else "pds"
    resumed, result = run_tiny_edit(method, old_runs / RUNS[name], tmp_path / "resumed", torch_home, total, cwd=old_runs)
    assert f"Resuming the edit at step {done} of {total}" in result.stdout + result.stderr
    assert newest_checkpoint(resumed / "nerfstudio_models").name == f"step-{total - 1:09d}.ckpt"
