"""The Stable Diffusion guidance on a tiny pipeline loaded through from_pretrained, as users load theirs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pds_nerfstudio.distillation import distillation_gradient
from pds_nerfstudio.errors import InputError
from pds_nerfstudio.guidance import GuidanceConfig, check_device, check_model_available


@pytest.fixture()
def guidance(tiny_sd):
    return GuidanceConfig(model_id=str(tiny_sd), guidance_scale=7.5, num_inference_steps=500).setup(device="cpu")


def test_nothing_loads_until_used(tiny_sd):
    guidance = GuidanceConfig(model_id=str(tiny_sd)).setup(device="cpu")
    assert guidance._pipe is None
    guidance.text_embedding("a photo")
    assert guidance._pipe is not None


def test_importing_the_plugin_does_not_import_diffusers():
    code = "import sys, pds_nerfstudio.method_configs; print('diffusers' in sys.modules)"
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


def test_gradient_is_the_distillation_module_gradient(guidance):
    x0_src = torch.randn(1, 4, 16, 16)
    x0_tgt = torch.randn(1, 4, 16, 16, requires_grad=True)
    output = guidance(x0_tgt, x0_src, "a photo of a polar bear", "a photo of a bear", generator=torch.Generator().manual_seed(3))
    # The same step, computed directly from the pure module with the same random draws.
    generator = torch.Generator().manual_seed(3)
    from pds_nerfstudio.distillation import sample_timesteps

    t, t_prev = sample_timesteps(guidance.timestep_grid, 0.02, 0.98, 1, generator)
    expected = distillation_gradient(
        "pds",
        guidance.predict_noise,
        guidance.alphas_cumprod,
        x0_tgt.detach(),
        x0_src,
        guidance.text_embedding("a photo of a polar bear"),
        guidance.text_embedding("a photo of a bear"),
        t,
        t_prev,
        generator=generator,
    )
    assert torch.equal(output.t, t)
    torch.testing.assert_close(output.grad, expected.grad)
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

    from pds_nerfstudio.errors import InputError
    from pds_nerfstudio.guidance import check_weight_files

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
