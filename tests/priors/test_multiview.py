"""Multi-view priors in MVDream's format, in diffusers' classes (pds_nerfstudio.priors.multiview): the views of one
object attend to each other and to no other object's, the camera enters as MVDream's embedding added to the time
embedding, and the orbit cameras are MVDream's own."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pds_nerfstudio.priors.multiview import (
    CAMERA_DIM,
    MultiViewInfo,
    camera_vectors,
    check_multiview_unet,
    install_multiview_attention,
    orbit_camera,
    read_multiview_info,
)

VIEWS = 4


def tiny_multiview_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
        class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_DIM,
    ).eval()  # fmt: skip


def build_tiny_multiview_prior(folder: Path) -> Path:
    """A tiny Stable Diffusion whose UNet is a multi-view one (camera projection), marked by multiview.json."""
    from toy_world.models import build_tiny_stable_diffusion

    build_tiny_stable_diffusion(folder)
    tiny_multiview_unet().save_pretrained(folder / "unet")
    MultiViewInfo(VIEWS).save(folder)
    return folder


def denoise(unet, latents, cameras):
    text = torch.zeros(latents.shape[0], 3, 8)
    with torch.no_grad():
        return unet(latents, torch.full((latents.shape[0],), 500), text, class_labels=cameras).sample


def test_each_view_attends_to_the_views_of_its_own_object_only():
    """Two objects of 4 views each: changing one view of the first object changes the prediction of its other three
    views and none of the second object's. Without the processor (diffusers' default, per view) the other views do not
    change: the coupling is the processor's."""
    unet = tiny_multiview_unet()
    latents = torch.randn(2 * VIEWS, 4, 8, 8)
    cameras = camera_vectors(torch.stack([orbit_camera(15, 90 * k, 2.0) for k in range(VIEWS)] * 2).float())
    changed = latents.clone()
    changed[1] += torch.randn(4, 8, 8)
    per_view = denoise(unet, changed, cameras) - denoise(unet, latents, cameras)
    assert all(per_view[k].abs().max() == 0 for k in (0, 2, 3))
    from diffusers.models.attention import BasicTransformerBlock

    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    assert install_multiview_attention(unet, VIEWS) == len(blocks) == 4  # down, mid, two up: each one's attn1
    moved = denoise(unet, changed, cameras) - denoise(unet, latents, cameras)
    assert all(moved[k].abs().max() > 1e-4 for k in (0, 2, 3))
    assert all(moved[k].abs().max() == 0 for k in range(VIEWS, 2 * VIEWS))
    with pytest.raises(ValueError, match="whole groups of 4 views"):
        denoise(unet, latents[:6], cameras[:6])


def test_the_multiview_processor_is_one_attention_over_the_object_s_views():
    """One block's self-attention with the processor equals diffusers' own attention of the 4 views' tokens laid end to
    end as one sequence."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = tiny_multiview_unet()
    install_multiview_attention(unet, VIEWS)
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    tokens = torch.randn(2 * VIEWS, 5, attn.to_q.in_features)
    with torch.no_grad():
        grouped = attn.processor(attn, tokens)
        expected = AttnProcessor2_0()(attn, tokens.reshape(2, VIEWS * 5, -1)).reshape(2 * VIEWS, 5, -1)
    assert torch.allclose(grouped, expected, atol=1e-6)


def test_the_camera_enters_as_mvdream_s_embedding_added_to_the_time_embedding():
    """MVDream's camera_embed is Linear(16, time_dim), SiLU, Linear(time_dim, time_dim), its output added to the time
    embedding: diffusers' projection class embedding has those layers, and the UNet's prediction moves with the
    camera."""
    unet = tiny_multiview_unet()
    assert check_multiview_unet(unet.config) is None
    embedding = unet.class_embedding
    time_dim = unet.time_embedding.linear_2.out_features
    assert (embedding.linear_1.in_features, embedding.linear_1.out_features) == (CAMERA_DIM, time_dim)
    assert (embedding.linear_2.in_features, embedding.linear_2.out_features) == (time_dim, time_dim)
    assert isinstance(embedding.act, torch.nn.SiLU) and not unet.config.class_embeddings_concat
    latents = torch.randn(VIEWS, 4, 8, 8)
    front = camera_vectors(torch.stack([orbit_camera(15, 90 * k, 2.0) for k in range(VIEWS)]).float())
    above = camera_vectors(torch.stack([orbit_camera(30, 90 * k, 2.0) for k in range(VIEWS)]).float())
    assert (denoise(unet, latents, front) - denoise(unet, latents, above)).abs().max() > 1e-4


def mvdream_get_camera(elevation: float, azimuths, blender_coord: bool = True) -> np.ndarray:
    """MVDream's camera_utils.get_camera as its code computes it, written here from its description (a y-up orbit of
    radius 1 looking at the origin, OpenGL axes, then the y/z flip to a z-up world, flattened row by row): an
    independent construction to check :func:`orbit_camera` and :func:`camera_vectors` against."""
    cameras = []
    for azimuth in azimuths:
        e, a = math.radians(elevation), math.radians(azimuth)
        position = np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        forward = -position / np.linalg.norm(position)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([right, up, -forward], axis=1)
        c2w[:3, 3] = position
        if blender_coord:
            c2w = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]) @ c2w
        cameras.append(c2w.flatten())
    return np.stack(cameras)


@pytest.mark.parametrize("elevation", [0.0, 15.0, 30.0])
@pytest.mark.parametrize("distance", [1.0, 2.5])
def test_orbit_cameras_are_mvdream_s(elevation, distance):
    """threestudio's orbit (azimuth a, z up) at any distance, normalised, is MVDream's get_camera at azimuth a + 90."""
    ours = camera_vectors(torch.stack([orbit_camera(elevation, 90 * k + 20, distance) for k in range(VIEWS)]))
    theirs = mvdream_get_camera(elevation, [90 * k + 20 + 90 for k in range(VIEWS)])
    assert np.allclose(ours.numpy(), theirs, atol=1e-7)


def test_a_multiview_folder_says_so(tmp_path):
    assert read_multiview_info(tmp_path) is None
    MultiViewInfo(4).save(tmp_path)
    assert read_multiview_info(tmp_path) == MultiViewInfo(4, "mvdream")
    (tmp_path / "multiview.json").write_text('{"num_views": 4, "camera": "zero123"}')
    with pytest.raises(ValueError, match="camera 'zero123'"):
        read_multiview_info(tmp_path)
    from types import SimpleNamespace

    single = SimpleNamespace(**{**tiny_multiview_unet().config, "class_embed_type": None})  # Stable Diffusion's UNet
    assert "class_embed_type None" in check_multiview_unet(single)


def test_a_multiview_prior_given_to_an_edit_stops_with_one_line(tmp_path):
    """Where a single-view Stable Diffusion is needed (pds-refine, pds-dreambooth, pnr's real-scenes protocol), the model
    check (run before anything loads) says in one line that a multi-view prior is not one."""
    from pds_nerfstudio.common.errors import InputError
    from pds_nerfstudio.priors.loading import check_model_available
    from toy_world.models import build_tiny_stable_diffusion

    folder = build_tiny_stable_diffusion(tmp_path / "prior")
    check_model_available(str(folder))
    MultiViewInfo(4).save(folder)
    with pytest.raises(InputError) as error:
        check_model_available(str(folder))
    assert "is a multi-view prior (4 views" in str(error.value) and "\n" not in str(error.value)


TINY_ORIGINAL_CONFIG = {
    "model": {
        "params": {
            "unet_config": {
                "params": {
                    "image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 32,
                    "attention_resolutions": [1, 2], "num_res_blocks": 1, "channel_mult": [1, 2],
                    "num_head_channels": 16, "use_linear_in_transformer": True, "transformer_depth": 1,
                    "context_dim": 8, "camera_dim": 16,
                }
            },
            "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2]}}},
        }
    }
}  # fmt: skip
"""MVDream's configs/sd-v2-base.yaml shrunk: two levels, attention at both, 32 and 64 channels (GroupNorm's 32 groups)."""

TINY_DIFFUSERS_CONFIG = {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 8, "cross_attention_dim": 8,
                         "attention_head_dim": [2, 4], "use_linear_projection": True,
                         "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                         "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                         "class_embed_type": "projection", "projection_class_embeddings_input_dim": 16}  # fmt: skip
"""The diffusers UNet that :data:`TINY_ORIGINAL_CONFIG` describes."""

RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
                 "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip


def ldm_key(name: str, layers: int = 1) -> str:
    """The original (ldm, openaimodel.py) name of a diffusers UNet weight of a model with ``layers`` resnets per down
    block: MVDream's checkpoint layout, written out here to make a tiny checkpoint in it."""
    parts = name.split(".")

    def inner(rest):  # a resnet's own names change; a transformer's are the same in both
        return ".".join([RESNET_TO_LDM.get(rest[0], rest[0]), *rest[1:]])

    simple = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "class_embedding.linear_1": "camera_embed.0", "class_embedding.linear_2": "camera_embed.2",
              "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
    for prefix, theirs in simple.items():
        if name.startswith(prefix + "."):
            return "model.diffusion_model." + theirs + name[len(prefix) :]
    if parts[0] == "down_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"model.diffusion_model.input_blocks.{(block + 1) * (layers + 1)}.0.op." + ".".join(parts[5:])
        index = 1 + block * (layers + 1) + int(parts[3])
        return f"model.diffusion_model.input_blocks.{index}.{0 if kind == 'resnets' else 1}." + inner(parts[4:])
    if parts[0] == "mid_block":
        index = {"resnets": 2 * int(parts[2]), "attentions": 1}[parts[1]]
        return f"model.diffusion_model.middle_block.{index}." + inner(parts[3:])
    if parts[0] == "up_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":  # inside the level's last output block, after its resnet and transformer
            return f"model.diffusion_model.output_blocks.{block * (layers + 1) + layers}.2.conv." + ".".join(parts[5:])
        index = block * (layers + 1) + int(parts[3])
        return f"model.diffusion_model.output_blocks.{index}.{0 if kind == 'resnets' else 1}." + inner(parts[4:])
    raise KeyError(name)


def test_an_original_mvdream_checkpoint_converts_to_the_same_unet(tmp_path):
    """A tiny UNet written in the original checkpoint's key layout (as MVDream's sd-v2.1-base-4view.pt holds its UNet,
    with first-stage and text weights beside it) converts, through diffusers' own converters, to a UNet with every
    weight equal and the same multi-view predictions; a checkpoint without the camera MLP is refused."""
    from diffusers import UNet2DConditionModel

    from pds_nerfstudio.priors.multiview import convert_mvdream_unet

    torch.manual_seed(0)
    original = UNet2DConditionModel(**TINY_DIFFUSERS_CONFIG).eval()
    checkpoint = {ldm_key(name): value.clone() for name, value in original.state_dict().items()}
    assert len(checkpoint) == len(original.state_dict())
    checkpoint["first_stage_model.encoder.conv_in.weight"] = torch.zeros(1)  # what else the file holds stays out
    checkpoint["cond_stage_model.model.positional_embedding"] = torch.zeros(1)
    converted = convert_mvdream_unet(checkpoint, TINY_ORIGINAL_CONFIG).eval()
    theirs, ours = original.state_dict(), converted.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    for unet in (original, converted):
        install_multiview_attention(unet, VIEWS)
    latents = torch.randn(VIEWS, 4, 8, 8)
    cameras = camera_vectors(torch.stack([orbit_camera(15, 90 * k, 2.0) for k in range(VIEWS)]).float())
    assert torch.equal(denoise(original, latents, cameras), denoise(converted, latents, cameras))
    del checkpoint["model.diffusion_model.camera_embed.0.weight"]
    with pytest.raises(ValueError, match="camera embedding is missing"):
        convert_mvdream_unet(checkpoint, TINY_ORIGINAL_CONFIG)


def test_pds_convert_mvdream_writes_a_multiview_prior_folder(tmp_path, monkeypatch):
    """The command on a tiny checkpoint in the original layout (saved with torch.save, as released) and a tiny Stable
    Diffusion as the base: the folder it writes is a diffusers pipeline whose UNet, loaded as a multi-view prior,
    predicts as the checkpoint's; its VAE and text encoder are the base's; bad input stops with one line first."""
    import sys

    import yaml
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from pds_nerfstudio.cli.convert_mvdream import entrypoint
    from pds_nerfstudio.priors.multiview import load_multiview_unet
    from toy_world.models import build_tiny_stable_diffusion

    torch.manual_seed(0)
    original = UNet2DConditionModel(**TINY_DIFFUSERS_CONFIG).eval()
    checkpoint = tmp_path / "sd-v2.1-base-4view.pt"
    torch.save({ldm_key(name): value for name, value in original.state_dict().items()}, checkpoint)
    (tmp_path / "sd-v2-base.yaml").write_text(yaml.safe_dump(TINY_ORIGINAL_CONFIG))
    base = build_tiny_stable_diffusion(tmp_path / "base")
    output = tmp_path / "mvdream"

    def run(*args: str):
        monkeypatch.setattr(sys, "argv", ["pds-convert-mvdream", *args])
        return entrypoint()

    common = ["--original-config", str(tmp_path / "sd-v2-base.yaml")]
    for args, message in (([str(tmp_path / "missing.pt"), "--base", str(base), "--output", str(output)], "no such file"),
                          ([str(checkpoint), "--output", str(output)], "--base is required"),
                          ([str(checkpoint), "--base", str(tmp_path), "--output", str(output)], "no model_index.json"),
                          ([str(checkpoint), "--base", str(base), "--output", str(tmp_path)], "exists; give a new folder")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            run(*args, *common)
        assert message in str(stop.value.code) and "\n" not in str(stop.value.code), stop.value.code
    with pytest.raises(SystemExit) as stop:
        run(str(checkpoint), "--base", str(base), "--output", str(output))  # the released UNet's 1024-wide context
    assert "its text encoder gives 8-wide embeddings, the UNet takes 1024" in str(stop.value.code)
    assert not output.exists()
    run(str(checkpoint), "--base", str(base), "--output", str(output), *common)
    info = read_multiview_info(output)
    assert info == MultiViewInfo(4, "mvdream")
    unet = load_multiview_unet(output, info).eval()
    install_multiview_attention(original, VIEWS)
    latents = torch.randn(VIEWS, 4, 8, 8)
    cameras = camera_vectors(torch.stack([orbit_camera(15, 90 * k, 2.0) for k in range(VIEWS)]).float())
    assert torch.equal(denoise(original, latents, cameras), denoise(unet, latents, cameras))
    converted, source = StableDiffusionPipeline.from_pretrained(output), StableDiffusionPipeline.from_pretrained(base)
    for part in ("vae", "text_encoder"):
        ours, theirs = getattr(converted, part).state_dict(), getattr(source, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), part
