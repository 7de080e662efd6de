"""Tests of pds_nerfstudio.score_distillation: the SDS, DDS and PDS latent gradients.

Each test checks one mathematical statement against an independent computation, in the notation of the
PDS paper (Koo et al., CVPR 2024, Eq. 6-14), with a = alphas_cumprod of the training schedule:

    x_t    = sqrt(a_t) x0 + sqrt(1 - a_t) eps_t,    x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps_prev
    x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t)
    mu     = c0 x0_hat + c1 x_t,    z = (x_prev - mu) / sigma_t
    PDS    = z_tgt - z_src = psi(t) (x0_tgt - x0_src) + chi(t) (eps_hat_tgt - eps_hat_src)

No model weights are needed: denoisers are a fixed random nonlinear function and, for the Figure 3 toy,
the analytic noise predictor of a two-blob Gaussian model (tests/toy2d.py).
"""

from __future__ import annotations

import math
from typing import List

import pytest
import torch
from diffusers import DDIMScheduler

from pds_nerfstudio.score_distillation.gradients import (
    DISTILLATION_METHODS,
    add_noise,
    dds_gradient,
    distillation_gradient,
    pds_gradient,
    pds_psi_chi,
    posterior_coefficients,
    sample_timesteps,
    sds_gradient,
    surrogate_loss,
)
from tests.toy2d import CLASS_A, CLASS_B, TwoBlobDiffusion, ddim_grid, edit_samples, sd_alphas_cumprod
from toy_world.models import SD15_SCHEDULER

COEFFICIENTS = ("official", "exact")
LATENT_SHAPE = (4, 6, 6)  # (C, H, W) of a tiny latent
COND_DIM = 8


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.5's scheduler, as the official PDS release builds it (500 inference steps)."""
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    scheduler.set_timesteps(500)
    return scheduler


@pytest.fixture(scope="module")
def grid(scheduler: DDIMScheduler) -> torch.Tensor:
    """The ascending inference grid 1, 3, ..., 999 (reversed(scheduler.timesteps), as in the release)."""
    return reversed(scheduler.timesteps)


@pytest.fixture(scope="module")
def alphas_cumprod(scheduler: DDIMScheduler) -> torch.Tensor:
    """a_t in float64, so that identities can be checked to ~1e-10."""
    return scheduler.alphas_cumprod.double()


class RandomNonlinearDenoiser:
    """A fixed random nonlinear eps(x_t, t, y): channel mixing, a timestep and a condition embedding.

        eps(x_t, t, y) = tanh(W x_t + sin(2 pi f t / 1000) + V y) + 0.1 x_t^2

    Nothing about the identities under test may depend on the denoiser being linear or t-independent.
    """

    def __init__(self, channels: int = LATENT_SHAPE[0], cond_dim: int = COND_DIM, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(channels, channels, generator=g, dtype=torch.float64) / math.sqrt(channels)
        self.cond_proj = torch.randn(cond_dim, channels, generator=g, dtype=torch.float64)
        self.freq = torch.randn(channels, generator=g, dtype=torch.float64)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("oc,bchw->bohw", self.mix.to(x_t), x_t)
        t_emb = torch.sin(2 * math.pi * t.to(x_t)[:, None] / 1000 * self.freq.to(x_t))
        c_emb = cond.to(x_t) @ self.cond_proj.to(x_t)
        return torch.tanh(mixed + (t_emb + c_emb)[:, :, None, None]) + 0.1 * x_t**2


class CountingDenoiser:
    """Wraps a denoiser and records every call's inputs."""

    def __init__(self, eps):
        self.eps = eps
        self.calls: List[tuple] = []

    def __call__(self, x_t, t, cond):
        self.calls.append((x_t.clone(), t.clone(), cond.clone()))
        return self.eps(x_t, t, cond)


def make_inputs(batch: int = 5, seed: int = 1, dtype=torch.float64):
    """Random latents x0_tgt, x0_src, conditions y_tgt, y_src and shared noises eps_t, eps_prev."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *LATENT_SHAPE)
    x0_tgt, x0_src, noise, noise_prev = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(4))
    cond_tgt, cond_src = (torch.randn(batch, COND_DIM, generator=g, dtype=dtype) for _ in range(2))
    return x0_tgt, x0_src, cond_tgt, cond_src, noise, noise_prev


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1)."""
    return values.double().view(-1, 1, 1, 1)


# A batch of timesteps over the whole range, each with the previous entry of the 500-step grid.
T = torch.tensor([3, 21, 101, 501, 999])
T_PREV = T - 2


# --------------------------------------------------------------------------------------------------
# 1. PDS through the stochastic latents equals its closed form psi(t) dx0 + chi(t) d eps_hat
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coefficients", COEFFICIENTS)
def test_pds_equals_psi_chi_closed_form(alphas_cumprod, coefficients):
    """z_tgt - z_src (Eq. 11, computed by pds_gradient) equals psi(t)(x0_tgt - x0_src) + chi(t)(eps_hat_tgt -
    eps_hat_src), with psi, chi from pds_psi_chi and eps_hat evaluated here at x_t = sqrt(a_t) x0 +
    sqrt(1 - a_t) eps_t for the shared eps_t: the noises cancel exactly, for any (nonlinear) denoiser."""
    eps = RandomNonlinearDenoiser()
    x0_tgt, x0_src, cond_tgt, cond_src, noise, noise_prev = make_inputs(batch=len(T))
    grad = pds_gradient(
        eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV, noise, noise_prev, coefficients
    )

    a_t = per_sample(alphas_cumprod[T])
    eps_hat_tgt = eps(a_t.sqrt() * x0_tgt + (1 - a_t).sqrt() * noise, T, cond_tgt)
    eps_hat_src = eps(a_t.sqrt() * x0_src + (1 - a_t).sqrt() * noise, T, cond_src)
    psi, chi = pds_psi_chi(alphas_cumprod, T, T_PREV, coefficients)
    expected = per_sample(psi) * (x0_tgt - x0_src) + per_sample(chi) * (eps_hat_tgt - eps_hat_src)

    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-9)
    assert grad.abs().max() > 0.1  # the comparison is not between two zeros


# --------------------------------------------------------------------------------------------------
# 2. Coefficients on the Stable Diffusion schedule
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t, expected_psi", [(21, 1.61), (101, 0.31), (501, 0.032)])
def test_official_psi_values_on_sd_schedule(scheduler, t, expected_psi):
    """With the release's coefficients psi(t) (the identity-preserving weight) is far from zero:
    about 1.61 at t=21, 0.31 at t=101 and 0.03 at t=501 (t_prev = t - 2 on the 500-step grid)."""
    psi, _ = pds_psi_chi(scheduler.alphas_cumprod, torch.tensor([t]), torch.tensor([t - 2]), "official")
    assert psi.item() == pytest.approx(expected_psi, abs=0.005)


def test_exact_psi_is_zero_on_whole_grid(scheduler, grid):
    """With the exact posterior of the strided step t -> t_prev, c0 + c1 sqrt(a_t) = sqrt(a_prev), so
    psi(t) = 0 for every (t, t_prev) of the grid, and chi(t) > 0: PDS is then a reweighted DDS."""
    psi, chi = pds_psi_chi(scheduler.alphas_cumprod, grid[1:], grid[:-1], "exact")
    assert psi.abs().max().item() < 1e-10
    assert (chi > 0).all()


def test_coefficient_modes_agree_for_a_one_step_grid(scheduler):
    """The two modes differ only by the stride: for t_prev = t - 1 the release's one-step beta_t is the
    exact one, both give the same (c0, c1, sigma_t), and psi vanishes in both."""
    t = torch.arange(1, 1000)
    official = posterior_coefficients(scheduler.alphas_cumprod, t, t - 1, "official")
    exact = posterior_coefficients(scheduler.alphas_cumprod, t, t - 1, "exact")
    for o, e in zip(official, exact):
        torch.testing.assert_close(o, e, rtol=1e-12, atol=0)
    psi, _ = pds_psi_chi(scheduler.alphas_cumprod, t, t - 1, "official")
    assert psi.abs().max().item() < 1e-10


def test_official_coefficients_match_release_formulas(scheduler, grid):
    """posterior_coefficients(..., "official") equals the official release's compute_posterior_mean and
    sigma_t, written from scheduler.betas / alphas / alphas_cumprod:
        c0 = sqrt(a_prev) beta_t / (1 - a_t),  c1 = sqrt(alpha_t) (1 - a_prev) / (1 - a_t),
        sigma_t = sqrt((1 - a_prev) / (1 - a_t) beta_t),  beta_t = scheduler.betas[t].
    Given the schedule's betas (as the guidance passes them) they agree to float64 round-off; from
    alphas_cumprod alone, beta_t = 1 - a_t / a_{t-1} is recovered to float32 round-off (~1e-4 relative)."""
    t, t_prev = grid[1:], grid[:-1]
    beta_t = scheduler.betas[t].double()
    alpha_t = scheduler.alphas[t].double()
    a_t = scheduler.alphas_cumprod[t].double()
    a_prev = scheduler.alphas_cumprod[t_prev].double()
    c0 = a_prev.sqrt() * beta_t / (1 - a_t)
    c1 = alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)
    sigma_t = ((1 - a_prev) / (1 - a_t) * beta_t).sqrt()

    exact = posterior_coefficients(scheduler.alphas_cumprod, t, t_prev, "official", betas=scheduler.betas)
    recovered = posterior_coefficients(scheduler.alphas_cumprod, t, t_prev, "official")
    for name, value, approx, expected in zip(("c0", "c1", "sigma_t"), exact, recovered, (c0, c1, sigma_t)):
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=0, msg=f"{name} differs from the release")
        torch.testing.assert_close(approx, expected, rtol=1e-3, atol=0, msg=f"{name} (from alphas_cumprod)")


def test_exact_coefficients_are_the_gaussian_posterior(alphas_cumprod, grid):
    """"exact" is q(x_prev | x_t, x0) derived by Gaussian conditioning, with no DDPM formula assumed:
    given x0, x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) e and x_t = sqrt(a_t / a_prev) x_prev + noise,
    so Cov(x_prev, x_t) = sqrt(a_t / a_prev)(1 - a_prev), Var(x_t) = 1 - a_t and
        mean = sqrt(a_prev) x0 + Cov / Var(x_t) (x_t - sqrt(a_t) x0),  var = (1 - a_prev) - Cov^2 / Var(x_t)."""
    t, t_prev = grid[1:], grid[:-1]
    a_t, a_prev = alphas_cumprod[t], alphas_cumprod[t_prev]
    cov = (a_t / a_prev).sqrt() * (1 - a_prev)
    c1 = cov / (1 - a_t)
    c0 = a_prev.sqrt() - c1 * a_t.sqrt()
    sigma_t = ((1 - a_prev) - cov**2 / (1 - a_t)).sqrt()

    got = posterior_coefficients(alphas_cumprod, t, t_prev, "exact")
    for value, expected in zip(got, (c0, c1, sigma_t)):
        torch.testing.assert_close(value, expected, rtol=1e-9, atol=0)


def test_unknown_coefficients_raise(alphas_cumprod):
    """An unknown coefficient mode is rejected with the allowed values named."""
    with pytest.raises(ValueError, match="official, exact"):
        posterior_coefficients(alphas_cumprod, T, T_PREV, "ddpm")


# --------------------------------------------------------------------------------------------------
# 3. Timestep sampling reproduces the official indexing
# --------------------------------------------------------------------------------------------------


def official_pds_timestep_sampling(timesteps, min_step_ratio, max_step_ratio, batch_size, generator):
    """PDS.pds_timestep_sampling of the official release (pds/pds.py), with a generator added."""
    min_step = 1 if min_step_ratio <= 0 else int(len(timesteps) * min_step_ratio)
    max_step = len(timesteps) if max_step_ratio >= 1 else int(len(timesteps) * max_step_ratio)
    max_step = max(max_step, min_step + 1)
    idx = torch.randint(min_step, max_step, [batch_size], dtype=torch.long, device="cpu", generator=generator)
    return timesteps[idx].cpu(), timesteps[idx - 1].cpu()


def test_sample_timesteps_matches_official_release(grid):
    """With ratios (0.02, 0.98) on the 500-step grid the index is randint(10, 490): t covers exactly
    grid[10] = 21 ... grid[489] = 979 and t_prev = grid[idx - 1] = t - 2; the draws are identical to the
    release's for the same random stream."""
    t, t_prev = sample_timesteps(grid, 0.02, 0.98, 20000, generator=torch.Generator().manual_seed(0))
    t_ref, t_prev_ref = official_pds_timestep_sampling(grid, 0.02, 0.98, 20000, torch.Generator().manual_seed(0))

    assert torch.equal(t, t_ref) and torch.equal(t_prev, t_prev_ref)
    assert t.min().item() == grid[10].item() == 21
    assert t.max().item() == grid[489].item() == 979
    assert torch.equal(t_prev, t - 2)


@pytest.mark.parametrize(
    "ratios, lowest, highest",
    [
        ((0.0, 1.0), 1, 9),  # ratio 0 -> index 1 (so that grid[idx - 1] exists), ratio 1 -> up to n - 1
        ((0.0, 0.0), 1, 1),  # an empty range is widened to one index
        ((0.5, 0.5), 5, 5),
        ((1.0, 1.0), 9, 9),  # the release indexes past the end here; the module takes the last entry
    ],
)
def test_sample_timesteps_edge_ratios(ratios, lowest, highest):
    """Edge ratios follow the release: index range [1 if min <= 0 else int(n min), n if max >= 1 else
    int(n max)), widened to at least one index, and t_prev is always the previous grid entry."""
    grid = torch.arange(10) * 100 + 1  # n = 10: 1, 101, ..., 901
    t, t_prev = sample_timesteps(grid, *ratios, 2000, generator=torch.Generator().manual_seed(0))
    assert t.min().item() == grid[lowest].item() and t.max().item() == grid[highest].item()
    assert torch.equal(t_prev, t - 100)
    if ratios != (1.0, 1.0):
        t_ref, _ = official_pds_timestep_sampling(grid, *ratios, 2000, torch.Generator().manual_seed(0))
        assert torch.equal(t, t_ref)


@pytest.mark.parametrize("ratios", [(-0.1, 0.5), (0.6, 0.5), (0.5, 1.1)])
def test_sample_timesteps_rejects_invalid_ranges(grid, ratios):
    """A ratio range outside 0 <= min <= max <= 1 raises ValueError."""
    with pytest.raises(ValueError):
        sample_timesteps(grid, *ratios, 4)


# --------------------------------------------------------------------------------------------------
# 4. SDS and DDS against their papers, and DDS as exact-coefficient PDS
# --------------------------------------------------------------------------------------------------


def test_sds_matches_dreamfusion(alphas_cumprod):
    """SDS (DreamFusion Eq. 3) = w(t) (eps_hat(x_t, y) - eps), w(t) = 1 - a_t; also through
    distillation_gradient, whose first draw from the generator is eps."""
    eps = RandomNonlinearDenoiser()
    x0_tgt, x0_src, cond_tgt, cond_src, noise, _ = make_inputs(batch=len(T))
    a_t = per_sample(alphas_cumprod[T])
    expected = (1 - a_t) * (eps(a_t.sqrt() * x0_tgt + (1 - a_t).sqrt() * noise, T, cond_tgt) - noise)

    torch.testing.assert_close(sds_gradient(eps, alphas_cumprod, x0_tgt, cond_tgt, T, noise), expected)

    out = distillation_gradient(
        "sds", eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV, torch.Generator().manual_seed(7)
    )
    drawn = torch.randn(x0_tgt.shape, generator=torch.Generator().manual_seed(7)).double()
    expected = (1 - a_t) * (eps(a_t.sqrt() * x0_tgt + (1 - a_t).sqrt() * drawn, T, cond_tgt) - drawn)
    torch.testing.assert_close(out.grad, expected)
    assert torch.equal(out.t, T)


@pytest.mark.parametrize("method", ["sds", "dds", "pds"])
def test_the_targets_one_step_estimate_is_reported(alphas_cumprod, method):
    """x0_hat_tgt = (x_t - sqrt(1 - a_t) eps_hat(x_t, y_tgt)) / sqrt(a_t) at the target's x_t (Eq. 9), for every method."""
    eps = RandomNonlinearDenoiser()
    x0_tgt, x0_src, cond_tgt, cond_src, _, _ = make_inputs(batch=len(T))
    out = distillation_gradient(
        method, eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV, torch.Generator().manual_seed(7)
    )
    drawn = torch.randn(x0_tgt.shape, generator=torch.Generator().manual_seed(7)).double()  # eps_t: the first draw
    a_t = per_sample(alphas_cumprod[T])
    x_t = a_t.sqrt() * x0_tgt + (1 - a_t).sqrt() * drawn
    torch.testing.assert_close(out.x0_hat_tgt, (x_t - (1 - a_t).sqrt() * eps(x_t, T, cond_tgt)) / a_t.sqrt())


def test_dds_matches_delta_denoising_score(alphas_cumprod):
    """DDS (Hertz et al. 2023) = eps_hat(x_t^tgt, y_tgt) - eps_hat(x_t^src, y_src), x_t of both from the
    same eps_t."""
    eps = RandomNonlinearDenoiser()
    x0_tgt, x0_src, cond_tgt, cond_src, noise, _ = make_inputs(batch=len(T))
    a_t = per_sample(alphas_cumprod[T])
    expected = eps(a_t.sqrt() * x0_tgt + (1 - a_t).sqrt() * noise, T, cond_tgt) - eps(
        a_t.sqrt() * x0_src + (1 - a_t).sqrt() * noise, T, cond_src
    )
    grad = dds_gradient(eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, noise)
    torch.testing.assert_close(grad, expected)


def test_exact_pds_is_chi_weighted_dds(alphas_cumprod):
    """Since psi = 0 for exact coefficients, PDS = chi(t) DDS for the same eps_t, whatever the shared
    eps_prev is (it cancels in z_tgt - z_src). Checked with explicit noises and through
    distillation_gradient with equally seeded generators (both draw eps_t first)."""
    eps = RandomNonlinearDenoiser()
    x0_tgt, x0_src, cond_tgt, cond_src, noise, noise_prev = make_inputs(batch=len(T))
    _, chi = pds_psi_chi(alphas_cumprod, T, T_PREV, "exact")
    dds = dds_gradient(eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, noise)
    for eps_prev in (noise_prev, -3 * noise_prev):
        pds = pds_gradient(eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV, noise, eps_prev, "exact")
        torch.testing.assert_close(pds, per_sample(chi) * dds, rtol=1e-9, atol=1e-9)

    args = (eps, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV)
    pds = distillation_gradient("pds", *args, torch.Generator().manual_seed(3), coefficients="exact").grad
    dds = distillation_gradient("dds", *args, torch.Generator().manual_seed(3)).grad
    torch.testing.assert_close(pds, per_sample(chi) * dds, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# 5. Robustness and the surrogate loss
# --------------------------------------------------------------------------------------------------


class PoisonedDenoiser:
    """The random denoiser, with NaN / +inf / -inf written at three fixed entries of the last B rows
    of its output (the target half for PDS/DDS, the whole batch for SDS)."""

    ENTRIES = ((0, 0, 0), (1, 2, 3), (2, 5, 1))

    def __init__(self, batch: int):
        self.eps = RandomNonlinearDenoiser()
        self.batch = batch

    def __call__(self, x_t, t, cond):
        out = self.eps(x_t, t, cond).clone()
        for entry, value in zip(self.ENTRIES, (float("nan"), float("inf"), float("-inf"))):
            out[(slice(-self.batch, None), *entry)] = value
        return out


@pytest.mark.parametrize("method", DISTILLATION_METHODS)
def test_non_finite_predictions_give_zero_gradient_entries(alphas_cumprod, method):
    """NaN or inf in eps_hat yields 0 at exactly those entries and the clean value everywhere else."""
    x0_tgt, x0_src, cond_tgt, cond_src, _, _ = make_inputs(batch=len(T))
    args = (alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV)
    poisoned = distillation_gradient(method, PoisonedDenoiser(len(T)), *args, torch.Generator().manual_seed(0)).grad
    clean = distillation_gradient(method, RandomNonlinearDenoiser(), *args, torch.Generator().manual_seed(0)).grad

    assert torch.isfinite(poisoned).all()
    expected = clean.clone()
    for entry in PoisonedDenoiser.ENTRIES:
        expected[(slice(None), *entry)] = 0
    torch.testing.assert_close(poisoned, expected)


def test_unknown_method_raises(alphas_cumprod):
    """An unknown distillation method is rejected with the allowed values listed."""
    x0_tgt, x0_src, cond_tgt, cond_src, _, _ = make_inputs(batch=len(T))
    with pytest.raises(ValueError, match="pds, sds, dds"):
        distillation_gradient(
            "vsd", RandomNonlinearDenoiser(), alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV
        )


@pytest.mark.parametrize(
    "reduction, batch, scale",
    [
        pytest.param("sum", 1, lambda numel: 1.0, id="sum"),  # d/dx0 of 0.5 ||x0 - (x0 - g)||^2 = g
        pytest.param("mean", 1, lambda numel: 1.0 / numel, id="mean"),  # the release's default reduction
        pytest.param("sum", 2, lambda numel: 1.0 / 2, id="sum-batch2"),  # the released PnR code divides by B
        pytest.param("mean", 2, lambda numel: 1.0 / (2 * numel), id="mean-batch2"),  # each view weighs 1 / B
    ],
)
def test_surrogate_loss_gradient(reduction, batch, scale):
    """surrogate_loss(x0, g) backpropagates g into x0, scaled by 1 / (elements of a view) for "mean", and by 1 / B
    for a batch of B views: the mean over views, whatever the reduction."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *LATENT_SHAPE, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(batch, *LATENT_SHAPE, generator=g, dtype=torch.float64)
    surrogate_loss(x0, grad, reduction).backward()
    numel = math.prod(LATENT_SHAPE)
    torch.testing.assert_close(x0.grad, grad * scale(numel))


# --------------------------------------------------------------------------------------------------
# 6. One denoiser call, source and target stacked
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", DISTILLATION_METHODS)
def test_one_denoiser_call_with_stacked_batch(alphas_cumprod, method):
    """Every gradient costs ONE denoiser call. For PDS and DDS its batch is [x_t^src; x_t^tgt] with
    t repeated and conditions [y_src; y_tgt] (both x_t from the same eps_t); SDS denoises the target only."""
    x0_tgt, x0_src, cond_tgt, cond_src, _, _ = make_inputs(batch=len(T))
    counting = CountingDenoiser(RandomNonlinearDenoiser())
    generator = torch.Generator().manual_seed(0)
    distillation_gradient(method, counting, alphas_cumprod, x0_tgt, x0_src, cond_tgt, cond_src, T, T_PREV, generator)
    assert len(counting.calls) == 1
    x_t, t, cond = counting.calls[0]

    noise = torch.randn(x0_tgt.shape, generator=torch.Generator().manual_seed(0)).double()
    xt_tgt = add_noise(alphas_cumprod, x0_tgt, noise, T)
    if method == "sds":
        torch.testing.assert_close(x_t, xt_tgt)
        assert torch.equal(t, T) and torch.equal(cond, cond_tgt)
    else:
        xt_src = add_noise(alphas_cumprod, x0_src, noise, T)
        torch.testing.assert_close(x_t, torch.cat([xt_src, xt_tgt]))
        assert torch.equal(t, torch.cat([T, T])) and torch.equal(cond, torch.cat([cond_src, cond_tgt]))


# --------------------------------------------------------------------------------------------------
# 7. The 2D toy of Figure 3: psi(t) is what preserves identity
# --------------------------------------------------------------------------------------------------


def test_toy_schedule_and_grid_are_stable_diffusions(scheduler, grid):
    """The toy uses SD's alphas_cumprod and the 500-step grid of DDIMScheduler."""
    torch.testing.assert_close(sd_alphas_cumprod().float(), scheduler.alphas_cumprod, rtol=1e-5, atol=0)
    assert torch.equal(ddim_grid(500), grid)


def test_toy_noise_predictor_is_exact():
    """The analytic predictor is the exact E[eps | x_t] (Tweedie): eps(x_t) = -sqrt(1 - a_t) grad log p_t(x_t)
    for the two-blob mixture (log p_t by autograd), and likewise for each class's single Gaussian;
    guidance is uncond + w (cond - uncond)."""
    model = TwoBlobDiffusion(sd_alphas_cumprod(), guidance_scale=3.0)
    g = torch.Generator().manual_seed(0)
    x_t = (2 * torch.randn(64, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = torch.randint(1, 1000, (64,), generator=g)
    sqrt_one_minus_a = (1 - model.alphas_cumprod[t]).sqrt().unsqueeze(-1)

    (score,) = torch.autograd.grad(model.log_prob_unconditional(x_t, t).sum(), x_t)
    torch.testing.assert_close(model.eps_unconditional(x_t, t), -sqrt_one_minus_a * score)

    for cls in (CLASS_A, CLASS_B):
        single = TwoBlobDiffusion(model.alphas_cumprod, centres=model.centres[cls : cls + 1])
        (score,) = torch.autograd.grad(single.log_prob_unconditional(x_t, t).sum(), x_t)
        cond = torch.full((64,), cls)
        torch.testing.assert_close(model.eps_conditional(x_t, t, cond), -sqrt_one_minus_a * score)

    x_t = x_t.detach()
    uncond, cond_b = model.eps_unconditional(x_t, t), model.eps_conditional(x_t, t, torch.full((64,), CLASS_B))
    torch.testing.assert_close(model(x_t, t, torch.full((64,), CLASS_B)), uncond + 3.0 * (cond_b - uncond))


TOY_GUIDANCE_SCALE = 3.0
TOY_LEARNING_RATE = 0.05
TOY_STEPS = 400
TOY_SAMPLES = 128


@pytest.fixture(scope="module")
def toy_results():
    """Mean final x of class-A samples edited towards B by each method (guidance 3, lr 0.05, 400 steps)."""
    model = TwoBlobDiffusion(sd_alphas_cumprod(), guidance_scale=TOY_GUIDANCE_SCALE, std=0.15)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add contention
    try:
        results = {}
        for name, method, coefficients in [
            ("pds-official", "pds", "official"),
            ("pds-exact", "pds", "exact"),
            ("dds", "dds", "official"),
            ("sds", "sds", "official"),
        ]:
            results[name] = edit_samples(
                model, method, coefficients, TOY_SAMPLES, TOY_STEPS, TOY_LEARNING_RATE, seed=0
            )[1]
    finally:
        torch.set_num_threads(threads)
    return results


def test_toy_official_pds_stops_just_past_the_class_boundary(toy_results):
    """Figure 3: with the release's coefficients PDS carries the class-A samples (around x = -1) just across
    the class boundary x = 0 and stops well short of B's centre x = +1 (observed mean x ~ 0.53)."""
    x = toy_results["pds-official"]
    assert 0.0 < x[:, 0].mean().item() < 0.7
    assert (x[:, 0] > 0).float().mean().item() >= 0.95  # (nearly) every sample crossed the boundary
    assert abs(x[:, 1].mean().item()) < 0.05  # and was not pushed sideways


def test_toy_without_psi_pds_travels_as_far_as_sds_and_dds(toy_results):
    """With exact coefficients (psi = 0) PDS is a reweighted DDS and the samples travel as far as SDS and DDS
    take them, past B's centre (observed mean x: exact PDS ~1.66, DDS ~1.88, SDS ~1.80 vs official ~0.53):
    the identity preservation lives in psi(t)."""
    official = toy_results["pds-official"][:, 0].mean().item()
    travelled = {name: toy_results[name][:, 0].mean().item() for name in ("pds-exact", "dds", "sds")}
    for name, mean_x in travelled.items():
        assert mean_x > 1.0, f"{name} stopped at mean x = {mean_x:.3f}"
        assert mean_x > official + 0.8, f"{name} ({mean_x:.3f}) not clearly past official PDS ({official:.3f})"
    assert travelled["pds-exact"] > 0.8 * min(travelled["dds"], travelled["sds"])


def test_the_method_names_are_the_gradient_tables_rows():
    """A config's ``--pipeline.guidance.method`` choices (the Literal tyro lists) are exactly the table's names."""
    from typing import get_args

    from pds_nerfstudio.score_distillation.gradients import GRADIENTS, DistillationMethod

    assert get_args(DistillationMethod) == tuple(GRADIENTS) == DISTILLATION_METHODS
