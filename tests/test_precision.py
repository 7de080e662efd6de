"""The gradient a pds step sends to the rendered image, in the precision the guidance uses on CUDA by default,
against float32 throughout (the official release), on SD-1.5-shaped models built from config."""

from __future__ import annotations

import copy

import pytest
import torch

from pds_nerfstudio.guidance import GuidanceConfig, model_dtype
from tests.harness import rendered_image_gradient, sd15_shaped_pipeline

SIZE = 128
"""Rendered view size (16x16 latents): the largest whose float32 VAE backward keeps this test to seconds on a CPU."""


@pytest.fixture(scope="module")
def sd15_pipe(tiny_sd):
    return sd15_shaped_pipeline(tiny_sd)


def test_the_cuda_default_precision_keeps_the_gradient(sd15_pipe):
    cuda_default = model_dtype(GuidanceConfig().dtype, torch.device("cuda"))
    guidances = {}
    for name, dtype in (("cuda default", cuda_default), ("float32", torch.float32)):
        guidance = GuidanceConfig(dtype=str(dtype).removeprefix("torch.")).setup(device="cpu")  # type: ignore[arg-type]
        guidance.prepare(copy.deepcopy(sd15_pipe))
        assert guidance.pipe.unet.dtype == dtype and guidance.pipe.vae.dtype == torch.float32  # the gradient's path
        guidances[name] = guidance
    generator = torch.Generator().manual_seed(0)
    image, source = torch.rand(2, 1, 3, SIZE, SIZE, generator=generator)
    grads = {
        name: rendered_image_gradient(guidance, image, source, "a photo of a polar bear", "a photo of a bear")
        for name, guidance in guidances.items()
    }
    assert grads["float32"].abs().max() > 0
    cosine = torch.nn.functional.cosine_similarity(grads["cuda default"].flatten(), grads["float32"].flatten(), dim=0)
    assert cosine >= 0.999, cosine
