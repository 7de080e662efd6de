"""pds-eval end to end: the command on a tiny pds run, finding runs at any level, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.integration.pipeline import is_edit_run, is_source_run
from pds_nerfstudio.integration.source_run import find_run, newest_checkpoint
from pds_nerfstudio.metrics.report import METRICS_FILE, REPORT_FILE
from pds_nerfstudio.metrics.scores import (
    EDIT_CLIP_METRICS,
)
from pds_nerfstudio.metrics.views import original_source
from toy_world.runs import run_pds_eval, run_tiny_edit

SRC_PROMPT = "a photo of a statue"
TGT_PROMPT = "a photo of a polar bear"


# ---------------------------------------------------------------------------------------------
# The command, on the harness's pds run
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pds_edit(tmp_path_factory, source_run, tiny_sd, torch_home) -> Path:
    work = tmp_path_factory.mktemp("eval")
    run_dir, _ = run_tiny_edit(
        "pds",
        source_run.parent.parent,
        work / "outputs",
        torch_home,
        2,
        ["--pipeline.tgt-prompt", TGT_PROMPT, "--pipeline.src-prompt", SRC_PROMPT]
        + ["--pipeline.guidance.model-id", str(tiny_sd)],
        cwd=work,
    )
    return run_dir


def test_the_command_writes_every_metric_and_the_report(pds_edit, tiny_clip, tiny_clip_b, torch_home, tmp_path):
    out = tmp_path / "evaluation"
    # the method folder: the newest pds run under it
    metrics, result = run_pds_eval(pds_edit.parent, out, torch_home, ["--clip-models", str(tiny_clip), str(tiny_clip_b)], tmp_path)
    assert "Rendered the edited scene at 9 views" in result.stdout and "Rendered the source scene" in result.stdout
    assert metrics == json.loads((out / METRICS_FILE).read_text())
    config = yaml.load((pds_edit / "config.yml").read_text(), Loader=yaml.Loader)
    assert metrics["edit_run"] == str(pds_edit) and metrics["method"] == "pds"
    assert metrics["source_checkpoint"] == str(config.pipeline.source_checkpoint) and metrics["source_via"] == []
    assert (metrics["src_prompt"], metrics["tgt_prompt"]) == (SRC_PROMPT, TGT_PROMPT)
    assert metrics["settings"]["clip_models"] == [str(tiny_clip), str(tiny_clip_b)]
    assert metrics["settings"]["lpips_nets"] == ["vgg", "alex"]
    views = metrics["views"]
    assert views["cameras"] == "training" and views["count"] == 9 and views["height_width"] == [32, 32]

    clip = metrics["metrics"]["clip"]
    assert set(clip) == {str(tiny_clip), str(tiny_clip_b), "mean"}
    for key in EDIT_CLIP_METRICS:
        pairs = 8 if "consistency" in key else 9
        per_model = [clip[str(m)][key] for m in (tiny_clip, tiny_clip_b)]
        for summary in per_model:
            assert len(summary["per_view"]) == pairs and -1 <= summary["value"] <= 1
            assert summary["value"] == pytest.approx(np.mean(summary["per_view"]))
        assert clip["mean"][key]["value"] == pytest.approx(np.mean([s["value"] for s in per_model]))
    for net in ("vgg", "alex"):
        lpips = metrics["metrics"]["lpips"][net]
        assert len(lpips["per_view"]) == 9 and lpips["value"] == pytest.approx(np.mean(lpips["per_view"]))
        assert lpips["value"] > 0  # two editing steps changed the renders

    from PIL import Image

    for relative in views["source_images"] + views["edit_images"]:
        assert Image.open(out / relative).size == (32, 32)
    report = (out / REPORT_FILE).read_text()
    assert "CLIP directional similarity" in report and "LPIPS (alex)" in report and TGT_PROMPT in report
    assert all(f"src='{relative}'" in report for relative in views["edit_images"])


def test_runs_are_found_at_any_level(pds_edit, source_run):
    for level in (pds_edit, pds_edit.parent, pds_edit.parents[1], pds_edit / "nerfstudio_models"):
        assert find_run(level, is_edit_run, "an edit run").run_dir == pds_edit
    pipeline = yaml.load((pds_edit / "config.yml").read_text(), Loader=yaml.Loader).pipeline
    source = find_run(source_run.parents[1], is_source_run, "a source run", "--source")
    assert source.checkpoint == pipeline.source_checkpoint  # what --source outputs/<scene> uses
    with pytest.raises(InputError, match="expected a source run"):
        find_run(pds_edit, is_source_run, "a source run", "--source")


def test_the_source_of_an_edit_of_an_edit_is_the_unedited_scene(pds_edit, source_run):
    """pds-refine starts from a pds run: its source checkpoint is the pds run's, whose own source is the scene's."""
    scene = newest_checkpoint(source_run / "nerfstudio_models")
    assert original_source(scene) == (scene, [])
    edit = newest_checkpoint(pds_edit / "nerfstudio_models")
    assert original_source(edit) == (scene, [edit])
    replaced = edit.with_name("step-000000000.ckpt")  # a checkpoint since replaced by a newer one: config.yml suffices
    assert original_source(replaced) == (scene, [replaced])


def test_bad_input_ends_with_one_line(pds_edit, source_run, tmp_path, monkeypatch):
    from pds_nerfstudio.cli import evaluate

    def call(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["pds-eval", *args])
        with pytest.raises(SystemExit) as exit_info:
            evaluate.entrypoint()
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message, message
        return message

    assert "does not exist" in call(str(tmp_path / "nope"))
    assert "expected an edit run" in call(str(source_run))
    assert "someone/missing-clip" in call(str(pds_edit), "--clip-models", "someone/missing-clip")
    assert "--tgt-prompt" in call(str(pds_edit), "--tgt-prompt", " ")
    assert "--source" in call(str(pds_edit), "--source", str(tmp_path / "nope"))
    assert not (pds_edit / "evaluation").exists()
