"""CLIP image and text embeddings for the edit metrics (transformers' ``CLIPModel``), with the check that a model
named by ``--clip-models`` can be loaded offline."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.loading import check_pretrained_available

DEFAULT_CLIP_MODELS: Tuple[str, ...] = ("openai/clip-vit-base-patch32",)
"""CLIP ViT-B/32. For the three-backbone average reported by PnR pass
``--clip-models openai/clip-vit-base-patch32 openai/clip-vit-base-patch16 openai/clip-vit-large-patch14``."""
CLIP_FLAG = "--clip-models"


def check_clip_model_available(model_id: str) -> None:
    """Raise InputError unless the CLIP model ``model_id`` is a local transformers folder or can be had from the hub."""
    check_pretrained_available(model_id, "CLIP", "config.json", CLIP_FLAG, "transformers")


class ClipEmbedder:
    """A CLIP model and its processor from ``from_pretrained``: projected (not normalised) embeddings."""

    def __init__(self, model_id: str, device: torch.device) -> None:
        try:
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as error:
            raise ImportError("CLIP metrics need transformers: pip install transformers") from error
        check_clip_model_available(model_id)
        try:
            self.model = CLIPModel.from_pretrained(model_id).eval().to(device)
            self.processor = CLIPProcessor.from_pretrained(model_id)
        except (OSError, ValueError) as error:
            raise InputError(
                f"{CLIP_FLAG} {model_id}: cannot load a CLIP model from it: {str(error).splitlines()[0]}"
            ) from None
        self.device = device

    def pixel_values(self, images: Sequence[np.ndarray]) -> Tensor:
        """CLIP's preprocessing of 8-bit [H, W, 3] images (resize, center crop, normalise): [N, 3, S, S]."""
        pil_images = [Image.fromarray(image) for image in images]
        return self.processor.image_processor(images=pil_images, return_tensors="pt")["pixel_values"]

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """E_I of preprocessed images [N, 3, S, S] (differentiable): [N, D]."""
        pooled = self.model.vision_model(pixel_values=pixel_values.to(self.device)).pooler_output
        return self.model.visual_projection(pooled)

    @torch.no_grad()
    def images(self, images: Sequence[np.ndarray], batch_size: int = 16) -> Tensor:
        """E_I of 8-bit [H, W, 3] images: [N, D] on the CPU."""
        batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        return torch.cat([self.image_features(self.pixel_values(batch)).cpu() for batch in batches])

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> Tensor:
        """E_T of prompts (truncated to the model's context): [N, D] on the CPU."""
        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(
            self.device
        )
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        return self.model.text_projection(pooled).cpu()
