"""`ns-train pds` end to end through the real CLI, on the synthetic scene with the tiny Stable Diffusion."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.integration.outputs import compare_scale
from pds_nerfstudio.integration.source_run import newest_checkpoint
from toy_world.runs import check_run_opens_without_diffusion_model, file_digests, run_tiny_edit

PROMPT = "a photo of a polar bear"
PDS_STEPS = 3
GRID = ["--pipeline.guidance.num-inference-steps", "50"]


class PDSRun:
    """A finished `ns-train pds` run, with what the test knew before it started."""

    def __init__(self, run_dir: Path, source_run: Path, digests_before: Dict[Path, str], model_dir: Path, stdout: str) -> None:
        self.run_dir, self.source_run, self.digests_before, self.model_dir = run_dir, source_run, digests_before, model_dir
        self.stdout = stdout


@pytest.fixture(scope="module")
def pds_run(tmp_path_factory, source_run, synthetic_scene, tiny_sd, torch_home) -> PDSRun:
    work = tmp_path_factory.mktemp("pds")
    model_dir = work / "sd"  # a copy the export test deletes, to show exports never load it
    shutil.copytree(tiny_sd, model_dir)
    digests = file_digests(synthetic_scene, source_run)
    run_dir, result = run_tiny_edit(
        "pds",
        source_run.parent.parent,  # the experiment folder: outputs/<scene>
        work / "outputs",
        torch_home,
        PDS_STEPS,
        ["--pipeline.tgt-prompt", PROMPT, "--pipeline.src-prompt", "a photo of a statue"]
        + ["--pipeline.guidance.model-id", str(model_dir), *GRID],
        cwd=work,
    )
    return PDSRun(run_dir, source_run, digests, model_dir, result.stdout)


def test_the_run_finishes_with_a_checkpoint(pds_run):
    checkpoint = newest_checkpoint(pds_run.run_dir / "nerfstudio_models")
    assert checkpoint is not None and checkpoint.name == f"step-{PDS_STEPS - 1:09d}.ckpt"
    config = yaml.load((pds_run.run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.pipeline.tgt_prompt == PROMPT
    assert config.pipeline.source_checkpoint == newest_checkpoint(pds_run.source_run / "nerfstudio_models")


def test_the_field_moved_and_poses_and_appearance_did_not(pds_run):
    source = load_checkpoint(newest_checkpoint(pds_run.source_run / "nerfstudio_models"))["pipeline"]
    edited = load_checkpoint(newest_checkpoint(pds_run.run_dir / "nerfstudio_models"))["pipeline"]
    assert source.keys() == {key for key in edited if key.startswith("_model.")}  # same architecture
    field_keys = [k for k in source if k.startswith("_model.field.") and "embedding_appearance" not in k]
    assert any(not torch.equal(source[k], edited[k]) for k in field_keys), "no field parameter changed"
    frozen = [k for k in source if "camera_optimizer" in k or "embedding_appearance" in k]
    assert frozen and all(torch.equal(source[k], edited[k]) for k in frozen)


def test_source_images_and_checkpoint_are_untouched(pds_run, synthetic_scene):
    assert file_digests(synthetic_scene, pds_run.source_run) == pds_run.digests_before


def test_renders_grid_and_turntable_are_saved(pds_run, synthetic_scene):
    renders = sorted((pds_run.run_dir / "renders").glob("frame_*.png"))
    config = yaml.load((pds_run.run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    from PIL import Image

    num_train = len(config.pipeline.datamanager.dataparser.setup().get_dataparser_outputs("train").image_filenames)
    assert len(renders) == num_train
    width, height = Image.open(next(synthetic_scene.glob("images/*.png"))).size
    assert Image.open(renders[0]).size == (width, height)
    scale = compare_scale(height, width)  # small views are enlarged to be seen
    assert scale > 1 and Image.open(pds_run.run_dir / "renders" / "compare.png").size == (2 * width * scale, 4 * height * scale)  # 4 views
    turntable = Image.open(pds_run.run_dir / "renders" / "turntable.gif")
    assert turntable.n_frames == num_train and turntable.size == (width, height)


def test_the_writer_gets_source_render_and_gradient_images(pds_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pds_run.run_dir)).Reload()
    assert "edit/source|render|gradient" in events.Tags()["images"]
    image = events.Images("edit/source|render|gradient")[0]
    assert image.width == 3 * image.height  # three 16 px views side by side
    assert "Train Loss Dict/guidance_loss" in events.Tags()["scalars"]
    # nerfstudio's evaluation (the edit against the unedited source's eval images) is off for edits
    assert not [tag for tag in events.Tags()["scalars"] + events.Tags()["images"] if tag.startswith("Eval")]


def test_the_step_uses_the_configured_values(pds_run):
    expected = "Step 0 uses: tgt prompt 'a photo of a polar bear', src prompt 'a photo of a statue', guidance scale 100.0, t ratio range (0.02, 0.98)"
    assert expected in pds_run.stdout
    # the source trained an appearance embedding, which the edit freezes: its Adam state does not fit
    assert "Adam starts fresh" in pds_run.stdout
    state = load_checkpoint(newest_checkpoint(pds_run.run_dir / "nerfstudio_models"))["optimizers"]
    assert {int(s["step"]) for s in state["fields"]["state"].values()} == {PDS_STEPS}


def test_results_are_bounded_in_number_and_size(pds_run, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup
    from PIL import Image

    _, pipeline, _, _ = eval_setup(pds_run.run_dir / "config.yml", test_mode="inference")
    pipeline.config.result_views, pipeline.config.result_resolution = 4, 16
    paths = pipeline.save_results(tmp_path)
    assert len(paths) == 4 and all(Image.open(path).size == (16, 16) for path in paths)
    assert Image.open(tmp_path / "compare.png").size == (2 * 128, 4 * 128)  # 16 px views enlarged 8 times
    assert Image.open(tmp_path / "turntable.gif").n_frames == 4


def test_export_render_and_viewer_work_without_the_diffusion_model(pds_run, torch_home, tmp_path):
    shutil.rmtree(pds_run.model_dir)
    check_run_opens_without_diffusion_model(pds_run.run_dir, torch_home, tmp_path)


def test_a_resume_skips_a_checkpoint_cut_short(pds_run, tiny_sd, tmp_path):
    """A run killed while saving (by another tool, or before saves were atomic) resumes from its last whole one."""
    import copy

    from nerfstudio.configs.method_configs import all_methods

    run_copy = tmp_path / "pds" / pds_run.run_dir.name
    shutil.copytree(pds_run.run_dir, run_copy)
    whole = newest_checkpoint(run_copy / "nerfstudio_models")
    cut = whole.with_name(f"step-{PDS_STEPS + 4:09d}.ckpt")
    cut.write_bytes(whole.read_bytes()[:2000])
    config = copy.deepcopy(all_methods["pds"])
    config.load_dir, config.machine.device_type, config.max_num_iterations = run_copy, "cpu", PDS_STEPS + 10
    config.pipeline.guidance.model_id = str(tiny_sd)  # the run's own copy is deleted by the export test
    config.resolve_source(TypedFlags.from_argv(["--max-num-iterations", "--pipeline.guidance.model-id"]))
    assert config.load_step == PDS_STEPS - 1 and config.completed_steps() == PDS_STEPS


def test_a_stopped_run_resumes_where_it_was_with_the_flags_given_now(pds_run, tiny_sd, torch_home, tmp_path):
    resumed, result = run_tiny_edit(
        "pds",
        pds_run.run_dir,  # a pds run: resume it (prompts and settings come from its config)
        tmp_path / "outputs",
        torch_home,
        PDS_STEPS + 2,  # --max-num-iterations is the edit's total: two more steps
        ["--pipeline.guidance.model-id", str(tiny_sd), "--logging.steps-per-log", "1"]
        + ["--pipeline.guidance.guidance-scale", "7.5", "--pipeline.guidance.t-ratio-range", "0.1", "0.9"],
        cwd=pds_run.run_dir.parents[3],
    )
    assert "Done loading Nerfstudio checkpoint" in result.stdout
    # the values the resumed steps used: the flags given now, not the controls saved in the checkpoint
    assert f"Step {PDS_STEPS} uses: tgt prompt '{PROMPT}', src prompt 'a photo of a statue', guidance scale 7.5, t ratio range (0.1, 0.9)" in result.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(resumed)).Reload()
    for name, value in (("guidance_scale", 7.5), ("t_ratio_min", 0.1), ("t_ratio_max", 0.9)):
        logged = {event.step: event.value for event in events.Scalars(f"Train Metrics Dict/{name}")}
        assert logged == pytest.approx({PDS_STEPS: value, PDS_STEPS + 1: value}), name
    assert newest_checkpoint(resumed / "nerfstudio_models").name == f"step-{PDS_STEPS + 1:09d}.ckpt"
    config = yaml.load((resumed / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.pipeline.tgt_prompt == PROMPT and config.pipeline.src_prompt == "a photo of a statue"
    assert config.pipeline.guidance.num_inference_steps == 50  # kept from the run, not reset to the default


# ---------------------------------------------------------------------------------------------
# Bad input: one line that says what to do, before any heavy work, nothing written.
# The same entry point as the ns-train command, called in this process to keep the suite fast.
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def ns_train(monkeypatch, tmp_path, tiny_sd):
    from nerfstudio.scripts import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "outputs"

    def call(*args: str, model_id: str = str(tiny_sd)) -> str:
        argv = ["ns-train", "pds", "--output-dir", str(output_dir), "--machine.device-type", "cpu"]
        argv += ["--pipeline.guidance.model-id", model_id, *args]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            train.entrypoint()
        assert not output_dir.exists(), "bad input must stop before anything is written"
        return str(exit_info.value.code)

    return call


def _single_line_error(message: str, *fragments: str) -> None:
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_load_dirs(ns_train, tmp_path, source_run):
    _single_line_error(ns_train("--pipeline.tgt-prompt", PROMPT), "pass --load-dir")
    _single_line_error(ns_train("--load-dir", str(tmp_path / "nope"), "--pipeline.tgt-prompt", PROMPT), "does not exist")
    (tmp_path / "empty").mkdir()
    _single_line_error(ns_train("--load-dir", str(tmp_path / "empty"), "--pipeline.tgt-prompt", PROMPT), "holds no nerfstudio run")
    no_checkpoint = tmp_path / "unsaved" / "nerfacto" / "2024-01-01_000000"
    no_checkpoint.mkdir(parents=True)
    shutil.copy(source_run / "config.yml", no_checkpoint)
    _single_line_error(ns_train("--load-dir", str(tmp_path / "unsaved"), "--pipeline.tgt-prompt", PROMPT), "has no checkpoint")


def test_a_source_whose_data_is_gone_suggests_data(ns_train, tmp_path, source_run):
    moved = tmp_path / "moved" / "nerfacto" / source_run.name
    shutil.copytree(source_run, moved)
    config = yaml.load((moved / "config.yml").read_text(), Loader=yaml.Loader)
    config.pipeline.datamanager.data = config.pipeline.datamanager.dataparser.data = tmp_path / "gone"
    (moved / "config.yml").write_text(yaml.dump(config), "utf8")
    _single_line_error(ns_train("--load-dir", str(moved), "--pipeline.tgt-prompt", PROMPT), "does not exist", "--data")


def test_data_overrides_the_data_path_of_a_moved_source(tmp_path, source_run, synthetic_scene, tiny_sd):
    """What `ns-train pds --load-dir <run> --data <new place>` does: ns-train copies --data into the
    datamanager before the source is resolved; the source's dataparser settings then read from there."""
    import copy

    from nerfstudio.configs.method_configs import all_methods

    moved = tmp_path / "moved" / "nerfacto" / source_run.name
    shutil.copytree(source_run, moved)
    saved = yaml.load((moved / "config.yml").read_text(), Loader=yaml.Loader)
    saved.pipeline.datamanager.data = saved.pipeline.datamanager.dataparser.data = tmp_path / "gone"
    (moved / "config.yml").write_text(yaml.dump(saved), "utf8")

    config = copy.deepcopy(all_methods["pds"])
    config.load_dir, config.machine.device_type = moved, "cpu"
    config.pipeline.tgt_prompt, config.pipeline.guidance.model_id = PROMPT, str(tiny_sd)
    config.pipeline.datamanager.data = synthetic_scene  # --data
    config.resolve_source()
    assert config.pipeline.datamanager.data == config.pipeline.datamanager.dataparser.data == synthetic_scene
    assert type(config.pipeline.datamanager.dataparser) is type(saved.pipeline.datamanager.dataparser)


def test_empty_prompt_missing_model_and_missing_device(ns_train, source_run):
    load = ["--load-dir", str(source_run)]
    _single_line_error(ns_train(*load), "target prompt is empty", "--pipeline.tgt-prompt")
    _single_line_error(ns_train(*load, "--pipeline.tgt-prompt", "   "), "target prompt is empty")
    message = ns_train(*load, "--pipeline.tgt-prompt", PROMPT, model_id="someone/missing-diffusion-model")
    _single_line_error(message, "someone/missing-diffusion-model", "--pipeline.guidance.model-id DIR")
    message = ns_train(*load, "--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.device", "cuda:7")
    _single_line_error(message, "--pipeline.guidance.device cuda:7")


def test_flags_out_of_range_stop_with_one_line(ns_train, source_run):
    load = ["--load-dir", str(source_run), "--pipeline.tgt-prompt", PROMPT]
    message = ns_train(*load, "--pipeline.guidance.num-inference-steps", "0")
    _single_line_error(message, "--pipeline.guidance.num-inference-steps 0", "1000")
    message = ns_train(*load, "--pipeline.datamanager.change-view-every", "0")
    _single_line_error(message, "--pipeline.datamanager.change-view-every 0")
    _single_line_error(ns_train(*load, "--max-num-iterations", "0"), "--max-num-iterations 0")
    # a rate of 0 made every field NaN through nerfstudio's exponential-decay scheduler (found by the outcome matrix)
    message = ns_train(*load, "--optimizers.fields.optimizer.lr", "0")
    _single_line_error(message, "--optimizers.fields.optimizer.lr 0", "above 0")


def test_truncated_model_weights_stop_before_training(ns_train, source_run, tiny_sd, tmp_path):
    model = tmp_path / "sd"
    shutil.copytree(tiny_sd, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = ns_train("--load-dir", str(source_run), "--pipeline.tgt-prompt", PROMPT, model_id=str(model))
    _single_line_error(message, str(weights), "incomplete", "copy the model again")


def test_a_truncated_source_checkpoint_stops_before_training(ns_train, source_run, tmp_path):
    copy = tmp_path / "cut" / "nerfacto" / source_run.name
    shutil.copytree(source_run, copy)
    checkpoint = newest_checkpoint(copy / "nerfstudio_models")
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    _single_line_error(ns_train("--load-dir", str(copy), "--pipeline.tgt-prompt", PROMPT), str(checkpoint), "incomplete")


def test_unknown_distillation_method_lists_the_choices(ns_train, source_run, capsys):
    ns_train("--load-dir", str(source_run), "--pipeline.tgt-prompt", PROMPT, "--pipeline.guidance.method", "sdss")
    err = capsys.readouterr().err
    assert "sdss" in err and "'pds', 'sds', 'dds'" in err
