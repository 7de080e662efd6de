"""The precision the guidance runs in by default: float32 throughout on every device, as the official release.

(What float16 would cost is measured, not asserted: bench/precision.py, docs/benchmarks.md "Precision". On the CPU
a float16 SD-1.5-shaped UNet moves the image gradient by a cosine of 0.9986 at 64 px but only 0.9999 at 128 px, too
little for a test to tell the two apart, so this test reads back the dtypes instead of comparing gradients.)
"""

from __future__ import annotations

import copy

import torch

from pds_nerfstudio.priors.guidance import GuidanceConfig
from pds_nerfstudio.priors.loading import model_dtype
from toy_world.models import sd15_shaped_pipeline


def test_the_default_precision_is_float32_on_cuda_and_cpu():
    for device in ("cuda", "cuda:1", "cpu"):
        assert model_dtype(GuidanceConfig().dtype, torch.device(device)) is torch.float32
    assert model_dtype("float16", torch.device("cuda")) is torch.float16  # the flag is what changes it


def test_the_prepared_models_run_in_the_dtypes_they_claim(tiny_sd):
    pipe = sd15_shaped_pipeline(tiny_sd)
    for flag, unet_dtype in (("auto", torch.float32), ("float16", torch.float16)):
        guidance = GuidanceConfig(dtype=flag).setup(device="cpu")
        guidance.prepare(copy.deepcopy(pipe))
        assert guidance.pipe.unet.dtype == guidance.pipe.text_encoder.dtype == unet_dtype
        assert guidance.pipe.vae.dtype == torch.float32  # the gradient's path to the image, always float32
