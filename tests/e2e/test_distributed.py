"""Several views a step and several processes (torch.distributed, gloo): the same update, one set of outputs.

A real process group: ``torchrun --standalone --nproc-per-node 2 -m pds_nerfstudio.cli.torchrun pds ...``, two CPU
processes with the gloo backend, against ``ns-train pds ... --pipeline.views-per-step 2`` in one process.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import List

import pytest
import torch

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world.runs import logged, run_tiny_edit, views_of_each_step

PROMPT = "a photo of a polar bear"
TRAIN_VIEWS = 9  # the synthetic scene's 10 views, 9 of them for training


def field_state(checkpoint_dir: Path) -> dict:
    state = load_checkpoint(newest_checkpoint(checkpoint_dir))["pipeline"]
    return {key: value for key, value in state.items() if key.startswith("_model.field.")}


def test_two_processes_with_one_view_each_make_the_update_of_one_process_with_both_then_resume(
    plain_source, tiny_sd, torch_home, tmp_path
):
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd), "--logging.steps-per-log", "1"]
    # The full rate at step 0 (the warmup's is 1e-8), and Adam's eps 1e-4 instead of the release's 1e-15: with 1e-15
    # Adam divides by the source's sqrt(v), down to 1e-9 on hash entries the source hardly trained, and turns the float32
    # round-off of a batch of two in the VAE and UNet into update differences of up to 2.2e-6 there (8 of 32768
    # entries); with 1e-4 the updates (up to 7e-3) agree to 5e-8, a few float32 steps of the parameters.
    flags += ["--optimizers.fields.scheduler.warmup-steps", "0", "--optimizers.fields.optimizer.eps", "1e-4"]
    one, _ = run_tiny_edit("pds", plain_source, tmp_path / "one", torch_home, 1, [*flags, "--pipeline.views-per-step", "2"])
    two, _ = run_tiny_edit("pds", plain_source, tmp_path / "two", torch_home, 1, flags, processes=2)

    # The views: the first is the one a one-view step edits, the second another; rank 0 logged its own, the first.
    first = random.Random(0).randrange(TRAIN_VIEWS)
    # (Read from the events: a view_2 column in rank 0's events would show as a second view of step 0, as in one's.)
    (one_views,) = views_of_each_step(one).values()
    assert len(one_views) == 2 and one_views[0] == first and one_views[1] != first
    assert views_of_each_step(two) == {0: (first,)}

    # The update of every field tensor: the same to 1e-6, and every weight of the field moved.
    source = field_state(plain_source / "nerfstudio_models")
    after_one, after_two = field_state(one / "nerfstudio_models"), field_state(two / "nerfstudio_models")
    assert sorted(after_one) == sorted(after_two) == sorted(source)
    weights = [key for key in source if key.endswith(("weight", "bias", "hash_table"))]
    assert len(weights) == 11
    for key, before in source.items():
        update_one, update_two = after_one[key] - before, after_two[key] - before
        assert (update_one - update_two).abs().max() <= 1e-6, f"{key}: {(update_one - update_two).abs().max():.3g}"
        assert key not in weights or update_one.abs().max() > 5e-4, f"{key} did not move"

    # One set of outputs: rank 0's checkpoint, events and renders in the one run folder.
    assert [p.name for p in (two / "nerfstudio_models").iterdir()] == ["step-000000000.ckpt"]
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    assert len(list((two / "renders").glob("*.png"))) == len(list((one / "renders").glob("*.png"))) > 0

    # Resumed under torchrun: it continues at step 1, ends at its total, and again writes one set of outputs.
    resumed, result = run_tiny_edit("pds", two.parent, tmp_path / "two", torch_home, 2, ["--logging.steps-per-log", "1"],
                                    processes=2)  # fmt: skip
    assert "Resuming the edit at step 1 of 2" in result.stdout
    assert [p.name for p in (resumed / "nerfstudio_models").iterdir()] == ["step-000000001.ckpt"]
    assert sorted(logged(resumed, "view")) == [1] and len(list(resumed.glob("events.out.tfevents.*"))) == 1


@pytest.fixture
def train_argv(source_run, tiny_sd, tmp_path) -> List[str]:
    return [
        "pds", "--load-dir", str(source_run), "--output-dir", str(tmp_path / "out"), "--machine.device-type", "cpu",
        "--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd),
    ]  # fmt: skip


def one_line_error(exit_info) -> str:
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--pipeline.views-per-step", "0"], "--pipeline.views-per-step 0: need 1 or more views a step"),
        (["--pipeline.views-per-step", "10"], "asks for 10 different views a step; the scene has 9 training views"),
        (["--machine.num-devices", "2"], "torchrun --nproc-per-node 2 -m pds_nerfstudio.cli.torchrun"),
    ],
)
def test_bad_view_and_device_counts_stop_with_one_line(flags, fragment, train_argv, tmp_path, monkeypatch):
    from nerfstudio.scripts import train

    monkeypatch.setattr(sys, "argv", ["ns-train", *train_argv, *flags])
    with pytest.raises(SystemExit) as exit_info:
        train.entrypoint()
    assert fragment in one_line_error(exit_info)
    assert not (tmp_path / "out").exists()


TORCHRUN_OF_TWO = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--pipeline.views-per-step", "5"], "--pipeline.views-per-step 5 on each of 2 devices asks for 10 different views"),
        (["--pipeline.guidance.device", "cpu"], "--pipeline.guidance.device cpu with 2 devices"),
    ],
)
def test_what_two_processes_cannot_do_stops_with_one_line_before_the_process_group(
    flags, fragment, train_argv, tmp_path, monkeypatch
):
    from pds_nerfstudio.cli import torchrun

    monkeypatch.setattr(sys, "argv", ["torchrun"])
    for name, value in TORCHRUN_OF_TWO.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        torchrun.main([*train_argv, *flags])
    assert fragment in one_line_error(exit_info)
    assert not (tmp_path / "out").exists() and not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    "prefix, environment, fragment",
    [
        ([], {}, "no torchrun environment"),
        (["--backend", "nccl"], TORCHRUN_OF_TWO, "the nccl backend is not available here"),
        (["--backend", "mpi"], TORCHRUN_OF_TWO, "--backend mpi: choose one of gloo, nccl"),
    ],
)  # fmt: skip
def test_the_torchrun_entry_point_stops_with_one_line_outside_torchrun_or_on_a_missing_backend(
    prefix, environment, fragment, train_argv, tmp_path, monkeypatch
):
    from pds_nerfstudio.cli import torchrun

    monkeypatch.setattr(sys, "argv", ["torchrun"])
    for name in torchrun.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        torchrun.main([*prefix, *train_argv])
    assert fragment in one_line_error(exit_info)
    assert not (tmp_path / "out").exists()
