"""The tiny sources every edit test starts from are the same at every run: the same command trains the same
checkpoint (the outcome thresholds rest on it). nerfacto's ray-sampling process is seeded by
:mod:`toy_world.reproducible_ns_train`; splatfacto's datamanager draws its views from a fixed seed."""

from __future__ import annotations

from pathlib import Path

import torch

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world.runs import train_tiny_nerfacto, train_tiny_splatfacto


def scene_state(run_dir: Path):
    """The scene's tensors of a run's newest checkpoint (nerfacto's LPIPS copy left out: not the scene)."""
    saved = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["pipeline"]
    return {key: value for key, value in saved.items() if key.startswith("_model.") and ".lpips." not in key}


def assert_same_trained_scene(first: Path, second: Path) -> None:
    a, b = scene_state(first), scene_state(second)
    assert sorted(a) == sorted(b) and len(a) > 5
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, differing


def test_a_tiny_nerfacto_source_is_the_same_at_every_run(source_run, synthetic_scene, torch_home, tmp_path):
    again = train_tiny_nerfacto(synthetic_scene, tmp_path / "again", torch_home)
    assert_same_trained_scene(source_run, again)


def test_a_tiny_splatfacto_source_is_the_same_at_every_run(synthetic_scene, torch_home, tmp_path):
    first = train_tiny_splatfacto(synthetic_scene, tmp_path / "first", torch_home)
    second = train_tiny_splatfacto(synthetic_scene, tmp_path / "second", torch_home)
    assert_same_trained_scene(first, second)
