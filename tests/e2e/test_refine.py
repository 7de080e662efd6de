"""`pds-refine`: SDEdit on the tiny pipeline, and the method end to end through the real CLI."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world.runs import check_run_opens_without_diffusion_model, file_digests, run_tiny_edit

PROMPT = "a photo of a polar bear"
REFINE_PROMPT = "a photo of a bear statue"
REFINE_STEPS = 9


@pytest.fixture(scope="module")
def pds_source(tmp_path_factory, source_run, tiny_sd, torch_home):
    """A short pds run of the synthetic scene: what pds-refine starts from (with its own copy of the model,
    which pds-refine inherits and a test deletes)."""
    work = tmp_path_factory.mktemp("refine-source")
    shutil.copytree(tiny_sd, work / "sd")
    run_dir, _ = run_tiny_edit(
        "pds", source_run, work / "outputs", torch_home, 2,
        ["--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.model-id", str(work / "sd")], cwd=work,
    )  # fmt: skip
    # pds's controls (guidance 100, t ratio 0.02-0.98, its prompt) are in its checkpoint: refine must not use them
    assert load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["pipeline"]["controls._extra_state"]["guidance_scale"] == 100
    return run_dir


@pytest.fixture(scope="module")
def refine_run(pds_source, source_run, synthetic_scene, torch_home, tmp_path_factory):
    """pds-refine for 9 steps towards a new prompt, SDEditing a view every 2 steps, on one 32x32 patch a step;
    with the digests of every input before it."""
    digests = file_digests(synthetic_scene, source_run, pds_source)
    run_dir, result = run_tiny_edit(
        "pds-refine",
        pds_source.parent,  # the method folder of the pds run
        tmp_path_factory.mktemp("refine") / "outputs",
        torch_home,
        REFINE_STEPS,
        ["--pipeline.edit-every", "2", "--pipeline.datamanager.train-num-rays-per-batch", "1024"]
        + ["--pipeline.tgt-prompt", REFINE_PROMPT, "--logging.steps-per-log", "1"],
        cwd=pds_source.parents[3],
    )
    return run_dir, result, digests


def test_refine_end_to_end(refine_run, pds_source, source_run, synthetic_scene):
    run_dir, result, digests = refine_run
    assert "Rendered the 9 training views of the edited scene to refine" in result.stdout
    config = yaml.load((run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.pipeline.src_prompt == "" and config.pipeline.guidance.model_id.endswith("sd")  # from the pds run
    assert config.pipeline.source_checkpoint == newest_checkpoint(pds_source / "nerfstudio_models")

    # Training images were replaced by SDEdits: views 0..4 (steps 0, 2, 4, 6, 8), kept in the checkpoint.
    state = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["pipeline"]
    assert state["refined"].nonzero()[:, 0].tolist() == [0, 1, 2, 3, 4]
    refined = state["refined_images"][:5].float() / 255

    # The scene moved towards them: lower reconstruction error than the pds scene it started from.
    def error_against_refined(run_config_path):
        from nerfstudio.utils.eval_utils import eval_setup

        from pds_nerfstudio.scenes.rendering import render_view_image

        _, pipeline, _, _ = eval_setup(run_config_path, test_mode="inference")
        pipeline.train()  # render as in training: each view with its own pose refinement and appearance
        renders = [render_view_image(pipeline.model, pipeline.datamanager.train_camera(i), i) for i in range(5)]
        return torch.stack([(r - t).abs().mean() for r, t in zip(renders, refined)]).mean().item()

    before = error_against_refined(pds_source / "config.yml")
    after = error_against_refined(run_dir / "config.yml")
    assert after < before, (before, after)

    assert len(list((run_dir / "renders").glob("frame_*.png"))) == 9
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    before_after = events.Images("refine/before|after SDEdit")[0]
    assert before_after.width == 2 * before_after.height  # the view before and after SDEdit, side by side
    assert file_digests(synthetic_scene, source_run, pds_source) == digests


def test_sdedit_uses_refine_values_not_the_pds_runs(refine_run):
    """The pds run saved guidance 100, t ratio 0.02-0.98 and its prompt in its controls; the SDEdit steps use
    refine's guidance 15, skip ratio 0.8-0.9 and the prompt given now."""
    run_dir, result, _ = refine_run
    assert f"Step 0 uses: tgt prompt '{REFINE_PROMPT}', guidance scale 15.0, skip ratio range (0.8, 0.9)" in result.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    scales = {e.step: e.value for e in events.Scalars("Train Metrics Dict/sdedit_guidance_scale")}
    skips = {e.step: e.value for e in events.Scalars("Train Metrics Dict/sdedit_skip")}
    assert sorted(scales) == sorted(skips) == [0, 2, 4, 6, 8]  # every --pipeline.edit-every steps
    assert set(scales.values()) == {15.0} and set(skips.values()) <= {16.0, 17.0, 18.0}  # skip of 20 grid steps


def test_refinement_trains_on_32_pixel_patches(refine_run):
    """The official refinement's patch_size 32: the rays of a training batch form whole 32x32 squares."""
    from nerfstudio.utils.eval_utils import eval_setup

    run_dir, _, _ = refine_run
    config, _, _, _ = eval_setup(run_dir / "config.yml", test_mode="inference")
    assert config.pipeline.datamanager.patch_size == 32
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    _, batch = pipeline.datamanager.next_train(0)
    indices = batch["indices"].view(-1, 32, 32, 3)  # (image, row, column) of each ray, patch by patch
    assert (indices[..., 0] == indices[:, :1, :1, 0]).all()  # one image per patch
    assert torch.equal(indices[0, :, 0, 1] - indices[0, 0, 0, 1], torch.arange(32))  # consecutive rows
    assert torch.equal(indices[0, 0, :, 2] - indices[0, 0, 0, 2], torch.arange(32))  # consecutive columns


def test_refine_inherits_the_pds_runs_prompt_and_model(pds_source, tmp_path):
    import copy

    from nerfstudio.configs.method_configs import all_methods

    config = copy.deepcopy(all_methods["pds-refine"])
    config.load_dir, config.machine.device_type = pds_source, "cpu"
    config.resolve_source()
    assert config.pipeline.tgt_prompt == PROMPT
    assert config.pipeline.guidance.model_id == str(pds_source.parents[3] / "sd")
    assert config.pipeline.guidance.guidance_scale == 15.0 and config.pipeline.skip_ratio_range == (0.8, 0.9)


def test_a_stopped_refinement_resumes_with_its_refined_images(refine_run, torch_home, tmp_path):
    run_dir, _, _ = refine_run
    resumed, result = run_tiny_edit(
        "pds-refine", run_dir, tmp_path / "outputs", torch_home, REFINE_STEPS + 2, ["--pipeline.edit-every", "2"],
        cwd=run_dir.parents[3],
    )  # fmt: skip
    assert "Done loading Nerfstudio checkpoint" in result.stdout
    before = load_checkpoint(newest_checkpoint(run_dir / "nerfstudio_models"))["pipeline"]
    after = load_checkpoint(newest_checkpoint(resumed / "nerfstudio_models"))["pipeline"]
    assert newest_checkpoint(resumed / "nerfstudio_models").name == f"step-{REFINE_STEPS + 1:09d}.ckpt"
    # views 0-4 kept exactly as refined before the stop; step 10 refined view 5 (views in turn)
    assert torch.equal(after["refined_images"][:5], before["refined_images"][:5])
    assert after["refined"].nonzero()[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_sdedit_step_of_two_views_refines_both_in_one_batch(refine_run):
    """--pipeline.views-per-step 2: a SDEdit step refines the next two views in turn, each with its own noise, and
    starts from the edited scene's renders of them (the release's initial render), not from the captured images."""
    run_dir, _, _ = refine_run
    config = yaml.load((run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    config.pipeline.views_per_step = 2
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    assert pipeline.views_to_refine(20) == [2, 3]  # SDEdit step 10 (edit-every 2) refines views 20 and 21 of 9, in turn
    encoded = []
    encode = pipeline.guidance.encode_images

    def encode_and_keep(images, *args):
        encoded.append(images.clone())
        return encode(images, *args)

    pipeline.guidance.encode_images = encode_and_keep
    metrics = pipeline.refine_views(20)
    (started,) = encoded
    for row, index in enumerate((2, 3)):
        render = pipeline.training_view_image(index)  # the edited scene's view, rendered afresh (no step has trained it)
        captured = pipeline.datamanager.train_dataset.get_image_float32(index)[..., :3]
        size = tuple(started.shape[-2:])
        as_encoded = [F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="bilinear", align_corners=False)[0] for image in (render, captured)]
        from_render, from_captured = ((started[row].cpu() - image).abs() for image in as_encoded)
        assert from_render.max() <= 2e-3, from_render.max()  # nerfacto's renders of a view vary by ~1e-4 from call to call
        assert from_captured.mean() > 2e-2, from_captured.mean()  # the captured image is another
    assert metrics["refined_view"] == 2 and pipeline.refined.nonzero()[:, 0].tolist() == [2, 3]
    for index in (2, 3):
        image = pipeline.datamanager.train_image(index)
        assert torch.equal((image * 255).round().to(torch.uint8).cpu(), pipeline.refined_images[index])
        assert (image.cpu() - pipeline.initial_renders[index]).abs().mean() > 1e-3  # SDEdit changed it
    assert not torch.equal(pipeline.refined_images[2], pipeline.refined_images[3])


def test_refined_runs_open_without_the_diffusion_model(refine_run, pds_source, torch_home, tmp_path):
    run_dir, _, _ = refine_run
    shutil.rmtree(pds_source.parents[3] / "sd")
    # ns-viewer opens a run in the "test" mode ns-render uses: shown for the pds and splat runs
    check_run_opens_without_diffusion_model(run_dir, torch_home, tmp_path, viewer=False)


def test_a_nerfacto_run_is_not_a_refine_source(monkeypatch, source_run, tiny_sd, tmp_path):
    import sys

    from nerfstudio.scripts import train

    monkeypatch.setattr(sys, "argv", ["ns-train", "pds-refine", "--load-dir", str(source_run), "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        train.entrypoint()
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "holds nerfacto runs" in message and "a pds run" in message
    shutil.rmtree(tmp_path, ignore_errors=True)
