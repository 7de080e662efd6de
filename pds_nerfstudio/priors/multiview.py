"""Multi-view priors in MVDream's format (Shi et al., 2023), held in diffusers' own classes.

MVDream's UNet is Stable Diffusion 2.1-base's with two additions, both expressible in diffusers without a new class:

- the camera of each view, a flattened 4x4 camera-to-world matrix (16 numbers, translation normalised to unit length),
  goes through a two-layer MLP (16 -> 1280 -> 1280, SiLU between) whose output is added to the timestep embedding:
  diffusers' ``UNet2DConditionModel`` with ``class_embed_type="projection"`` and
  ``projection_class_embeddings_input_dim=16`` builds exactly that (``class_embedding``, added to the time embedding),
  the camera vectors passed as ``class_labels``;
- every self-attention (``attn1``) attends across the views of one object: the batch of (objects x views) images is
  regrouped so that each object's views form one sequence, ``(b f) l c -> b (f l) c``; cross-attention and the
  feed-forward stay per view. :class:`MultiViewAttnProcessor` on each ``attn1`` does this.

A folder in this format is a diffusers ``StableDiffusionPipeline`` folder with such a UNet and a ``multiview.json`` at
its root (:data:`MULTIVIEW_INFO`) that says how many views the prior denoises together and in which camera convention.

Cameras follow MVDream's (bytedance/MVDream camera_utils.py, and threestudio's random_multiview.py that its
guidance reads): a world with z up, the camera on an orbit round the object looking at its centre, OpenGL camera axes
(columns right, up, backward), the translation then normalised to unit length and the matrix flattened row by row.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MULTIVIEW_INFO = "multiview.json"
"""The file at a multi-view prior folder's root that marks it as one: ``{"num_views": 4, "camera": "mvdream"}``."""

CAMERA_CONVENTIONS = ("mvdream",)
CAMERA_DIM = 16
"""Numbers per view's camera: a 4x4 matrix, flattened."""


@dataclass(frozen=True)
class MultiViewInfo:
    """What a multi-view prior folder says of itself."""

    num_views: int
    """Views of one object the prior denoises together (MVDream: 4)."""
    camera: str = "mvdream"
    """The convention of the cameras it was trained with."""

    def save(self, folder: Path) -> None:
        (Path(folder) / MULTIVIEW_INFO).write_text(json.dumps({"num_views": self.num_views, "camera": self.camera}, indent=1) + "\n")


def read_multiview_info(folder: Path) -> Optional[MultiViewInfo]:
    """The folder's :data:`MULTIVIEW_INFO`, or None for a single-view prior. Raises ValueError on a file that does not
    describe a prior this package can use."""
    path = Path(folder).expanduser() / MULTIVIEW_INFO
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    info = MultiViewInfo(int(values["num_views"]), str(values.get("camera", "mvdream")))
    if info.num_views < 1 or info.camera not in CAMERA_CONVENTIONS:
        raise ValueError(f"{path}: num_views {info.num_views}, camera {info.camera!r}; need num_views >= 1 and a camera of {CAMERA_CONVENTIONS}")
    return info


def native_resolution(folder: Path) -> int:
    """The image size a prior folder's UNet was trained at: its latent size (``unet/config.json``'s ``sample_size``)
    times the VAE's downsampling (2 to the number of its ``block_out_channels`` less one): MVDream's 32 x 8 = 256."""
    unet = json.loads((Path(folder) / "unet" / "config.json").read_text())
    vae = json.loads((Path(folder) / "vae" / "config.json").read_text())
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def check_multiview_unet(config: Any) -> Optional[str]:
    """Why a UNet config cannot be a multi-view prior's (None if it can): the camera must enter as a 16-number
    projection added to the time embedding."""
    if getattr(config, "class_embed_type", None) != "projection":
        return f"its UNet has class_embed_type {getattr(config, 'class_embed_type', None)!r}, not 'projection' (the camera's embedding)"
    if getattr(config, "projection_class_embeddings_input_dim", None) != CAMERA_DIM:
        return f"its UNet's projection_class_embeddings_input_dim is {config.projection_class_embeddings_input_dim}, not {CAMERA_DIM}"
    if getattr(config, "class_embeddings_concat", False):
        return "its UNet concatenates the camera's embedding (class_embeddings_concat True); MVDream adds it to the time embedding"
    return None


class MultiViewAttnProcessor:
    """Self-attention across the views of each object: the ``(objects x views)`` batch regrouped into one sequence per
    object, attended with diffusers' scaled-dot-product processor, and split back into views."""

    def __init__(self, num_views: int) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.num_views = num_views
        self.attend = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
                 attention_mask: Optional[Tensor] = None, temb: Optional[Tensor] = None, **kwargs: Any) -> Tensor:  # fmt: skip
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("the multi-view processor is for self-attention (attn1) over [views, tokens, channels] only")
        images, tokens, channels = hidden_states.shape
        if images % self.num_views:
            raise ValueError(f"a batch of {images} images is not whole groups of {self.num_views} views")
        grouped = hidden_states.reshape(images // self.num_views, self.num_views * tokens, channels)
        return self.attend(attn, grouped, temb=temb).reshape(images, tokens, channels)


def install_multiview_attention(unet: Any, num_views: int) -> int:
    """Put :class:`MultiViewAttnProcessor` on every self-attention (``attn1``) of ``unet``; the others keep diffusers'
    processor. Returns how many it replaced."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = {}
    replaced = 0
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            processors[name] = MultiViewAttnProcessor(num_views)
            replaced += 1
        else:
            processors[name] = AttnProcessor2_0()
    unet.set_attn_processor(processors)
    return replaced


def orbit_camera(elevation: float, azimuth: float, distance: float, centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Tensor:
    """The camera-to-world matrix [4, 4] of a camera on an orbit round ``centre`` (degrees; z up), looking at it, with
    OpenGL camera axes (columns right, up, backward): the cameras threestudio's random_multiview.py draws for MVDream."""
    e, a = math.radians(elevation), math.radians(azimuth)
    offset = torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], dtype=torch.float64) * distance
    position = torch.tensor(centre, dtype=torch.float64) + offset
    forward = F.normalize(-offset, dim=0)
    right = F.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)), dim=0)
    up = F.normalize(torch.linalg.cross(right, forward), dim=0)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def camera_vectors(c2w: Tensor) -> Tensor:
    """What the UNet is given for each view: the camera-to-world matrices [N, 4, 4] (MVDream's convention, relative
    to the object's centre) with their translation normalised to unit length, flattened row by row: [N, 16]."""
    c2w = c2w.clone()
    c2w[:, :3, 3] = c2w[:, :3, 3] / (c2w[:, :3, 3].norm(dim=-1, keepdim=True) + 1e-8)
    return c2w.reshape(-1, CAMERA_DIM)


LDM_UNET_PREFIX = "model.diffusion_model."
"""Where the UNet's weights sit in an original (ldm layout) checkpoint such as MVDream's sd-v2.1-base-4view.pt."""

MVDREAM_CAMERA_KEYS = {"camera_embed.0": "label_emb.0.0", "camera_embed.2": "label_emb.0.2"}
"""MVDream's camera MLP under the names diffusers' converter reads a projection class embedding from."""

MVDREAM_ORIGINAL_CONFIG: Dict[str, Any] = {
    "model": {
        "params": {
            "unet_config": {
                "params": {
                    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
                    "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
                    "num_head_channels": 64, "use_linear_in_transformer": True, "transformer_depth": 1,
                    "context_dim": 1024, "camera_dim": CAMERA_DIM,
                }
            },
            "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
        }
    }
}  # fmt: skip
"""The parts of MVDream's released configs/sd-v2-base.yaml that the UNet's conversion reads: Stable Diffusion
2.1-base's UNet with a 16-number camera input, trained on 32x32 latents (256 px)."""


def convert_mvdream_unet(checkpoint: Dict[str, Tensor], original_config: Dict[str, Any] = MVDREAM_ORIGINAL_CONFIG) -> Any:
    """The UNet of an original MVDream checkpoint (ldm key layout, ``model.diffusion_model.*``) as diffusers'
    ``UNet2DConditionModel``: diffusers' own single-file converters, with the camera MLP renamed to the keys they read
    a projection class embedding from. Every weight of the UNet must be used and every parameter filled (strict).
    Raises ValueError on a checkpoint without MVDream's camera embedding."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    renamed = dict(checkpoint)
    for theirs, diffusers_name in MVDREAM_CAMERA_KEYS.items():
        for suffix in ("weight", "bias"):
            key = f"{LDM_UNET_PREFIX}{theirs}.{suffix}"
            if key not in renamed:
                raise ValueError(f"no {key} in the checkpoint: not an MVDream checkpoint (its camera embedding is missing)")
            renamed[f"{LDM_UNET_PREFIX}{diffusers_name}.{suffix}"] = renamed.pop(key)
    unet_params = original_config["model"]["params"]["unet_config"]["params"]
    vae_mult = original_config["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["ch_mult"]
    image_size = unet_params["image_size"] * 2 ** (len(vae_mult) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecates passing image_size; the checkpoint has no other
        config = create_unet_diffusers_config_from_ldm(original_config, renamed, image_size=image_size)
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=unet_params.get("camera_dim", CAMERA_DIM))
    unet = UNet2DConditionModel(**config)
    state = convert_ldm_unet_checkpoint(renamed, config)
    unet.load_state_dict(state, strict=True)
    used = {key for key in renamed if key.startswith(LDM_UNET_PREFIX)}
    if len(state) != len(used):
        raise ValueError(f"the checkpoint's UNet has {len(used)} tensors, of which the conversion used {len(state)}")
    return unet


def load_multiview_unet(folder: Path, info: MultiViewInfo, **kwargs: Any) -> Any:
    """A multi-view prior folder's UNet, made multi-view (:func:`make_multiview`)."""
    from diffusers import UNet2DConditionModel

    return make_multiview(UNet2DConditionModel.from_pretrained(Path(folder) / "unet", **kwargs), info, folder)


def make_multiview(unet: Any, info: MultiViewInfo, folder: Path) -> Any:
    """``unet``, loaded from the multi-view prior ``folder``, checked (:func:`check_multiview_unet`) and with the
    multi-view processor on every self-attention. Raises ValueError when the UNet is not a multi-view one."""
    problem = check_multiview_unet(unet.config)
    if problem is not None:
        raise ValueError(f"{folder} says it is a multi-view prior ({MULTIVIEW_INFO}), but {problem}")
    install_multiview_attention(unet, info.num_views)
    return unet
