"""The multi-view guidance step (pds_nerfstudio.priors.multiview_guidance): every value the step gives the prior, read
back from the UNet call it made, and the objective against its formula on that call's own predictions."""

from __future__ import annotations

import pytest
import torch

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.multiview import camera_vectors, orbit_camera
from pds_nerfstudio.priors.multiview_guidance import RELEASED_NEGATIVE_PROMPT, MultiViewGuidanceConfig
from tests.priors.test_multiview import VIEWS, build_tiny_multiview_prior


@pytest.fixture(scope="module")
def multiview_prior(tmp_path_factory):
    return build_tiny_multiview_prior(tmp_path_factory.mktemp("mv") / "prior")


def released_x0(a_t, x_t, eps, scale: float, rescale: float):
    """The released target by hand, group by group of VIEWS, from the UNet's own output ``eps`` (conditional half, then
    the negative prompt's) on the noised latents ``x_t`` at the step's alpha-bar ``a_t``: x0 from the guided noise,
    rescaled by ``rescale`` towards the conditional estimate's spread."""
    eps_c, eps_n = eps.chunk(2)
    x0_g = (x_t - (1 - a_t).sqrt() * (eps_n + scale * (eps_c - eps_n))) / a_t.sqrt()
    x0_c = (x_t - (1 - a_t).sqrt() * eps_c) / a_t.sqrt()
    groups = []
    for g in range(x_t.shape[0] // VIEWS):
        rows = slice(g * VIEWS, (g + 1) * VIEWS)
        factor = (x0_c[rows].std() + 1e-8) / (x0_g[rows].std() + 1e-8)
        groups.append(rescale * factor * x0_g[rows] + (1 - rescale) * x0_g[rows])
    return torch.cat(groups)


def test_a_step_gives_the_prior_one_t_the_cameras_and_the_negative_prompt(multiview_prior):
    config = MultiViewGuidanceConfig(model_id=str(multiview_prior))
    config.check("cpu")
    guidance = config.setup(device="cpu")
    calls = []
    guidance.pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    outputs = []
    guidance.pipe.unet.register_forward_hook(lambda m, args, kwargs, out: outputs.append(out.sample), with_kwargs=True)
    latents = torch.randn(2 * VIEWS, 4, 8, 8, requires_grad=True)
    cameras = camera_vectors(torch.stack([orbit_camera(15, 90 * k + 10 * g, 2.0) for g in range(2) for k in range(VIEWS)]).float())
    step = guidance(latents, "a photo of a red cube", cameras, t_ratio_range=(0.3, 0.5), generator=torch.Generator().manual_seed(3))
    ((args, kwargs),) = calls
    x_t, t = args[0], args[1]
    assert torch.equal(t, step.t.repeat(4 * VIEWS)) and 300 <= int(step.t) <= 500  # one t, the 1000-step schedule's
    assert torch.equal(kwargs["class_labels"], torch.cat([cameras, cameras]))
    text = kwargs["encoder_hidden_states"]
    assert torch.equal(text[: 2 * VIEWS], guidance.text_embedding("a photo of a red cube").expand(2 * VIEWS, -1, -1))
    assert torch.equal(text[2 * VIEWS :], guidance.text_embedding(RELEASED_NEGATIVE_PROMPT).expand(2 * VIEWS, -1, -1))
    expected = released_x0(guidance.alphas_cumprod[int(step.t)], x_t[: 2 * VIEWS], outputs[0], scale=50, rescale=0.5)
    assert torch.allclose(step.reconstruction.x0, expected, atol=1e-4, rtol=1e-4)
    step.loss.backward()
    assert torch.allclose(latents.grad, (latents.detach() - step.reconstruction.x0) / (2 * VIEWS), atol=1e-6)


def test_a_single_view_model_is_refused_with_one_line(tmp_path):
    from toy_world.models import build_tiny_stable_diffusion

    folder = build_tiny_stable_diffusion(tmp_path / "sd")
    with pytest.raises(InputError) as error:
        MultiViewGuidanceConfig(model_id=str(folder)).check("cpu")
    assert "not a multi-view prior folder" in str(error.value) and "\n" not in str(error.value)
