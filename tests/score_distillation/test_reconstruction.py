"""The released x0-reconstruction objective (Perturb-and-Revise with MVDream), each value against its formula at one
draw written out by hand."""

from __future__ import annotations

import pytest
import torch

from pds_nerfstudio.score_distillation.reconstruction import reconstruction_loss, reconstruction_target


def test_the_target_is_the_rescaled_guided_estimate_and_the_gradient_its_distance():
    torch.manual_seed(0)
    alphas = torch.linspace(0.999, 0.01, 1000)
    views, groups = 4, 2
    x_t = torch.randn(groups * views, 4, 3, 3)
    t = torch.tensor([600] * views + [200] * views)
    eps_c, eps_n = torch.randn_like(x_t), torch.randn_like(x_t)
    out = reconstruction_target(alphas, x_t, t, eps_c, eps_n, 50.0, views, 0.5)
    for g in range(groups):
        rows = slice(g * views, (g + 1) * views)
        a = alphas[t[g * views]]
        guided = eps_n[rows] + 50.0 * (eps_c[rows] - eps_n[rows])
        x0_g = (x_t[rows] - (1 - a).sqrt() * guided) / a.sqrt()
        x0_c = (x_t[rows] - (1 - a).sqrt() * eps_c[rows]) / a.sqrt()
        factor = (x0_c.std() + 1e-8) / (x0_g.std() + 1e-8)
        assert torch.allclose(out.factor[g], factor)
        assert torch.allclose(out.x0[rows], 0.5 * factor * x0_g + 0.5 * x0_g, atol=1e-5)
    assert out.factor[0] != out.factor[1]  # one factor per group, not over the batch
    z = torch.randn_like(x_t, requires_grad=True)
    reconstruction_loss(z, out.x0).backward()
    assert torch.allclose(z.grad, (z.detach() - out.x0) / (groups * views))
    with pytest.raises(ValueError, match="whole groups of 4 views"):
        reconstruction_target(alphas, x_t[:6], t[:6], eps_c[:6], eps_n[:6], 50.0, views, 0.5)
