"""Starting and resuming an edit: Adam's state from the source, and a killed edit that ends at its total."""

from __future__ import annotations

import os
import re
import subprocess

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import checkpoint_step, newest_checkpoint
from toy_world.runs import TINY_NERFACTO_STEPS, find_run_dirs, kill_when, offline_env, run_tiny_edit, tiny_edit_command

PROMPT = "a photo of a polar bear"
TOTAL, SAVE_EVERY = 30, 5


def adam_steps(run_dir):
    optimizers = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["optimizers"]
    return {group: {int(state["step"]) for state in saved["state"].values()} for group, saved in optimizers.items()}


def test_adam_continues_from_the_source_or_starts_fresh_on_request(plain_source, tiny_sd, torch_home, tmp_path):
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd)]
    run_dir, result = run_tiny_edit("pds", plain_source, tmp_path / "continued", torch_home, 2, flags)
    assert f"Adam continues from the source run's state (its step count {TINY_NERFACTO_STEPS})" in result.stdout
    # The field's Adam steps every step (the proposal networks only when nerfacto's schedule updates them).
    assert adam_steps(plain_source)["fields"] == {TINY_NERFACTO_STEPS}
    assert adam_steps(run_dir)["fields"] == {TINY_NERFACTO_STEPS + 2}
    assert min(adam_steps(run_dir)["proposal_networks"]) >= min(adam_steps(plain_source)["proposal_networks"]) > 0

    run_dir, result = run_tiny_edit(
        "pds", plain_source, tmp_path / "fresh", torch_home, 2, [*flags, "--pipeline.optimizer-state", "fresh"]
    )
    assert "Adam continues" not in result.stdout and adam_steps(run_dir)["fields"] == {2}


def test_a_killed_edit_resumes_where_it_was_and_ends_at_its_total(plain_source, tiny_sd, torch_home, tmp_path):
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd)]
    flags += ["--steps-per-save", str(SAVE_EVERY), "--logging.steps-per-log", "1"]
    command = tiny_edit_command("pds", plain_source, tmp_path / "outputs", TOTAL, flags)
    process = subprocess.Popen(command, env=offline_env(torch_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kill_when(process, lambda: bool(list((tmp_path / "outputs").glob("*/pds/*/nerfstudio_models/step-*.ckpt"))), "the first checkpoint")
    (run_dir,) = find_run_dirs(tmp_path / "outputs", "pds")

    resumed, result = run_tiny_edit("pds", run_dir, tmp_path / "resumed", torch_home, TOTAL, flags)
    resumed_at = re.findall(rf"Resuming the edit at step (\d+) of {TOTAL}", result.stdout)
    assert len(resumed_at) == 1, result.stdout[-3000:]
    first = int(resumed_at[0])
    assert first % SAVE_EVERY == 1 and first < TOTAL  # the step after the last whole checkpoint
    assert checkpoint_step(newest_checkpoint(resumed / "nerfstudio_models")) == TOTAL - 1  # ends at the total
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = [event.step for event in EventAccumulator(str(resumed)).Reload().Scalars("Train Loss")]
    assert steps == list(range(first, TOTAL))


SITECUSTOMIZE = '''
import os
import pathlib
import time

import torch

_save, _saves = torch.save, []


def _save_that_hangs(obj, f, *args, **kwargs):
    """The second checkpoint save writes a few bytes, says so, and never finishes (a run killed while saving)."""
    if str(f).endswith(".ckpt"):
        _saves.append(f)
        if len(_saves) == 2:
            pathlib.Path(f).write_bytes(b"PK cut short")
            pathlib.Path(os.environ["PDS_TEST_SAVING"]).touch()
            time.sleep(3600)
    return _save(obj, f, *args, **kwargs)


torch.save = _save_that_hangs
'''


def test_an_edit_killed_while_saving_resumes_from_its_last_whole_checkpoint(plain_source, tiny_sd, torch_home, tmp_path):
    """kill -9 in the middle of the second save: the first checkpoint stays whole and in place, the cut-short one never
    appears beside it, and the resumed run starts after the first and ends at its total, leaving no staging folder."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = offline_env(torch_home)
    env.update(PYTHONPATH=os.pathsep.join([str(hook), env.get("PYTHONPATH", "")]), PDS_TEST_SAVING=str(tmp_path / "saving"))
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd), "--steps-per-save", str(SAVE_EVERY)]
    flags += ["--save-only-latest-checkpoint", "True"]
    command = tiny_edit_command("pds", plain_source, tmp_path / "outputs", TOTAL, flags)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kill_when(process, (tmp_path / "saving").exists, "the second save")
    (run_dir,) = find_run_dirs(tmp_path / "outputs", "pds")
    models = run_dir / "nerfstudio_models"
    assert [p.name for p in models.glob("step-*.ckpt")] == [f"step-{SAVE_EVERY:09d}.ckpt"]
    assert load_checkpoint(models / f"step-{SAVE_EVERY:09d}.ckpt")["step"] == SAVE_EVERY  # whole
    staged = list((run_dir / "nerfstudio_models.partial").glob("*.ckpt"))
    assert [p.read_bytes() for p in staged] == [b"PK cut short"]  # the save that was cut short, set aside

    resumed, result = run_tiny_edit("pds", run_dir, tmp_path / "resumed", torch_home, TOTAL, flags)
    assert f"Resuming the edit at step {SAVE_EVERY + 1} of {TOTAL}" in result.stdout
    assert checkpoint_step(newest_checkpoint(resumed / "nerfstudio_models")) == TOTAL - 1
    assert not (resumed / "nerfstudio_models.partial").exists()
