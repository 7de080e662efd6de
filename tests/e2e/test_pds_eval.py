"""pds-eval: the metric definitions on known cases, the metric models offline, and the command end to end."""

from __future__ import annotations

import json
import math
import runpy
import subprocess
import sys
import urllib.error
import warnings
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from pds_nerfstudio.errors import InputError
from pds_nerfstudio.evaluation import (
    EDIT_CLIP_METRICS,
    METRICS_FILE,
    REPORT_FILE,
    ClipEmbedder,
    check_clip_model_available,
    clip_metrics,
    cosine,
    directional_consistency,
    directional_similarity,
    edit_direction_consistency,
    ensure_lpips_weights,
    load_lpips,
    lpips_distances,
    original_source,
    text_image_similarity,
)
from pds_nerfstudio.pipeline import is_edit_run, is_source_run
from pds_nerfstudio.source_run import find_run, newest_checkpoint
from tests.harness import offline_env, run_tiny_edit, write_tiny_clip_tokenizer_files

BIN = Path(sys.executable).parent
SRC_PROMPT = "a photo of a statue"
TGT_PROMPT = "a photo of a polar bear"
CPU = torch.device("cpu")


def build_tiny_clip(path: Path, seed: int) -> Path:
    """A seeded tiny CLIPModel (text and vision width 16, 2 layers, 32 px images in 8 px patches) with its
    processor (a tokenizer on the tiny vocabulary, CLIP's preprocessing at 32 px), saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    files = write_tiny_clip_tokenizer_files(path)
    tokenizer = CLIPTokenizer(vocab=str(files / "vocab.json"), merges=str(files / "merges.txt"), model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            tiny,
            vocab_size=1000,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tiny, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip-a", seed=0)


@pytest.fixture(scope="module")
def tiny_clip_b(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip-b", seed=1)


def smooth_images(count: int, seed: int, size: int = 32) -> List[np.ndarray]:
    """Seeded 8-bit images: random colour gradients plus a little noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(0, 1, (3, 3))
        image = a * ramp[:, None, None] + b * ramp[None, :, None] + c * 0.5 + rng.normal(0, 0.05, (size, size, 3))
        images.append((np.clip(image / 2, 0, 1) * 255).round().astype(np.uint8))
    return images


# ---------------------------------------------------------------------------------------------
# Definitions on hand-made embeddings
# ---------------------------------------------------------------------------------------------

E1, E2, E3 = torch.eye(3)


def test_a_cosine_with_a_zero_vector_is_zero_and_counted_as_undefined():
    scores = cosine(torch.stack([E1, torch.zeros(3)]), torch.stack([E1 + E2, E1]))
    assert torch.allclose(scores.values, torch.tensor([1 / math.sqrt(2), 0.0], dtype=torch.float64))
    assert scores.defined.tolist() == [True, False]
    summary = scores.summary()
    assert summary["value"] == pytest.approx(0.5 / math.sqrt(2)) and summary["undefined_views"] == 1
    assert cosine(torch.zeros(0, 3), torch.zeros(0, 3)).summary()["value"] is None  # no views: no mean


def test_text_image_similarity_is_the_cosine_to_the_target_text():
    images = torch.stack([E1, E1 + E2, -E2]) * 7.0  # embeddings need not be normalised
    assert text_image_similarity(images, E2 * 3).values.tolist() == pytest.approx([0.0, 1 / math.sqrt(2), -1.0])


def test_directional_similarity_compares_the_image_change_with_the_text_change():
    src_text, tgt_text = E1, E2  # text direction: E2 - E1
    along = directional_similarity(E1[None] * 5, E2[None] * 2, src_text, tgt_text)  # image moved E1 -> E2
    against = directional_similarity(E2[None], E1[None], src_text, tgt_text)
    aside = directional_similarity(E3[None], (E3 + 0.1 * (E1 + E2))[None], src_text, tgt_text)  # orthogonal change
    assert along.values.item() == pytest.approx(1.0) and against.values.item() == pytest.approx(-1.0)
    assert aside.values.item() == pytest.approx(0.0, abs=1e-12) and aside.defined.all()
    unchanged = directional_similarity(torch.stack([E1, E3]), torch.stack([E1, E3]) * 2, src_text, tgt_text)
    assert unchanged.values.tolist() == [0.0, 0.0] and unchanged.summary()["undefined_views"] == 2
    same_prompts = directional_similarity(E1[None], E2[None], E1, E1 * 4)
    assert not same_prompts.defined.any()


def test_consistency_between_neighbouring_views():
    src = torch.stack([E1, (E1 + E2) / math.sqrt(2), E2, (E2 + E3) / math.sqrt(2)])
    same = directional_consistency(src, src)  # the edit changes between views exactly as the source does
    assert same.values.tolist() == pytest.approx([1.0] * 3) and same.defined.all()
    assert edit_direction_consistency(src, src).summary() == {"value": 0.0, "per_view": [0.0] * 3, "undefined_views": 3}
    flipped = -src  # e_{i+1} - e_i = -(o_{i+1} - o_i); the edit change is -2 o_i
    assert directional_consistency(src, flipped).values.tolist() == pytest.approx([-1.0] * 3)
    expected = [F.cosine_similarity(src[i], src[i + 1], dim=0).item() for i in range(3)]
    assert edit_direction_consistency(src, flipped).values.tolist() == pytest.approx(expected)
    assert len(directional_consistency(src[:1], flipped[:1]).values) == 0


# ---------------------------------------------------------------------------------------------
# The metric models, offline
# ---------------------------------------------------------------------------------------------


def test_identical_source_and_edit(tiny_clip):
    images = smooth_images(3, seed=0)
    embedder = ClipEmbedder(str(tiny_clip), CPU)
    src_text, tgt_text = embedder.texts([SRC_PROMPT, TGT_PROMPT])
    scores = clip_metrics(embedder.images(images), embedder.images(list(images)), src_text, tgt_text)
    assert set(scores) == set(EDIT_CLIP_METRICS)
    assert scores["directional_similarity"].summary() == {"value": 0.0, "per_view": [0.0] * 3, "undefined_views": 3}
    assert scores["directional_consistency"].values.tolist() == pytest.approx([1.0, 1.0])
    assert scores["edit_direction_consistency"].summary()["undefined_views"] == 2
    others = smooth_images(3, seed=1)
    for net in ("vgg", "alex"):
        lpips = load_lpips(net, CPU)
        assert lpips_distances(lpips, images, images).tolist() == [0.0, 0.0, 0.0]
        assert (lpips_distances(lpips, images, others) > 0).all()


def test_an_edit_along_the_text_direction_has_positive_directional_similarity(tiny_clip):
    """Gradient steps on the pixels that move the CLIP image embedding along (or against) the text direction."""
    embedder = ClipEmbedder(str(tiny_clip), CPU)
    source = smooth_images(1, seed=2)
    src_text, tgt_text = embedder.texts([SRC_PROMPT, TGT_PROMPT])
    direction = F.normalize(tgt_text, dim=-1) - F.normalize(src_text, dim=-1)
    processor = embedder.processor.image_processor
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)

    def edit(sign: float) -> np.ndarray:
        image = (embedder.pixel_values(source) * std + mean).requires_grad_(True)  # in [0, 1]
        optimizer = torch.optim.Adam([image], lr=0.03)
        for _ in range(20):
            embedding = F.normalize(embedder.image_features((image - mean) / std), dim=-1)
            loss = -sign * (embedding @ direction).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0, 1)
        return (image.detach()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    towards, away = edit(1.0), edit(-1.0)
    embeddings = embedder.images([source[0], towards, away])
    positive = directional_similarity(embeddings[:1], embeddings[1:2], src_text, tgt_text)
    negative = directional_similarity(embeddings[:1], embeddings[2:3], src_text, tgt_text)
    assert positive.defined.all() and positive.values.item() > 0.2, positive
    assert negative.defined.all() and negative.values.item() < -0.2, negative


def test_a_missing_clip_model_says_how_to_pass_a_local_folder(tmp_path):
    with pytest.raises(InputError) as error:
        check_clip_model_available("someone/missing-clip-model")  # the session runs with HF_HUB_OFFLINE=1
    assert "someone/missing-clip-model" in str(error.value) and "--clip-models DIR" in str(error.value)
    with pytest.raises(InputError, match="no config.json there"):
        check_clip_model_available(str(tmp_path))
    with pytest.raises(InputError, match="no such folder"):
        check_clip_model_available(str(tmp_path / "nope"))


def test_missing_lpips_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    for net, filename in (("vgg", "vgg16-397923af.pth"), ("alex", "alexnet-owt-7be5be79.pth")):
        with pytest.raises(InputError) as error:
            load_lpips(net, CPU)
        message = str(error.value)
        assert f"LPIPS ({net})" in message and filename in message and str(tmp_path / "empty") in message
        assert "TORCH_HOME" in message and "\n" not in message


def test_lpips_weights_present_in_torch_home(torch_home):
    assert ensure_lpips_weights("vgg") == torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"


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


@pytest.mark.e2e
def test_the_command_writes_every_metric_and_the_report(pds_edit, tiny_clip, tiny_clip_b, torch_home, tmp_path):
    out = tmp_path / "evaluation"
    command = [
        str(BIN / "pds-eval"), str(pds_edit.parent),  # the method folder: the newest pds run under it
        "--clip-models", str(tiny_clip), str(tiny_clip_b),
        "--output-dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command, env=offline_env(torch_home), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "Rendered the edited scene at 9 views" in result.stdout and "Rendered the source scene" in result.stdout

    metrics = json.loads((out / METRICS_FILE).read_text())
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


@pytest.mark.e2e
def test_runs_are_found_at_any_level(pds_edit, source_run):
    for level in (pds_edit, pds_edit.parent, pds_edit.parents[1], pds_edit / "nerfstudio_models"):
        assert find_run(level, is_edit_run, "an edit run").run_dir == pds_edit
    pipeline = yaml.load((pds_edit / "config.yml").read_text(), Loader=yaml.Loader).pipeline
    source = find_run(source_run.parents[1], is_source_run, "a source run", "--source")
    assert source.checkpoint == pipeline.source_checkpoint  # what --source outputs/<scene> uses
    with pytest.raises(InputError, match="expected a source run"):
        find_run(pds_edit, is_source_run, "a source run", "--source")


@pytest.mark.e2e
def test_the_source_of_an_edit_of_an_edit_is_the_unedited_scene(pds_edit, source_run):
    """pds-refine starts from a pds run: its source checkpoint is the pds run's, whose own source is the scene's."""
    scene = newest_checkpoint(source_run / "nerfstudio_models")
    assert original_source(scene) == (scene, [])
    edit = newest_checkpoint(pds_edit / "nerfstudio_models")
    assert original_source(edit) == (scene, [edit])
    replaced = edit.with_name("step-000000000.ckpt")  # a checkpoint since replaced by a newer one: config.yml suffices
    assert original_source(replaced) == (scene, [replaced])


@pytest.mark.e2e
def test_bad_input_ends_with_one_line(pds_edit, source_run, tmp_path, monkeypatch):
    from pds_nerfstudio import evaluation

    def call(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["pds-eval", *args])
        with pytest.raises(SystemExit) as exit_info:
            evaluation.entrypoint()
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message, message
        return message

    assert "does not exist" in call(str(tmp_path / "nope"))
    assert "expected an edit run" in call(str(source_run))
    assert "someone/missing-clip" in call(str(pds_edit), "--clip-models", "someone/missing-clip")
    assert "--tgt-prompt" in call(str(pds_edit), "--tgt-prompt", " ")
    assert "--source" in call(str(pds_edit), "--source", str(tmp_path / "nope"))
    assert not (pds_edit / "evaluation").exists()


def test_the_module_runs_as_a_script(monkeypatch, capsys):
    """What ``python -m pds_nerfstudio.evaluation --help`` runs, in this process (no second nerfstudio import)."""
    monkeypatch.setattr(sys, "argv", ["pds_nerfstudio.evaluation", "--help"])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_info:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported by this file
        runpy.run_module("pds_nerfstudio.evaluation", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 0 and "--clip-models" in capsys.readouterr().out
