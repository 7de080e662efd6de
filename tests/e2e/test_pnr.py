"""`ns-train pnr` end to end through the real CLI, on the synthetic scene with the tiny Stable Diffusion.

One edit is stopped inside its edit phase and resumed to the end: the first run selects eta and
perturbs the field, the resumed one keeps eta, does not perturb again and runs the revise steps.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from pnr_nerfstudio.perturbation import select_eta
from toy_world.runs import (
    check_run_opens_without_diffusion_model,
    file_digests,
    logged,
    run_tiny_edit,
    views_of_each_step,
)

PROMPT = "a photo of a polar bear"
SELECTION_STEPS, WINDOW, EDIT_STEPS, REVISE_STEPS = 4, 2, 3, 2
STOP_AT = SELECTION_STEPS + 2  # the first run stops after two of its three edit steps
PHASE_FLAGS = [
    "--pipeline.protocol", "objects",
    "--pipeline.eta-selection-steps", str(SELECTION_STEPS),
    "--pipeline.perturbation.loss-window", str(WINDOW),
    "--pipeline.edit-steps", str(EDIT_STEPS),
    "--pipeline.revise-steps", str(REVISE_STEPS),
    "--pipeline.interlevel-num-rays", "64",
    "--pipeline.guidance.num-inference-steps", "50",
    "--logging.steps-per-log", "1",
    # the released objects configs' resolution milestone, counted in the run's steps (eta selection included): the
    # selection steps and the first edit step render at 8 px, then at the guidance resolution (16)
    "--pipeline.coarse-resolution", "8",
    "--pipeline.coarse-steps", str(SELECTION_STEPS + 1),
]  # fmt: skip


@dataclass
class PnRRuns:
    """The stopped run and its resumed continuation, with what the test knew before they started."""

    work: Path
    source_run: Path
    model_dir: Path
    digests_before: Dict[Path, str]
    stopped_dir: Path
    stopped: subprocess.CompletedProcess
    resumed_dir: Path
    resumed: subprocess.CompletedProcess

    def checkpoint(self, run_dir: Path, step: int) -> Dict[str, torch.Tensor]:
        return load_checkpoint(run_dir / "nerfstudio_models" / f"step-{step:09d}.ckpt")["pipeline"]

    def source(self) -> Dict[str, torch.Tensor]:
        return load_checkpoint(newest_checkpoint(self.source_run / "nerfstudio_models"))["pipeline"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, source_run, synthetic_scene, tiny_sd, torch_home) -> PnRRuns:
    work = tmp_path_factory.mktemp("pnr")
    model_dir = work / "sd"  # a copy the export test deletes, to show exports never load it
    shutil.copytree(tiny_sd, model_dir)
    digests = file_digests(synthetic_scene, source_run)
    stopped_dir, stopped = run_tiny_edit(
        "pnr",
        source_run.parent.parent,  # the experiment folder: outputs/<scene>
        work / "outputs",
        torch_home,
        STOP_AT,
        ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(model_dir), *PHASE_FLAGS,
         "--steps-per-save", "1", "--save-only-latest-checkpoint", "False"],  # a checkpoint at every step
        cwd=work,
    )  # fmt: skip
    # Resume it to the end, with a checkpoint at every step to see the resumed run's first step.
    resumed_dir, resumed = run_tiny_edit(
        "pnr",
        stopped_dir,
        work / "resumed",
        torch_home,
        SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS,  # the edit's total
        ["--steps-per-save", "1", "--save-only-latest-checkpoint", "False", "--logging.steps-per-log", "1"],
        cwd=work,
    )
    return PnRRuns(work, source_run, model_dir, digests, stopped_dir, stopped, resumed_dir, resumed)


def console_text(stdout: str) -> str:
    """nerfstudio's console output as one line: without rich's times and source locations, wrapped lines joined."""
    stdout = re.sub(r"^\[\d\d:\d\d:\d\d\]", " ", stdout, flags=re.MULTILINE)
    stdout = re.sub(r"\s\S+\.py:\d+\s*$", " ", stdout, flags=re.MULTILINE)
    return " ".join(stdout.split())


def _field_keys(state: Dict[str, torch.Tensor]):
    """Names of the field and proposal-network parameters in a checkpoint (not buffers, not appearance codes)."""
    return [
        k
        for k in state
        if k.startswith(("_model.field.", "_model.proposal_networks."))
        and state[k].is_floating_point()
        and "embedding_appearance" not in k
        and "aabb" not in k
    ]


def test_eta_is_chosen_from_the_selection_losses_and_logged(runs):
    state = runs.checkpoint(runs.stopped_dir, STOP_AT - 1)
    losses = state["eta_selection_losses"]
    assert losses.shape == (SELECTION_STEPS,) and torch.isfinite(losses).all()
    eta = state["eta"].item()
    assert 0.0 < eta <= 0.6 and eta == pytest.approx(select_eta(losses.tolist(), WINDOW), abs=1e-6)
    assert bool(state["perturbed"])
    output = console_text(runs.stopped.stdout)
    logged_eta = re.search(
        r"loss change dL = \S+ over 4 steps \(mean of the last 2 minus the first 2\) -> eta = ([0-9.]+)", output
    )
    assert logged_eta is not None and float(logged_eta.group(1)) == pytest.approx(eta, abs=1e-4)
    assert "PnR phase 1/3: eta-selection (steps 0 to 3)" in output
    assert "PnR phase 2/3: edit (steps 4 to 6)" in output
    # every field and proposal-network tensor (21 in nerfacto; the proposal hash tables have two names), not the
    # proposal networks' 10 alone
    source = runs.source()
    assert len({source[k].data_ptr() for k in _field_keys(source)}) == 21 and "perturbed 21 nerfacto tensors" in output
    assert f"with eta = {eta:.4f}; optimizer state reset" in output
    losses_logged = logged(runs.stopped_dir, "eta_selection_loss")
    assert [losses_logged[s] for s in range(SELECTION_STEPS)] == pytest.approx(losses.tolist(), rel=1e-5)


def test_both_loss_windows_see_the_same_views(runs):
    """dL compares the first and the last WINDOW selection losses: taken on the same views, it measures descent. No
    --pipeline.views-per-step is given: every step guides the objects protocol's released 4 views, all different."""
    views = views_of_each_step(runs.stopped_dir)
    assert set(views) == set(range(STOP_AT)) and all(len(set(step)) == 4 for step in views.values()), views
    first, last = [views[s] for s in range(WINDOW)], [views[s] for s in range(SELECTION_STEPS - WINDOW, SELECTION_STEPS)]
    assert sorted(first) == sorted(last) and len({v for step in first for v in step}) == 4 * WINDOW


def test_the_objects_protocol_edits_at_the_released_constant_learning_rate(runs):
    """The released code's optimiser has no schedule: 1e-2 at every step, selection, edit and revise, as the steps used
    it (read from the optimizer) and as nerfstudio's own learning_rate/fields log reports it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    total = SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS
    rates = {**logged(runs.stopped_dir, "learning_rate_fields"), **logged(runs.resumed_dir, "learning_rate_fields")}
    assert sorted(rates) == list(range(total)) and list(rates.values()) == pytest.approx([1e-2] * total)
    for run_dir in (runs.stopped_dir, runs.resumed_dir):
        reported = EventAccumulator(str(run_dir)).Reload().Scalars("learning_rate/fields")
        assert reported and [event.value for event in reported] == pytest.approx([1e-2] * len(reported))


def test_the_first_steps_render_coarse(runs):
    sides = logged(runs.stopped_dir, "render_short_side")
    assert sides == {0: 8, 1: 8, 2: 8, 3: 8, SELECTION_STEPS: 8, SELECTION_STEPS + 1: 16}


def _pipeline_at(runs, step: int):
    """The stopped run's pipeline in training mode (source loaded), with the checkpoint of ``step`` loaded."""
    config = yaml.load((runs.stopped_dir / "config.yml").read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.load_state_dict(runs.checkpoint(runs.stopped_dir, step))
    return pipeline


def test_every_edited_tensor_is_the_perturbation_of_the_source_right_after_it(runs):
    """Alg. 1, per tensor: theta = (1 - eta) theta_src + eta theta_0 for each of nerfacto's 21 field and proposal tensors
    (the selection steps moved the field first: the perturbation starts from theta_src, not from there)."""
    pipeline = _pipeline_at(runs, STOP_AT - 1)
    eta = float(pipeline.eta)
    source, fresh = pipeline.source.parameters, pipeline.fresh_initialisation()
    pipeline.perturb(eta)
    edited = {
        name: p
        for name, p in pipeline.model.named_parameters()
        if name.startswith(("field.", "proposal_networks.")) and "embedding_appearance" not in name
    }
    assert len(edited) == 21 and any(n.startswith("field.") for n in edited) and any(n.startswith("proposal") for n in edited)
    for name, value in edited.items():
        expected = (1 - eta) * source[name] + eta * fresh[name]
        assert torch.allclose(value, expected, atol=1e-7), name
        assert not torch.allclose(value, source[name]), f"{name} is not perturbed"
    state = pipeline.state_dict()
    frozen = [k for k in runs.source() if "camera_optimizer" in k or "embedding_appearance" in k]
    assert frozen and all(torch.equal(state[k], runs.source()[k]) for k in frozen)


def test_the_runs_own_tensors_after_its_perturbation_step_are_the_perturbation_plus_one_fresh_adam_step(runs):
    """What the run produced, per tensor and per element: the checkpoint of the first edit step holds
    (1 - eta) theta_src + eta theta_0 moved by one step of a fresh Adam, which moves an element by exactly its group's
    learning rate (m_hat / sqrt(v_hat) = sign(g) at Adam's first step) or, without a gradient, not at all. A run that
    perturbed another starting point, another eta or only some tensors leaves other differences (seen: perturbing the
    proposal networks alone, the field's hash table is off by up to 0.155)."""
    step = SELECTION_STEPS  # the perturbation happens as the first edit step begins
    saved = runs.checkpoint(runs.stopped_dir, step)
    pipeline = _pipeline_at(runs, step)
    eta, source, fresh = float(saved["eta"]), pipeline.source.parameters, pipeline.fresh_initialisation()
    config = yaml.load((runs.stopped_dir / "config.yml").read_text(), Loader=yaml.Loader)
    rates = {group: config.optimizers[group]["optimizer"].lr for group in ("fields", "proposal_networks")}
    names = [n for n in source if n.startswith(("field.", "proposal_networks.")) and "embedding_appearance" not in n]
    assert len(names) == 21 and eta > 0
    stepped = {}
    for name in names:
        rate = rates["fields" if name.startswith("field.") else "proposal_networks"]
        moved = (saved[f"_model.{name}"] - ((1 - eta) * source[name] + eta * fresh[name])).abs()
        unmoved, by_the_rate = moved <= 1e-6, (moved - rate).abs() <= 1e-5 * rate + 1e-6
        # (an element whose gradient is within a few thousand eps of 0 moves by rate |g| / (|g| + eps), a little less:
        # 1 of the 32768 of the field's hash table did, by 0.9999 of the rate)
        between = ~(unmoved | by_the_rate)
        assert int(between.sum()) <= moved.numel() // 1000 and bool((moved[between] <= rate).all()), (name, moved.max().item())
        stepped[name] = int(by_the_rate.sum())
    # the step moved the field (a proposal network may get no gradient at that step: its elements are then unmoved)
    assert sum(stepped[n] for n in names if n.startswith("field.")) > 0, stepped


def test_a_resumed_run_keeps_eta_and_phase_and_does_not_perturb_again(runs):
    stopped = runs.checkpoint(runs.stopped_dir, STOP_AT - 1)
    first = runs.checkpoint(runs.resumed_dir, STOP_AT)  # after the resumed run's first step
    output = console_text(runs.resumed.stdout)
    assert f"resumed at step {STOP_AT}, in phase edit" in output
    assert "not perturbing again" in output and "PnR: perturbed" not in output and "eta selection" not in output
    for key in ("eta", "perturbed", "eta_selection_losses"):
        assert torch.equal(first[key], stopped[key]), key
    # The step a resumed run begins with leaves every tensor as the checkpoint holds it; unperturbed, it perturbs each.
    pipeline = _pipeline_at(runs, STOP_AT - 1)
    keys = _field_keys(runs.source())
    before = {k: v.clone() for k, v in pipeline.state_dict().items() if k in keys}
    pipeline.begin_step(STOP_AT)
    after = pipeline.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in keys)
    # the control: unperturbed, the same call sets every tensor back to the perturbation of the source
    eta, source, fresh = float(pipeline.eta), pipeline.source.parameters, pipeline.fresh_initialisation()
    pipeline.perturbed.fill_(False)
    pipeline.begin_step(STOP_AT)
    after = dict(pipeline.model.named_parameters())
    for name in (n for n in after if n.startswith(("field.", "proposal_networks.")) and "embedding_appearance" not in n):
        assert torch.allclose(after[name], (1 - eta) * source[name] + eta * fresh[name], atol=1e-7), name
    assert any(not torch.equal(pipeline.state_dict()[k], before[k]) for k in keys)


def test_the_revise_phase_runs_to_the_end(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    total = SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS
    assert newest_checkpoint(runs.resumed_dir / "nerfstudio_models").name == f"step-{total - 1:09d}.ckpt"
    assert f"PnR phase 3/3: revise (steps {total - 2} to {total - 1})" in console_text(runs.resumed.stdout)
    events = EventAccumulator(str(runs.resumed_dir)).Reload()
    phases = {e.step: e.value for e in events.Scalars("Train Metrics Dict/phase")}
    assert phases == {STOP_AT: 1.0, total - 2: 2.0, total - 1: 2.0}
    l1 = events.Scalars("Train Loss Dict/ipg_l1_loss")
    assert [e.step for e in l1] == [total - 2] and l1[0].value > 0  # the weights reach 0 at half of the revise steps
    assert "Train Loss Dict/ipg_lpips_loss" in events.Tags()["scalars"]
    weights = {e.step: e.value for e in events.Scalars("Train Metrics Dict/ipg_l1_mult")}
    assert weights == {total - 2: 30000.0, total - 1: 0.0}
    assert (runs.resumed_dir / "renders").is_dir()


def test_checkpoints_hold_the_resume_state_but_not_the_frozen_source_or_lpips(runs):
    state = runs.checkpoint(runs.stopped_dir, STOP_AT - 1)
    assert {"eta", "perturbed", "eta_selection_losses"} <= set(state)
    assert {k for k in state if k.startswith("_model.")} == set(runs.source())
    assert not any(k.startswith(("source", "ipg", "lpips")) for k in state)


def test_the_proposal_loss_moves_the_proposal_networks_towards_the_fields_geometry(runs):
    """nerfacto's interlevel loss, as a pnr step computes it, on a field whose geometry the proposal networks do not
    bound (the source's proposal networks over a field moved all the way to theta_0): it is positive, reaches the
    proposal networks only, and a few steps on it alone lower it."""
    pipeline = _pipeline_at(runs, STOP_AT - 1)
    pipeline.perturb(1.0)  # the field and the proposal networks: theta_0
    with torch.no_grad():  # the source's proposal networks back: they describe the source's geometry, not theta_0's
        for name, parameter in pipeline.model.proposal_networks.named_parameters():
            parameter.copy_(pipeline.source.parameters[f"proposal_networks.{name}"])
    camera = pipeline.guidance_camera(0)
    torch.manual_seed(0)
    first = pipeline.proposal_loss([camera], [0])
    assert first.item() > 0
    first.backward()
    proposal_grads = [p.grad for p in pipeline.model.proposal_networks.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in proposal_grads)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in pipeline.model.field.parameters())
    optimizer = torch.optim.Adam(pipeline.model.proposal_networks.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.step()
        optimizer.zero_grad()
        torch.manual_seed(0)
        loss = pipeline.proposal_loss([camera], [0])
        loss.backward()
    assert loss.item() < first.item()


def test_a_selection_loss_that_is_not_finite_stops_with_one_line(runs, monkeypatch):
    import pnr_nerfstudio.pipeline as pnr_pipeline
    from pds_nerfstudio.common.errors import InputError

    config = yaml.load((runs.stopped_dir / "config.yml").read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    monkeypatch.setattr(pnr_pipeline, "selection_loss", lambda x0, x0_hat: float("inf"))
    pipeline.begin_step(0)
    with pytest.raises(InputError, match=r"eta selection: the loss of step 0 is inf .*--pipeline.perturbation.eta"):
        pipeline.get_train_loss_dict(0)


def test_one_selection_step_records_the_x0_reconstruction_loss_at_its_fixed_t(runs):
    """The recorded loss, recomputed from what the step's UNet call saw: 0.5 ||x0 - x0_hat||^2 in the released units,
    x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t), at the fixed t of ratio 0.75; and the viewer shows the phase."""
    from pnr_nerfstudio.perturbation import RELEASED_LATENT_NUMEL

    config = yaml.load((runs.stopped_dir / "config.yml").read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    assert pipeline.source is not None and set(pipeline.state_dict()) == set(runs.checkpoint(runs.stopped_dir, STOP_AT - 1))
    assert pipeline.controls.ratio_range == pytest.approx((0.02, 0.40))  # the sliders set where the annealing ends
    guidance = pipeline.guidance
    seen = {}
    encode, predict = guidance.encode_images, guidance.predict_noise

    def encode_and_keep(images, generator=None):
        seen["x0"] = encode(images, generator)
        return seen["x0"]

    def predict_and_keep(x_t, t, cond, guidance_scale=None):
        seen.update(x_t=x_t, t=t, eps=predict(x_t, t, cond, guidance_scale))
        return seen["eps"]

    guidance.encode_images, guidance.predict_noise = encode_and_keep, predict_and_keep
    pipeline.begin_step(0)
    _, losses, metrics = pipeline.get_train_loss_dict(0)
    assert set(losses) == {"interlevel_loss", "guidance_loss"} and metrics["phase"] == 0
    grid = guidance.timestep_grid
    t = seen["t"].chunk(2)[1]
    assert t.tolist() == [grid[int(len(grid) * 0.75)].item()] * 4  # the step's four views
    a_t = guidance.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t, eps = seen["x_t"].chunk(2)[1], seen["eps"].chunk(2)[1]  # the target's half of the batched call
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    # the mean over the step's four views of each view's loss
    per_view = 0.5 * (seen["x0"] - x0_hat).pow(2).flatten(1).sum(1) * RELEASED_LATENT_NUMEL / seen["x0"][0].numel()
    by_hand = per_view.mean().item()
    assert pipeline.eta_selection_losses[0].item() == pytest.approx(by_hand, rel=1e-4)
    assert "step 0 | phase eta-selection | t ratio 0.75 to 0.75 | views" in pipeline.controls.status.value


def test_source_images_and_checkpoint_are_untouched(runs, synthetic_scene):
    assert file_digests(synthetic_scene, runs.source_run) == runs.digests_before


def test_resuming_runs_the_rest_of_the_phases_by_default(runs, tmp_path):
    """A run started without --max-num-iterations (its total: all phases) and stopped at step STOP_AT resumes
    up to that total; the stopped run of the fixture was given --max-num-iterations STOP_AT, and is done."""
    from pds_nerfstudio.common.errors import InputError
    from pnr_nerfstudio.method_configs import pnr_method

    def resolved(run_dir):
        config = copy.deepcopy(pnr_method.config)
        config.load_dir, config.machine.device_type = run_dir, "cpu"
        config.resolve_source()
        return config

    stopped = tmp_path / "pnr" / runs.stopped_dir.name
    shutil.copytree(runs.stopped_dir, stopped)
    saved = yaml.load((stopped / "config.yml").read_text(), Loader=yaml.Loader)
    saved.max_num_iterations = SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS  # what a plain `ns-train pnr` saves
    (stopped / "config.yml").write_text(yaml.dump(saved), "utf8")
    config = resolved(stopped)
    assert config.max_num_iterations == SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS  # the total: the trainer ends there
    assert config.completed_steps() == STOP_AT
    assert config.pipeline.perturbation.loss_window == WINDOW  # the run's own settings
    with pytest.raises(InputError, match=f"has done {STOP_AT} of --max-num-iterations {STOP_AT} steps"):
        resolved(runs.stopped_dir)


@pytest.mark.parametrize(
    "flag, value, kept",
    [
        ("--pipeline.perturbation.eta", "0.5", "--pipeline.perturbation.eta auto"),
        ("--pipeline.perturbation.d-min", "50", "--pipeline.perturbation.d-min 1000.0"),
        ("--pipeline.perturbation.eta-max", "0.9", "--pipeline.perturbation.eta-max 0.6"),
        ("--pipeline.perturbation.loss-window", "1", f"--pipeline.perturbation.loss-window {WINDOW}"),
        ("--pipeline.perturbation.seed", "7", "--pipeline.perturbation.seed 0"),
    ],
)
def test_a_resumed_run_refuses_another_eta_or_theta_0(runs, monkeypatch, tmp_path, flag, value, kept):
    from nerfstudio.scripts import train

    argv = ["ns-train", "pnr", "--load-dir", str(runs.stopped_dir), "--output-dir", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", [*argv, "--machine.device-type", "cpu", flag, value])
    with pytest.raises(SystemExit) as exit_info:
        train.entrypoint()
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message and kept in message, message
    assert not (tmp_path / "out").exists()


def test_the_real_scenes_protocol_end_to_end(source_run, tiny_sd, torch_home, tmp_path):
    """App. E's real scenes: fixed eta 0.6, no selection, PDS's t range without annealing and its learning-rate schedule,
    no revise phase, and so no LPIPS: it runs with a TORCH_HOME that lacks LPIPS's VGG16 weights."""
    without_vgg = tmp_path / "torch_home"
    shutil.copytree(torch_home, without_vgg)
    (removed,) = [path for path in without_vgg.rglob("vgg16*.pth")]
    removed.unlink()
    run_dir, result = run_tiny_edit(
        "pnr", source_run, tmp_path / "outputs", without_vgg, 3,
        ["--pipeline.protocol", "real-scenes", "--pipeline.edit-steps", "3", "--pipeline.tgt-prompt", PROMPT,
         "--pipeline.guidance.model-id", str(tiny_sd), "--pipeline.interlevel-num-rays", "64", "--logging.steps-per-log", "1"],
    )  # fmt: skip
    output = console_text(result.stdout)
    assert "eta selection" not in output and "with eta = 0.6000" in output
    assert "PnR phase 2/3: edit (steps 0 to 2)" in output and "PnR phase 3/3" not in output
    assert logged(run_dir, "eta") == pytest.approx({0: 0.6, 1: 0.6, 2: 0.6})
    assert logged(run_dir, "t_ratio_min") == pytest.approx({0: 0.02, 1: 0.02, 2: 0.02})
    assert logged(run_dir, "t_ratio_max") == pytest.approx({0: 0.98, 1: 0.98, 2: 0.98})
    assert set(logged(run_dir, "phase").values()) == {1.0}
    assert set(logged(run_dir, "render_short_side").values()) == {16}  # no coarse renders
    assert {step: len(views) for step, views in views_of_each_step(run_dir).items()} == {0: 1, 1: 1, 2: 1}  # one view a step
    # PDS's schedule (nerfacto's warmup from 1e-8 to 1e-2 over 1000 steps) from step 0, where the field is perturbed
    from pds_nerfstudio.scenes.representations import Nerfacto

    fields = Nerfacto().optimizers()["fields"]
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=fields["optimizer"].lr)
    scheduler = fields["scheduler"].setup().get_scheduler(optimizer, lr_init=fields["optimizer"].lr)
    expected = []
    for _ in range(3):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    rates = logged(run_dir, "learning_rate_fields")
    assert [rates[s] for s in range(3)] == pytest.approx(expected, rel=1e-6) and expected[0] == pytest.approx(1e-8)
    config = yaml.load((run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.max_num_iterations == 3 and config.pipeline.revise_steps == 0


def test_views_per_step_typed_at_the_objects_default_beside_the_real_scenes_protocol_is_used(source_run, tiny_sd, torch_home, tmp_path):
    """The real-scenes protocol guides 1 view a step; --pipeline.views-per-step 4, the objects protocol's default, typed
    beside it wins: the step guides 4 views, read back from what it logged."""
    run_dir, _ = run_tiny_edit(
        "pnr", source_run, tmp_path / "outputs", torch_home, 1,
        ["--pipeline.protocol", "real-scenes", "--pipeline.views-per-step", "4", "--pipeline.tgt-prompt", PROMPT,
         "--pipeline.guidance.model-id", str(tiny_sd), "--pipeline.interlevel-num-rays", "64", "--logging.steps-per-log", "1"],
    )  # fmt: skip
    views = views_of_each_step(run_dir)
    assert set(views) == {0} and len(set(views[0])) == 4, views


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--pipeline.perturbation.eta", "1.5"], "--pipeline.perturbation.eta 1.5: need a number in [0, 1], or auto"),
        (["--pipeline.edit-steps", "0"], "--pipeline.edit-steps 0: need a positive number"),
        (["--pipeline.perturbation.loss-window", "60"], "--pipeline.perturbation.loss-window 60"),
        (["--pipeline.model.grid-param-group", "True"], "--pipeline.model.grid-param-group True"),
    ],
)
def test_bad_flags_stop_with_one_line(flags, fragment, source_run, tiny_sd, monkeypatch, tmp_path):
    from nerfstudio.scripts import train

    argv = ["ns-train", "pnr", "--load-dir", str(source_run), "--output-dir", str(tmp_path / "out")]
    argv += [
        "--machine.device-type",
        "cpu",
        "--pipeline.protocol",
        "objects",
        "--pipeline.tgt-prompt",
        PROMPT,
        "--pipeline.guidance.model-id",
        str(tiny_sd),
    ]
    monkeypatch.setattr(sys, "argv", [*argv, *flags])
    with pytest.raises(SystemExit) as exit_info:
        train.entrypoint()
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message and fragment in message, message
    assert not (tmp_path / "out").exists()


def test_an_unknown_eta_lists_the_choices(source_run, monkeypatch, capsys):
    from nerfstudio.scripts import train

    monkeypatch.setattr(
        sys, "argv", ["ns-train", "pnr", "--load-dir", str(source_run), "--pipeline.perturbation.eta", "half"]
    )
    with pytest.raises(SystemExit):
        train.entrypoint()
    err = capsys.readouterr().err
    assert "half" in err and "auto" in err


def test_export_render_and_viewer_work_without_the_diffusion_model(runs, torch_home, tmp_path):
    shutil.rmtree(runs.model_dir)
    # ns-viewer opens a run in the "test" mode ns-render uses: shown for the pds and splat runs
    check_run_opens_without_diffusion_model(runs.resumed_dir, torch_home, tmp_path, viewer=False)
