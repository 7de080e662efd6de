"""Chunked differentiable rendering gives the one-graph parameter gradient, with the same samples."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.nerfacto import NerfactoModelConfig

from pds_nerfstudio.scenes.rendering import ChunkedRenderer, guidance_camera, render_view, view_rays

TINY_PROPOSAL_NET = {"hidden_dim": 8, "log2_hashmap_size": 10, "num_levels": 4, "max_res": 32, "use_linear": False}


@pytest.fixture()
def model(torch_home):
    torch.manual_seed(0)
    config = NerfactoModelConfig(
        num_levels=4,
        log2_hashmap_size=10,
        max_res=64,
        hidden_dim=16,
        hidden_dim_color=16,
        appearance_embed_dim=4,
        num_proposal_samples_per_ray=(16, 8),
        num_nerf_samples_per_ray=8,
        proposal_net_args_list=[TINY_PROPOSAL_NET, {**TINY_PROPOSAL_NET, "max_res": 64}],
    )
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return config.setup(scene_box=SceneBox(aabb=aabb), num_train_data=4, metadata={}, device="cpu")


@pytest.fixture()
def camera():
    c2w = torch.tensor([[1.0, 0.0, 0.0, 0.1], [0.0, 1.0, 0.0, -0.1], [0.0, 0.0, 1.0, 2.5]])
    return Cameras(camera_to_worlds=c2w[None], fx=20.0, fy=20.0, cx=12.0, cy=10.0, width=24, height=20)


def parameter_gradients(model, render) -> dict:
    """Gradients of a fixed, pixel-dependent loss of the rendered image."""
    model.zero_grad()
    image = render()
    weights = torch.linspace(-1.0, 2.0, image.numel()).view_as(image)
    (image * weights).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys() and len(expected) > 0
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("chunk_size", [1000, 96, 77])
def test_chunked_gradient_equals_one_graph_gradient(model, camera, chunk_size):
    """Deterministic sampling (eval mode): chunking must not change the parameter gradients at all."""
    model.eval()
    one_graph = parameter_gradients(model, lambda: render_view(model, camera, 1, "full-graph"))
    chunked = parameter_gradients(model, lambda: render_view(model, camera, 1, "chunked", chunk_size))
    assert_same_gradients(one_graph, chunked)


def test_the_rerender_uses_the_forward_pass_samples(model, camera):
    """Training mode samples randomly: the backward re-render must draw exactly the forward pass's samples,
    so the two-pass gradient equals backpropagation through one graph of that very render."""
    model.train()
    model.proposal_sampler._step, model.proposal_sampler._steps_since_update = 100, 50  # an 'update' step
    rays = view_rays(camera, camera_index=2)
    torch.manual_seed(7)
    renderer = ChunkedRenderer(model, rays, chunk_size=64)

    def one_graph_of_the_same_samples():
        return torch.cat([renderer._render_chunk(i) for i in range(len(renderer.chunks))])

    reference = parameter_gradients(model, one_graph_of_the_same_samples)
    reference_image = one_graph_of_the_same_samples().detach()
    two_pass_image = []
    two_pass = parameter_gradients(model, lambda: two_pass_image.append(renderer.render()) or two_pass_image[0])
    torch.testing.assert_close(two_pass_image[0], reference_image)
    assert_same_gradients(reference, two_pass)
    assert model.proposal_sampler._steps_since_update == 0  # as after one one-graph render of an update step


def test_random_state_of_the_caller_is_untouched(model, camera):
    model.train()
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    render_view(model, camera, 0, "chunked", 50)
    assert not torch.equal(torch.rand(3), expected)  # seeds for the chunks are drawn from the caller's stream...
    torch.manual_seed(3)
    torch.randint(0, 2**62, (len(range(0, 480, 50)),))
    after_draw = torch.rand(3)
    torch.manual_seed(3)
    render_view(model, camera, 0, "chunked", 50)
    assert torch.equal(torch.rand(3), after_draw)  # ...and nothing else of it is consumed


def test_guidance_camera_has_the_requested_short_side(camera):
    scaled = guidance_camera(camera, 512)
    assert (int(scaled.height), int(scaled.width)) == (512, 614)
    assert (int(camera.height), int(camera.width)) == (20, 24)  # the training camera is not changed
