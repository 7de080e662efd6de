"""The CPU rasteriser against gsplat's compositing rule, written out one pixel and one Gaussian at a time."""

from __future__ import annotations

import math

import pytest
import torch

from pds_nerfstudio.scenes.splat_cpu import rasterize_on_cpu, splatfacto_on_cpu


def _scene(num: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(num, 3, generator=generator) * 0.4 + torch.tensor([0.0, 0.0, 3.0])
    means[0, 2] = -1.0  # behind the camera: culled
    quats = torch.randn(num, 4, generator=generator)
    scales = torch.rand(num, 3, generator=generator) * 0.2 + 0.02
    opacities = torch.rand(num, generator=generator) * 0.9 + 0.05
    colors = torch.randn(num, 16, 3, generator=generator) * 0.5  # SH degree 3
    viewmat = torch.eye(4)[None]
    K = torch.tensor([[[30.0, 0.0, 20.0], [0.0, 30.0, 14.0], [0.0, 0.0, 1.0]]])
    return means, quats, scales, opacities, colors, viewmat, K


def _reference(means2d, conics, opacities, colors, depths, radii, width, height, tile=16):
    """gsplat's forward kernel, transcribed: per pixel, the Gaussians of its tile front to back."""
    image = torch.zeros(height, width, colors.shape[-1], dtype=torch.float64)
    alpha_image = torch.zeros(height, width, 1, dtype=torch.float64)
    order = sorted(range(len(depths)), key=lambda i: float(depths[i]))
    for y in range(height):
        for x in range(width):
            transmittance, colour = 1.0, torch.zeros(colors.shape[-1], dtype=torch.float64)
            for i in order:
                if radii[i] <= 0:
                    continue
                r, (mx, my) = float(radii[i]), means2d[i].tolist()
                tx0, tx1 = math.floor((mx - r) / tile), math.ceil((mx + r) / tile)
                ty0, ty1 = math.floor((my - r) / tile), math.ceil((my + r) / tile)
                if not (tx0 <= x // tile < tx1 and ty0 <= y // tile < ty1):
                    continue
                dx, dy = mx - (x + 0.5), my - (y + 0.5)
                a, b, c = conics[i].tolist()
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, float(opacities[i]) * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                next_t = transmittance * (1 - alpha)
                if next_t <= 1e-4:
                    break
                colour += alpha * transmittance * colors[i].double()
                transmittance = next_t
            image[y, x], alpha_image[y, x, 0] = colour, 1 - transmittance
    return image, alpha_image


def test_cpu_rasteriser_matches_gsplats_compositing_rule():
    means, quats, scales, opacities, colors, viewmat, K = _scene()
    width, height = 40, 28  # not multiples of the 16-pixel tile
    render, alpha, info = rasterize_on_cpu(means, quats, scales, opacities, colors, viewmat, K, width, height, sh_degree=3)
    assert render.shape == (1, height, width, 3) and alpha.shape == (1, height, width, 1)
    assert info["radii"][0, 0] == 0  # behind the camera
    from gsplat.cuda._torch_impl import _spherical_harmonics

    centre = torch.inverse(viewmat)[0, :3, 3]
    rgb = torch.clamp_min(_spherical_harmonics(3, means - centre, colors) + 0.5, 0.0)
    expected, expected_alpha = _reference(
        info["means2d"][0].detach(), info["conics"][0].detach(), opacities, rgb.detach(), info["depths"][0].detach(),
        info["radii"][0], width, height,
    )  # fmt: skip
    assert (alpha[0].double() - expected_alpha).abs().max() < 1e-5
    assert (render[0].double() - expected).abs().max() < 1e-5
    assert expected_alpha.max() > 0.5  # the scene covers part of the view


def test_one_gaussian_at_a_pixel_has_the_closed_form_value():
    mean = torch.tensor([[0.0, 0.0, 2.0]])
    render, alpha, _ = rasterize_on_cpu(
        mean, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.tensor([0.8]), torch.tensor([[0.2, 0.4, 0.6]]),
        torch.eye(4)[None], torch.tensor([[[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]]), 16, 16,
    )  # fmt: skip
    variance = (20 * 0.1 / 2) ** 2 + 0.3  # projected variance plus gsplat's 0.3 px blur
    expected = 0.8 * math.exp(-0.5 * (0.5**2 + 0.5**2) / variance)  # pixel (7, 7): centre 0.5 px from the mean
    assert alpha[0, 7, 7, 0].item() == pytest.approx(expected, rel=1e-5)
    assert render[0, 7, 7].tolist() == pytest.approx([expected * v for v in (0.2, 0.4, 0.6)], rel=1e-5)


def test_gradients_match_finite_differences():
    means, quats, scales, opacities, colors, viewmat, K = (t.double() for t in _scene(num=5, seed=3))
    weights = torch.randn(1, 12, 14, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss(means, scales, opacities, colors):
        render, _, _ = rasterize_on_cpu(means, quats, scales, opacities, colors, viewmat, K, 14, 12, sh_degree=1, pixel_chunk=50)
        return (render * weights).sum()

    inputs = [t.clone().requires_grad_(True) for t in (means, scales, opacities, colors)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_absgrad_sums_the_absolute_gradient_of_each_pixel():
    """gsplat's absgrad: for each Gaussian, sum over pixels of |d loss_pixel / d means2d|, here pixel by pixel by hand."""
    means, quats, scales, opacities, colors, viewmat, K = (t.double() for t in _scene(num=12, seed=2))
    means.requires_grad_(True)
    width, height = 24, 18
    weights = torch.randn(1, height, width, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    def rendered(absgrad: bool):
        render, _, info = rasterize_on_cpu(means, quats, scales, opacities, colors[:, 0].abs(), viewmat, K, width, height,
                                           absgrad=absgrad, pixel_chunk=100)  # fmt: skip
        info["means2d"].retain_grad()
        return (render * weights).sum(-1)[0], info["means2d"]

    per_pixel, means2d = rendered(absgrad=False)
    by_hand = torch.zeros_like(means2d)
    for y in range(height):
        for x in range(width):
            (grad,) = torch.autograd.grad(per_pixel[y, x], means2d, retain_graph=True)
            by_hand += grad.abs()
    per_pixel, means2d = rendered(absgrad=True)
    per_pixel.sum().backward()
    assert means2d.absgrad.abs().sum() > 0
    assert torch.allclose(means2d.absgrad, by_hand, atol=1e-12)
    assert not torch.allclose(means2d.grad.abs(), by_hand)  # the plain gradient sums before the abs


def test_splatfacto_on_cpu_patches_only_while_inside_and_nests():
    import nerfstudio.models.splatfacto as splatfacto

    original = splatfacto.rasterization
    with splatfacto_on_cpu():
        with splatfacto_on_cpu():
            assert splatfacto.rasterization is rasterize_on_cpu
            tensor = torch.zeros(1)
            assert tensor.cuda() is tensor
        assert splatfacto.rasterization is rasterize_on_cpu
    assert splatfacto.rasterization is original
