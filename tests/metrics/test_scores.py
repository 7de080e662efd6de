"""The edit metrics on known cases (hand-made embeddings, a tiny CLIP), and the metric models offline."""

from __future__ import annotations

import math
import urllib.error
from typing import List

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.metrics.clip import ClipEmbedder, check_clip_model_available
from pds_nerfstudio.metrics.scores import (
    EDIT_CLIP_METRICS,
    clip_metrics,
    cosine,
    directional_consistency,
    directional_similarity,
    edit_direction_consistency,
    lpips_distances,
    text_image_similarity,
)
from pds_nerfstudio.priors.perceptual import ensure_lpips_weights, load_lpips

SRC_PROMPT = "a photo of a statue"
TGT_PROMPT = "a photo of a polar bear"
CPU = torch.device("cpu")
E1, E2, E3 = torch.eye(3)


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
