"""The Stable Diffusion guidance on a tiny pipeline loaded through from_pretrained, as users load theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.guidance import GuidanceConfig
from pds_nerfstudio.priors.loading import check_device, check_model_available
from pds_nerfstudio.score_distillation.gradients import distillation_gradient


@pytest.fixture()
def guidance(tiny_sd):
    return GuidanceConfig(model_id=str(tiny_sd), guidance_scale=7.5, num_inference_steps=500).setup(device="cpu")


def test_nothing_loads_until_used(tiny_sd):
    guidance = GuidanceConfig(model_id=str(tiny_sd)).setup(device="cpu")
    assert guidance._pipe is None
    guidance.text_embedding("a photo")
    assert guidance._pipe is not None


def test_importing_the_plugin_does_not_import_diffusers():
    code = "import sys, pds_nerfstudio.methods.method_configs, pnr_nerfstudio.method_configs; print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_constants_come_from_the_loaded_model(guidance):
    pipe = guidance.pipe
    assert guidance.vae_scale_factor == 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert len(guidance.alphas_cumprod) == pipe.scheduler.config.num_train_timesteps
    grid = guidance.timestep_grid
    assert len(grid) == 500 and bool((grid[1:] - grid[:-1] == 2).all()) and int(grid[0]) == 1
    latents = guidance.encode_images(torch.rand(1, 3, 32, 48))
    factor = guidance.vae_scale_factor
    assert latents.shape == (1, pipe.vae.config.latent_channels, 32 // factor, 48 // factor)
    assert latents.dtype == torch.float32


def test_text_embeddings_are_cached(guidance, monkeypatch):
    guidance.text_embedding("")  # load
    calls = []
    original = guidance.pipe.encode_prompt
    monkeypatch.setattr(guidance.pipe, "encode_prompt", lambda *a, **k: calls.append(a) or original(*a, **k))
    first = guidance.text_embedding("a photo of a polar bear")
    second = guidance.text_embedding("a photo of a polar bear")
    assert first is second and len(calls) == 1


def test_one_batched_unet_call_for_source_and_target(guidance, monkeypatch):
    images = torch.rand(1, 3, 32, 32)
    x0_src = guidance.encode_images(images).detach()
    x0_tgt = guidance.encode_images(images.flip(-1).requires_grad_())
    batches = []
    unet_forward = guidance.pipe.unet.forward
    monkeypatch.setattr(guidance.pipe.unet, "forward", lambda x, *a, **k: batches.append(x.shape[0]) or unet_forward(x, *a, **k))
    guidance(x0_tgt, x0_src, "a photo of a polar bear", "a photo of a bear")
    assert batches == [4]  # source and target, conditional and unconditional, in ONE call


def test_gradient_is_the_pds_closed_form(guidance):
    """The guidance's own gradient at the t it drew equals psi(t) (x0_tgt - x0_src) + chi(t) (eps_tgt - eps_src) (the
    closed form of tests/score_distillation, PDS paper Eq. 13 with shared noises), with psi and chi from the release's
    coefficients and the scheduler's betas, and eps_hat the guided UNet's prediction at x_t of the noise the step drew
    (its generator's first normal draw after t); and the surrogate loss hands the field grad / elements."""
    from pds_nerfstudio.score_distillation.gradients import add_noise, pds_psi_chi, sample_timesteps

    inputs = torch.Generator().manual_seed(0)
    x0_src = torch.randn(1, 4, 16, 16, generator=inputs)
    x0_tgt = torch.randn(1, 4, 16, 16, generator=inputs).requires_grad_()
    tgt, src = "a photo of a polar bear", "a photo of a bear"
    output = guidance(x0_tgt, x0_src, tgt, src, generator=torch.Generator().manual_seed(3))

    generator = torch.Generator().manual_seed(3)
    t, t_prev = sample_timesteps(guidance.timestep_grid, 0.02, 0.98, 1, generator)
    noise = torch.randn(x0_tgt.shape, generator=generator)
    a = guidance.alphas_cumprod
    with torch.no_grad():
        eps_tgt = guidance.predict_noise(add_noise(a, x0_tgt, noise, t), t, guidance.text_embedding(tgt))
        eps_src = guidance.predict_noise(add_noise(a, x0_src, noise, t), t, guidance.text_embedding(src))
    psi, chi = pds_psi_chi(a, t, t_prev, "official", guidance.pipe.scheduler.betas)
    closed_form = psi.float() * (x0_tgt.detach() - x0_src) + chi.float() * (eps_tgt - eps_src)
    assert torch.equal(output.t, t) and psi.abs().item() > 1e-3  # a t whose identity term is not negligible
    torch.testing.assert_close(output.grad, closed_form, rtol=1e-4, atol=1e-4)
    output.loss.backward()
    torch.testing.assert_close(x0_tgt.grad, output.grad / output.grad.numel())  # mean-reduced surrogate


def test_guidance_scale_is_classifier_free_guidance(guidance):
    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([101, 501])
    cond = guidance.text_embedding("a photo of a polar bear").expand(2, -1, -1)
    uncond = guidance.text_embedding("").expand(2, -1, -1)
    with torch.no_grad():
        eps_cond = guidance.pipe.unet(x_t, t, encoder_hidden_states=cond).sample
        eps_uncond = guidance.pipe.unet(x_t, t, encoder_hidden_states=uncond).sample
    expected = eps_uncond + 7.5 * (eps_cond - eps_uncond)
    torch.testing.assert_close(guidance.predict_noise(x_t, t, cond), expected, rtol=1e-4, atol=1e-4)


def test_missing_models_fail_with_a_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"not in the Hugging Face cache.*--pipeline.guidance.model-id DIR"):
        check_model_available("some-owner/some-missing-model")
    with pytest.raises(InputError, match="no such folder"):
        check_model_available(str(tmp_path / "nowhere" / "sd15"))
    with pytest.raises(InputError, match="no model_index.json"):
        check_model_available(str(tmp_path))


def test_nonexistent_devices_are_refused():
    with pytest.raises(InputError, match="cuda:7"):
        check_device("cuda:7", "--pipeline.guidance.device")
    with pytest.raises(InputError, match="not a device name"):
        check_device("gpu-one", "--pipeline.guidance.device")
    check_device("cpu", "--pipeline.guidance.device")


def test_a_weight_file_cut_short_is_found_by_its_header(tmp_path):
    """safetensors: the file must end where its header's last tensor ends; .bin (torch.save): a whole zip archive."""
    import pytest
    from safetensors.torch import save_file

    from pds_nerfstudio.common.errors import InputError
    from pds_nerfstudio.priors.loading import check_weight_files

    save_file({"w": torch.ones(64)}, tmp_path / "model.safetensors")
    torch.save({"w": torch.ones(64)}, tmp_path / "model.bin")
    check_weight_files(tmp_path, "--flag")  # whole files pass
    for name in ("model.bin", "model.safetensors"):
        path = tmp_path / name
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) - 100])
        with pytest.raises(InputError, match=f"the weight file {path} is incomplete"):
            check_weight_files(tmp_path, "--flag")
        path.write_bytes(whole)


# ---------------------------------------------------------------------------------------------
# Priors: Stable Diffusion 1.x/2.x, epsilon or v-prediction; other pipelines are refused
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_v_sd(tiny_sd, tmp_path_factory):
    """The tiny pipeline with its scheduler saying v_prediction, as Stable Diffusion 2.x (768 px) is saved."""
    import json
    import shutil

    folder = Path(shutil.copytree(tiny_sd, tmp_path_factory.mktemp("v") / "sd"))
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(config))
    return folder


def _guided_v(guidance, x_t, t, cond, scale):
    """The raw UNet's v for cond and uncond, guided, by hand."""
    unet = guidance.pipe.unet
    uncond = guidance.text_embedding("").expand_as(cond)
    with torch.no_grad():
        v_cond = unet(x_t, t, encoder_hidden_states=cond).sample
        v_uncond = unet(x_t, t, encoder_hidden_states=uncond).sample
    return v_uncond + scale * (v_cond - v_uncond)


def test_a_v_prediction_model_is_read_as_the_noise_in_every_method(tiny_v_sd):
    guidance = GuidanceConfig(model_id=str(tiny_v_sd), guidance_scale=7.5, num_inference_steps=50).setup(device="cpu")
    generator = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(2, 4, 16, 16, generator=generator), torch.tensor([101, 801])
    cond = guidance.text_embedding("a photo of a bear").expand(2, -1, -1)
    a_t = guidance.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = _guided_v(guidance, x_t, t, cond, 7.5)
    by_hand = a_t.sqrt() * v + (1 - a_t).sqrt() * x_t  # eps from v
    assert guidance.prediction_type == "v_prediction" and guidance.pipe.scheduler.config.prediction_type == "epsilon"
    assert torch.allclose(guidance.predict_noise(x_t, t, cond), by_hand, atol=1e-5)
    assert not torch.allclose(guidance.predict_noise(x_t, t, cond), v, atol=1e-3)  # v read as eps would differ
    # the PDS gradient through the guidance equals the one from the hand-converted denoiser, same draws
    x0_tgt, x0_src = torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 4, 16, 16, generator=generator)
    output = guidance(x0_tgt, x0_src, "a photo of a polar bear", "a photo of a bear", generator=torch.Generator().manual_seed(3))

    def hand_denoiser(x, steps, conditions):
        a = guidance.alphas_cumprod[steps].view(-1, 1, 1, 1)
        return a.sqrt() * _guided_v(guidance, x, steps, conditions, 7.5) + (1 - a).sqrt() * x

    from pds_nerfstudio.score_distillation.gradients import sample_timesteps

    generator = torch.Generator().manual_seed(3)
    t, t_prev = sample_timesteps(guidance.timestep_grid, 0.02, 0.98, 1, generator)
    expected = distillation_gradient(
        "pds", hand_denoiser, guidance.alphas_cumprod, x0_tgt, x0_src, guidance.text_embedding("a photo of a polar bear"),
        guidance.text_embedding("a photo of a bear"), t, t_prev, generator=generator, betas=guidance.pipe.scheduler.betas,
    )  # fmt: skip
    assert torch.equal(output.t, t) and torch.allclose(output.grad, expected.grad, atol=1e-5)


def test_pipelines_that_are_not_stable_diffusion_1_or_2_are_refused_in_one_line(tiny_sd, tmp_path):
    import json
    import shutil

    sdxl = Path(shutil.copytree(tiny_sd, tmp_path / "sdxl"))
    index = json.loads((sdxl / "model_index.json").read_text())
    (sdxl / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(InputError, match="is a StableDiffusionXLPipeline; edits use Stable Diffusion 1.x and 2.x"):
        check_model_available(str(sdxl))
    sample = Path(shutil.copytree(tiny_sd, tmp_path / "sample"))
    scheduler = sample / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "sample"}))
    with pytest.raises(InputError, match="predicts 'sample'"):
        check_model_available(str(sample))
    check_model_available(str(tiny_sd))
