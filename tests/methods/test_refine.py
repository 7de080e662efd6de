"""pds-refine's SDEdit on the tiny Stable Diffusion: no step returns the input, the official skips change it, and
its steps are diffusers' DDIM."""

from __future__ import annotations

import pytest
import torch

from pds_nerfstudio.priors.guidance import GuidanceConfig

PROMPT = "a photo of a polar bear"


@pytest.fixture(scope="module")
def sdedit_guidance(tiny_sd):
    return GuidanceConfig(model_id=str(tiny_sd), guidance_scale=15.0, num_inference_steps=20).setup(device="cpu")


def test_sdedit_with_no_denoising_step_returns_the_input(sdedit_guidance):
    image = torch.rand(1, 3, 32, 32)
    latents = sdedit_guidance.encode_images(image)
    assert torch.equal(sdedit_guidance.sdedit(latents, PROMPT, num_denoise_steps=0), latents)
    # so the image comes back as the VAE reconstructs it
    torch.testing.assert_close(
        sdedit_guidance.decode_latents(sdedit_guidance.sdedit(latents, PROMPT, 0)), sdedit_guidance.decode_latents(latents)
    )


@pytest.mark.parametrize("skip", [16, 17, 18])
def test_sdedit_at_the_official_skips_changes_the_image(sdedit_guidance, skip):
    latents = sdedit_guidance.encode_images(torch.rand(1, 3, 32, 32))
    edited = sdedit_guidance.sdedit(latents, PROMPT, 20 - skip, torch.Generator().manual_seed(0))
    assert edited.shape == latents.shape and torch.isfinite(edited).all()
    assert (edited - latents).abs().mean() > 0.05 * latents.abs().mean()


def test_sdedit_follows_diffusers_ddim(sdedit_guidance):
    """Two denoising steps equal noising to the 2nd-to-last grid step and two DDIM steps done by hand."""
    scheduler = sdedit_guidance.pipe.scheduler
    latents = sdedit_guidance.encode_images(torch.rand(1, 3, 32, 32))
    edited = sdedit_guidance.sdedit(latents, PROMPT, 2, torch.Generator().manual_seed(1))
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    t_first, t_last = scheduler.timesteps[-2:].tolist()
    assert (t_first, t_last) == (51, 1)  # SD 1.5 schedule, 20 steps, steps_offset 1
    a = scheduler.alphas_cumprod
    x = a[t_first].sqrt() * latents + (1 - a[t_first]).sqrt() * noise
    cond = sdedit_guidance.text_embedding(PROMPT)
    for t, t_prev_alpha in ((t_first, a[t_last]), (t_last, a[0])):
        eps = sdedit_guidance.predict_noise(x, torch.tensor([t]), cond)
        x0 = (x - (1 - a[t]).sqrt() * eps) / a[t].sqrt()
        x = t_prev_alpha.sqrt() * x0 + (1 - t_prev_alpha).sqrt() * eps  # DDIM, eta = 0
    torch.testing.assert_close(edited, x, rtol=1e-4, atol=1e-5)
