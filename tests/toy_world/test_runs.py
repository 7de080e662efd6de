"""The offline fixtures are real: they load with the libraries' own loaders and have the expected shapes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toy_world.models import TORCHVISION_CHECKPOINTS
from toy_world.runs import TINY_NERFACTO_STEPS, make_synthetic_scene


def test_session_is_offline(torch_home: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert Path(os.environ["TORCH_HOME"]) == torch_home
    for filename in TORCHVISION_CHECKPOINTS.values():
        assert (torch_home / "hub" / "checkpoints" / filename).is_file()


def test_lpips_constructs_offline() -> None:
    import lpips
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    a, b = torch.rand(2, 1, 3, 32, 32)
    metric = LearnedPerceptualImagePatchSimilarity(normalize=True)
    assert torch.isfinite(metric(a, b))
    for net in ("alex", "vgg"):
        distance = lpips.LPIPS(net=net, verbose=False)(a * 2 - 1, b * 2 - 1)
        assert distance.shape == (1, 1, 1, 1) and torch.isfinite(distance).all()


def test_tiny_sd_loads_and_generates(tiny_sd: Path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.num_train_timesteps == 1000
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.vae_scale_factor == 2 ** (len(pipe.vae.config.block_out_channels) - 1) == 2

    ids = pipe.tokenizer("a photo of a polar bear, ünïcødé ☃ 123!").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.unk_token_id not in ids[1:-1]
    assert max(ids) < pipe.text_encoder.config.vocab_size

    image = pipe("a photo", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1

    prompt_embeds, _ = pipe.encode_prompt(["a photo of a polar bear"] * 4, "cpu", 1, False)
    assert prompt_embeds.shape == (4, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim)
    with torch.no_grad():
        latents = torch.randn(4, pipe.unet.config.in_channels, 32, 32)
        eps = pipe.unet(latents, torch.full((4,), 500), encoder_hidden_states=prompt_embeds).sample
        encoded = pipe.vae.encode(torch.rand(4, 3, 64, 64) * 2 - 1).latent_dist.mean
    assert eps.shape == latents.shape
    assert encoded.shape == (4, pipe.vae.config.latent_channels, 32, 32)


def test_synthetic_scene_parses(synthetic_scene: Path) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=synthetic_scene).setup()
    train = parser.get_dataparser_outputs(split="train")
    val = parser.get_dataparser_outputs(split="val")
    assert (len(train.image_filenames), len(val.image_filenames)) == (9, 1)
    assert train.cameras.width.flatten().tolist() == [32] * 9
    assert train.cameras.height.flatten().tolist() == [32] * 9
    image = np.asarray(Image.open(train.image_filenames[0]))
    assert image.shape == (32, 32, 3) and image.std() > 10


def test_make_synthetic_scene_rejects_too_few_views(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_views"):
        make_synthetic_scene(tmp_path / "scene", num_views=8)


def test_source_run_has_config_and_checkpoint(source_run: Path, synthetic_scene: Path) -> None:
    import yaml

    config = yaml.load((source_run / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.method_name == "nerfacto"
    assert Path(config.data) == synthetic_scene
    assert source_run.parent.name == "nerfacto"
    assert (source_run / "dataparser_transforms.json").is_file()

    checkpoints = sorted((source_run / "nerfstudio_models").glob("step-*.ckpt"))
    assert [c.name for c in checkpoints] == [f"step-{TINY_NERFACTO_STEPS - 1:09d}.ckpt"]
    # A trusted test artifact; nerfstudio 1.1.5 checkpoints hold numpy scalars (not weights_only-safe).
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert state["step"] == TINY_NERFACTO_STEPS - 1
    assert any(key.startswith("_model.field.") for key in state["pipeline"])


def test_logged_if_any_reads_each_metric_by_step_and_an_unlogged_one_as_empty(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from toy_world.runs import logged, logged_if_any

    writer = SummaryWriter(str(tmp_path))
    for step in (0, 50, 100):
        writer.add_scalar("Train Metrics Dict/revise_pull_guidance", step / 10, step)
    writer.add_scalar("Train Metrics Dict/ipg_l1_mult", 3750.0, 50)
    writer.close()
    read = logged_if_any(tmp_path, ["revise_pull_guidance", "ipg_l1_mult", "revise_pull_ipg_lpips"])
    assert read == {"revise_pull_guidance": {0: 0.0, 50: 5.0, 100: 10.0}, "ipg_l1_mult": {50: 3750.0}, "revise_pull_ipg_lpips": {}}
    assert read["revise_pull_guidance"] == logged(tmp_path, "revise_pull_guidance")
