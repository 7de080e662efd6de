"""pds, pds-refine and pnr on a splatfacto source, through the real ns-train / ns-export / ns-render / ns-viewer.

The source is trained by nerfstudio's own ``ns-train splatfacto`` with the CPU rasteriser in place of
gsplat's CUDA kernels (``python -m pds_nerfstudio.cli.splat_cpu``), so it is written exactly as splatfacto
writes a run.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
import yaml

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.integration.source_run import newest_checkpoint
from pds_nerfstudio.scenes.models import EditSplatfactoModelConfig
from pnr_nerfstudio.perturbation import select_eta
from toy_world.runs import (
    TINY_SPLATFACTO_STEPS,
    check_run_opens_without_diffusion_model,
    file_digests,
    run_pds_eval,
    run_tiny_edit,
    train_tiny_splatfacto,
)

PROMPT = "a photo of a polar bear"
GROUPS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")
NO_CULLING = ["--pipeline.splat-model.cull-alpha-thresh", "0", "--pipeline.splat-model.cull-scale-thresh", "1e9"]
OFFICIAL_RATES = {"means": 1.6e-4, "features_dc": 2.5e-3, "features_rest": 1.25e-4, "opacities": 0.05, "scales": 5e-3, "quats": 1e-3}
RESOLUTION = ["--pipeline.render-resolution", "32"]  # the data's: a whole 32x32 view a step


@pytest.fixture(scope="module")
def splat_source(synthetic_scene, torch_home, tmp_path_factory):
    return train_tiny_splatfacto(synthetic_scene, tmp_path_factory.mktemp("splat_outputs"), torch_home)


@pytest.fixture(scope="module")
def model_copy(tiny_sd, tmp_path_factory):
    """A copy of the tiny diffusion model that a test may delete."""
    return Path(shutil.copytree(tiny_sd, tmp_path_factory.mktemp("model") / "sd"))


def gaussians(run_dir: Path):
    """The Gaussian tensors and the Adam state of a run's newest checkpoint."""
    saved = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))
    params = {group: saved["pipeline"][f"_model.gauss_params.{group}"] for group in GROUPS}
    return params, saved["optimizers"]


def test_every_gaussian_group_is_edited_and_a_resumed_edit_keeps_editing(splat_source, tiny_sd, torch_home, tmp_path):
    """The trap of nerfstudio >= 1.1: splatfacto's load_state_dict replaces the tensors the optimizers hold.
    If an optimizer held a stale tensor, its group would not change in the checkpoint while Adam's state did."""
    source_files = file_digests(splat_source, Path(yaml.load((splat_source / "config.yml").read_text(), Loader=yaml.Loader).data))
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd), *RESOLUTION, *NO_CULLING]
    first, result = run_tiny_edit("pds", splat_source, tmp_path / "first", torch_home, 3, flags)
    assert "Adam continues from the source run's state" in result.stdout
    resumed, result = run_tiny_edit("pds", first, tmp_path / "resumed", torch_home, 6, ["--steps-per-save", "1000"])
    assert "Resuming the edit at step 3 of 6" in result.stdout

    source, _ = gaussians(splat_source)
    edited, _ = gaussians(first)
    final, adam = gaussians(resumed)
    for group in GROUPS:
        assert edited[group].shape == source[group].shape == final[group].shape, group  # culling off: same Gaussians
        assert not torch.equal(edited[group], source[group]), f"{group} did not change in the edit"
        assert not torch.equal(final[group], edited[group]), f"{group} did not change after the resume"
        (state,) = adam[group]["state"].values()
        assert state["exp_avg"].shape == final[group].shape and int(state["step"]) == TINY_SPLATFACTO_STEPS + 6
        (used,) = adam[group]["param_groups"]  # the values the last step used: the official splat rates
        assert used["eps"] == 1e-15 and used["lr"] == pytest.approx(OFFICIAL_RATES[group], rel=1e-3), group
    config = yaml.load((resumed / "config.yml").read_text(), Loader=yaml.Loader)
    assert isinstance(config.pipeline.model, EditSplatfactoModelConfig)
    assert config.pipeline.model.cull_alpha_thresh == 0  # the flag given at the start, kept by the resume
    assert config.pipeline.model.num_downscales == 0
    assert file_digests(splat_source, config.pipeline.datamanager.data) == source_files  # nothing of the source changed


@pytest.fixture(scope="module")
def splat_pds_run(splat_source, model_copy, torch_home, tmp_path_factory) -> Tuple[Path, str]:
    """A 2-step pds edit of the splat source with splatfacto's culling on, and its output; its model is a copy that
    the first test that opens it deletes."""
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(model_copy), *RESOLUTION]
    run_dir, result = run_tiny_edit("pds", splat_source, tmp_path_factory.mktemp("splat_pds"), torch_home, 2, flags)
    return run_dir, result.stdout


def test_a_splat_edit_culls_and_opens_without_the_diffusion_model(splat_source, splat_pds_run, model_copy, torch_home, tmp_path):
    run_dir, stdout = splat_pds_run
    assert "Step 0 uses: tgt prompt 'a photo of a polar bear'" in stdout
    source, _ = gaussians(splat_source)
    edited, _ = gaussians(run_dir)
    # the tiny source still has Gaussians at splatfacto's initial opacity 0.1, the cull threshold: the edit culls
    # those that its first steps left below it (a step moves an opacity by less than 0.01 here)
    opacities = torch.sigmoid(source["opacities"]).flatten()
    kept_surely, kept_at_most = int((opacities >= 0.11).sum()), int((opacities >= 0.09).sum())
    assert 0 < kept_surely <= len(edited["means"]) <= kept_at_most < len(source["means"])
    assert (run_dir / "renders" / "compare.png").exists() and len(list((run_dir / "renders").glob("frame_*.png"))) == 9

    shutil.rmtree(model_copy)  # export, render and viewer must not need Stable Diffusion
    check_run_opens_without_diffusion_model(run_dir, torch_home, tmp_path / "opened", export="gaussian-splat")
    header = (tmp_path / "opened" / "export" / "splat.ply").read_bytes()[:400].decode("latin-1")
    assert f"element vertex {len(edited['means'])}" in header


def test_two_processes_cull_and_edit_the_gaussians_as_one_process_with_both_views(splat_source, tiny_sd, torch_home, tmp_path):
    """torchrun with 2 gloo processes of one view each against one process of two views: the same Gaussians culled
    at step 0 and the same update at both steps (a process whose Gaussians parted would stop the next all-reduce).
    Adam's eps is 1e-4 instead of 1e-15, so that the float32 round-off of a batch of two, divided by the source's tiny
    second moments, does not decide the comparison (see tests/e2e/test_distributed.py)."""
    flags = ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(tiny_sd), *RESOLUTION]
    flags += [arg for group in GROUPS for arg in (f"--optimizers.{group.replace('_', '-')}.optimizer.eps", "1e-4")]
    one, _ = run_tiny_edit("pds", splat_source, tmp_path / "one", torch_home, 2, [*flags, "--pipeline.views-per-step", "2"])
    two, _ = run_tiny_edit("pds", splat_source, tmp_path / "two", torch_home, 2, flags, processes=2)
    source, _ = gaussians(splat_source)
    after_one, _ = gaussians(one)
    after_two, _ = gaussians(two)
    assert len(after_one["means"]) == len(after_two["means"]) < len(source["means"])  # the same culled at step 0
    for group in GROUPS:
        assert (after_one[group] - after_two[group]).abs().max() <= 1e-6, group
    # and they moved: each kept Gaussian against its source row (culling keeps the rows in order; the nearest source
    # mean finds each, as the means move far less than they lie apart)
    rows = torch.cdist(after_one["means"], source["means"]).argmin(dim=1)
    assert torch.all(rows[1:] > rows[:-1])
    moved = {group: (after_one[group] - source[group][rows]).abs().max().item() for group in GROUPS}
    assert min(moved.values()) > 1e-5, moved  # measured: the least, features_rest, 4.8e-5 (quats 1.4e-4); the runs agree to 1e-6


def test_pds_eval_measures_a_splat_edit(splat_pds_run, torch_home, tiny_clip, tmp_path):
    metrics, result = run_pds_eval(splat_pds_run[0], tmp_path / "eval", torch_home, ["--clip-models", str(tiny_clip)], tmp_path)
    assert "Rendered the edited scene at 9 views" in result.stdout and "Rendered the source scene at 9 views" in result.stdout
    assert metrics["views"]["height_width"] == [32, 32]
    assert all(metrics["metrics"]["lpips"][net]["value"] > 0 for net in metrics["metrics"]["lpips"])  # edit != source


def test_refine_and_pnr_edit_splats(splat_source, splat_pds_run, tiny_sd, torch_home, tmp_path):
    flags = ["--pipeline.guidance.model-id", str(tiny_sd), *RESOLUTION]
    pds_run, _ = splat_pds_run
    refined, result = run_tiny_edit("pds-refine", pds_run, tmp_path / "outputs", torch_home, 3, [*flags, "--pipeline.edit-every", "2"])
    assert "Rendered the 9 training views of the edited scene to refine" in result.stdout
    before, _ = gaussians(pds_run)
    after, _ = gaussians(refined)
    assert not torch.equal(before["features_dc"], after["features_dc"])

    pnr_flags = [*flags, "--pipeline.tgt-prompt", "a photo of a bear statue", "--pipeline.protocol", "objects", "--pipeline.eta-selection-steps", "4",
                 "--pipeline.perturbation.loss-window", "2", "--pipeline.edit-steps", "2", "--pipeline.revise-steps", "2",
                 "--pipeline.ipg.resolution", "32", "--steps-per-save", "1", "--save-only-latest-checkpoint", "False"]  # fmt: skip
    pnr_run, result = run_tiny_edit("pnr", splat_source, tmp_path / "outputs", torch_home, 8, pnr_flags)
    (eta,) = re.findall(r"perturbed 6 splatfacto tensors to \(1 - eta\) theta_src \+ eta theta_0\s+with eta = ([0-9.]+)", result.stdout)
    assert "PnR phase 3/3: revise" in result.stdout and (pnr_run / "renders" / "compare.png").exists()
    # The eta the run chose is Alg. 2's value of the selection losses it recorded (default d_min), as it printed.
    saved = load_checkpoint(pnr_run / "nerfstudio_models" / "step-000000007.ckpt")["pipeline"]
    chosen = float(saved["eta"])
    assert chosen == pytest.approx(select_eta(saved["eta_selection_losses"].tolist(), 2), abs=1e-12)
    assert float(eta) == pytest.approx(chosen, abs=1e-4)
    # After the perturbation (step 4, the first edit step) the optimizers move the new Gaussians: every group changes
    # from step 4 to step 5 (an optimizer left holding the replaced tensors would leave them as step 4 saved them).
    at = {step: load_checkpoint(pnr_run / "nerfstudio_models" / f"step-{step:09d}.ckpt")["pipeline"] for step in (4, 5)}
    for group in GROUPS:
        key = f"_model.gauss_params.{group}"
        assert at[4][key].shape == at[5][key].shape and not torch.equal(at[4][key], at[5][key]), group


@pytest.fixture()
def ns_train(monkeypatch, tmp_path, tiny_sd):
    from nerfstudio.scripts import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def call(method: str, *args: str) -> str:
        argv = ["ns-train", method, "--output-dir", str(tmp_path / "out"), "--machine.device-type", "cpu"]
        monkeypatch.setattr(sys, "argv", [*argv, "--pipeline.guidance.model-id", str(tiny_sd), *args])
        with pytest.raises(SystemExit) as exit_info:
            train.entrypoint()
        assert not (tmp_path / "out").exists()
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message, message
        return message

    return call


def test_flags_of_the_other_representation_and_unsupported_sources_stop_with_one_line(ns_train, splat_source, source_run, tmp_path):
    message = ns_train("pds", "--load-dir", str(splat_source), "--pipeline.tgt-prompt", PROMPT, "--pipeline.model.hidden-dim", "8")
    assert "the source is a splatfacto run: use --pipeline.splat-model.*" in message
    message = ns_train("pnr", "--load-dir", str(source_run), "--pipeline.tgt-prompt", PROMPT, "--pipeline.splat-model.sh-degree", "1")
    assert "the source is a nerfacto run: use --pipeline.model.*" in message
    message = ns_train("pds", "--load-dir", str(splat_source), "--pipeline.tgt-prompt", PROMPT, "--optimizers.fields.optimizer.lr", "1e-3")
    assert "--optimizers.fields.* sets a parameter group this splatfacto edit does not have" in message and "means" in message
    message = ns_train("pds", "--load-dir", str(splat_source), "--prompt", PROMPT)
    assert "--prompt" in message and "--pipeline.tgt-prompt" in message
    message = ns_train("pds", "--load-dir", str(splat_source), "--pipeline.tgt-prompt", PROMPT, "--mixed-precision", "True")
    assert "--mixed-precision True" in message and "float32" in message

    from nerfstudio.configs.method_configs import all_methods

    other = tmp_path / "ngp" / "instant-ngp" / "2024-01-01_000000"
    shutil.copytree(splat_source / "nerfstudio_models", other / "nerfstudio_models")
    config = all_methods["instant-ngp"]
    config.pipeline.datamanager.data = yaml.load((splat_source / "config.yml").read_text(), Loader=yaml.Loader).data
    (other / "config.yml").write_text(yaml.dump(config), "utf8")
    message = ns_train("pds", "--load-dir", str(tmp_path / "ngp"), "--pipeline.tgt-prompt", PROMPT)
    assert "holds instant-ngp runs" in message and "nerfacto (ns-train nerfacto) or splatfacto (ns-train splatfacto)" in message


def test_splat_learning_rates_are_flags_typed_ones_win_and_the_others_are_the_official(splat_source, tiny_sd):
    import copy

    from nerfstudio.configs.method_configs import all_methods

    config = copy.deepcopy(all_methods["pds"])
    config.load_dir, config.machine.device_type = splat_source, "cpu"
    config.pipeline.tgt_prompt, config.pipeline.guidance.model_id = PROMPT, str(tiny_sd)
    # typed: means and quats, at rates other than the official ones; scales set in the config but not typed
    config.optimizers["means"]["optimizer"].lr = 1e-3
    config.optimizers["quats"]["optimizer"].lr = 2e-3
    config.optimizers["scales"]["optimizer"].lr = 7e-3
    typed = ["--optimizers.means.optimizer.lr", "1e-3", "--optimizers.quats.optimizer.lr", "2e-3"]
    config.resolve_source(TypedFlags.from_argv(typed))
    assert set(config.optimizers) == set(GROUPS)
    rates = {name: entry["optimizer"].lr for name, entry in config.optimizers.items()}
    assert rates == {**OFFICIAL_RATES, "means": 1e-3, "quats": 2e-3}


def test_refinement_of_a_splat_edit_defaults_to_the_official_30000_steps(splat_pds_run, tiny_sd):
    import copy

    from nerfstudio.configs.method_configs import all_methods

    config = copy.deepcopy(all_methods["pds-refine"])
    assert config.max_num_iterations == 15000  # nerfacto's official refinement
    config.load_dir, config.machine.device_type = splat_pds_run[0], "cpu"
    config.pipeline.guidance.model_id = str(tiny_sd)
    config.resolve_source(TypedFlags.from_argv(["--pipeline.guidance.model-id"]))
    assert config.max_num_iterations == 30000
