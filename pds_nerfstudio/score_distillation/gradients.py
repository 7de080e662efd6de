"""Score-distillation gradients in latent space: SDS, DDS and PDS.

Pure tensor math: no diffusers and no nerfstudio imports, so any denoiser can drive it (Stable
Diffusion through :mod:`pds_nerfstudio.priors.guidance`, or a toy 2D model in the tests).

A denoiser is a callable ``eps(x_t, t, cond) -> eps_hat`` that returns the (classifier-free guided)
noise prediction for a batch; ``t`` and ``cond`` are aligned with the batch of ``x_t``. Every
gradient below calls it once, with source and target stacked in one batch.

Notation follows the PDS paper (Koo et al., CVPR 2024, Eq. 6-14), with ``a`` the training schedule's
``alphas_cumprod``:

    x_t    = sqrt(a_t) x0 + sqrt(1 - a_t) eps_t                      (forward process)
    x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t)               (one-step denoised estimate)
    mu     = c0 x0_hat + c1 x_t                                      (posterior mean, Eq. 10)
    z      = (x_prev - mu) / sigma_t                                 (stochastic latent, Eq. 11)
    PDS    = z_tgt - z_src = psi(t) (x0_tgt - x0_src) + chi(t) (eps_hat_tgt - eps_hat_src)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]
"""Where random draws come from: torch's global generator (None), one generator, or one per batch element."""
"""``eps(x_t, t, cond) -> eps_hat``: a batched noise predictor (classifier-free guidance applied)."""

DistillationMethod = Literal["pds", "sds", "dds"]
"""The names of :data:`GRADIENTS`, as the type of a config field (tyro lists them in ``--help``)."""

PosteriorCoefficients = Literal["official", "exact"]
POSTERIOR_COEFFICIENTS: Tuple[str, ...] = ("official", "exact")


@dataclass
class DistillationOutput:
    """Result of one distillation step."""

    grad: Tensor
    """Gradient of the distillation objective with respect to the target latent x0_tgt."""
    t: Tensor
    """Timestep of each batch element."""
    x0_hat_tgt: Optional[Tensor] = None
    """The target's one-step estimate x0_hat(x_t^tgt, eps_hat_tgt) at t (Eq. 9): what the target denoises to."""


def check_choice(name: str, value: str, allowed: Tuple[str, ...]) -> None:
    """Raise a ValueError naming the allowed values when ``value`` is not one of them."""
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; choose one of: {', '.join(allowed)}.")


def sample_timesteps(
    grid: Tensor,
    min_ratio: float,
    max_ratio: float,
    batch_size: int,
    generator: Generators = None,
) -> Tuple[Tensor, Tensor]:
    """Draw (t, t_prev) on an inference grid, as the official PDS release does.

    Args:
        grid: the inference timesteps in ascending order (e.g. 1, 3, ..., 999 for 500 DDIM steps).
        min_ratio, max_ratio: the range of grid positions, as fractions of the grid length.
        batch_size: how many pairs to draw.
        generator: optional random generator, or one per batch element.

    Returns:
        t and t_prev, the grid entry before t (``t - 1000 / len(grid)`` on a uniform grid).
    """
    n = len(grid)
    if not 0.0 <= min_ratio <= max_ratio <= 1.0:
        raise ValueError(f"t ratio range must satisfy 0 <= min <= max <= 1, got ({min_ratio}, {max_ratio}).")
    min_index = 1 if min_ratio <= 0 else min(int(n * min_ratio), n - 1)  # ratio 1: the last entry
    max_index = n if max_ratio >= 1 else int(n * max_ratio)
    max_index = max(max_index, min_index + 1)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators for a batch of {batch_size}")
        index = torch.cat([torch.randint(min_index, max_index, (1,), generator=g, device="cpu") for g in generator])
    else:
        index = torch.randint(min_index, max_index, (batch_size,), generator=generator, device="cpu")
    grid = grid.cpu().long()
    return grid[index], grid[index - 1]


def _per_sample(values: Tensor, ref: Tensor) -> Tensor:
    """Shape a per-batch-element vector to broadcast against ``ref``."""
    return values.to(device=ref.device, dtype=ref.dtype).view(-1, *([1] * (ref.dim() - 1)))


def add_noise(alphas_cumprod: Tensor, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Forward process q(x_t | x0): sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
    a_t = _per_sample(alphas_cumprod[t.cpu()], x0)
    return a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise


def posterior_coefficients(
    alphas_cumprod: Tensor,
    t: Tensor,
    t_prev: Tensor,
    coefficients: PosteriorCoefficients = "official",
    betas: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Coefficients (c0, c1, sigma_t) of the posterior q(x_prev | x_t, x0) = N(c0 x0 + c1 x_t, sigma_t^2).

    ``official`` reproduces the official PDS release: t_prev is the previous grid entry, but beta_t is
    the ONE-step beta 1 - a_t / a_{t-1}. This leaves the identity term psi(t) non-zero.
    ``exact`` uses the strided step t -> t_prev (beta = 1 - a_t / a_prev), the true posterior; then
    psi(t) is exactly zero and PDS reduces to a reweighted DDS.

    ``betas`` are the training schedule's one-step betas (``scheduler.betas``), which the official
    coefficients read; without them they are recovered from ``alphas_cumprod`` (to about 1e-4).
    """
    check_choice("posterior coefficients", coefficients, POSTERIOR_COEFFICIENTS)
    a = alphas_cumprod.double().cpu()
    t, t_prev = t.cpu().long(), t_prev.cpu().long()
    a_t, a_prev = a[t], a[t_prev]
    if coefficients == "official" and betas is not None:  # as the release reads scheduler.betas and .alphas
        beta_t = betas.cpu()[t].double()
        alpha_t = (1 - betas.cpu()[t]).double()
    else:
        if coefficients == "official":
            alpha_t = a_t / torch.where(t > 0, a[(t - 1).clamp(min=0)], torch.ones_like(a_t))
        else:
            alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
    c0 = a_prev.sqrt() * beta_t / (1 - a_t)
    c1 = alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)
    sigma_t = ((1 - a_prev) / (1 - a_t) * beta_t).sqrt()
    return c0, c1, sigma_t


def pds_psi_chi(
    alphas_cumprod: Tensor,
    t: Tensor,
    t_prev: Tensor,
    coefficients: PosteriorCoefficients = "official",
    betas: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Closed-form weights of PDS = psi(t) (x0_tgt - x0_src) + chi(t) (eps_hat_tgt - eps_hat_src).

    From z = (x_prev - c0 x0_hat - c1 x_t) / sigma_t with shared noises:
        psi = (sqrt(a_prev) - c0 - c1 sqrt(a_t)) / sigma_t,   chi = c0 sqrt(1 - a_t) / (sqrt(a_t) sigma_t).
    """
    c0, c1, sigma_t = posterior_coefficients(alphas_cumprod, t, t_prev, coefficients, betas)
    a = alphas_cumprod.double().cpu()
    a_t, a_prev = a[t.cpu().long()], a[t_prev.cpu().long()]
    psi = (a_prev.sqrt() - c0 - c1 * a_t.sqrt()) / sigma_t
    chi = c0 * (1 - a_t).sqrt() / (a_t.sqrt() * sigma_t)
    return psi, chi


def one_step_estimate(alphas_cumprod: Tensor, x_t: Tensor, eps_hat: Tensor, t: Tensor) -> Tensor:
    """x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t): Tweedie's one-step estimate (PDS paper Eq. 9)."""
    a_t = _per_sample(alphas_cumprod[t.cpu()], x_t)
    return (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()


def _finite(grad: Tensor) -> Tensor:
    """Zero every non-finite entry: one bad latent must not poison the field's optimizer state."""
    return torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))


def _denoise_pair(
    eps: Denoiser, xt_src: Tensor, xt_tgt: Tensor, t: Tensor, cond_src: Tensor, cond_tgt: Tensor
) -> Tuple[Tensor, Tensor]:
    """Noise predictions for source and target in ONE denoiser call."""
    eps_hat = eps(torch.cat([xt_src, xt_tgt]), torch.cat([t, t]), torch.cat([cond_src, cond_tgt]))
    return eps_hat.chunk(2)


def sds_gradient(
    eps: Denoiser,
    alphas_cumprod: Tensor,
    x0_tgt: Tensor,
    cond_tgt: Tensor,
    t: Tensor,
    noise: Tensor,
    record: Optional[Dict[str, Tensor]] = None,
) -> Tensor:
    """Score Distillation Sampling (DreamFusion Eq. 3): w(t) (eps_hat(x_t, y_tgt) - eps), w = 1 - a_t.

    ``record``, if given, receives the target's one-step estimate as ``x0_hat_tgt``."""
    x_t = add_noise(alphas_cumprod, x0_tgt, noise, t)
    eps_hat = eps(x_t, t, cond_tgt)
    if record is not None:
        record["x0_hat_tgt"] = one_step_estimate(alphas_cumprod, x_t, eps_hat, t)
    weight = 1 - _per_sample(alphas_cumprod[t.cpu()], x0_tgt)
    return _finite(weight * (eps_hat - noise))


def dds_gradient(
    eps: Denoiser,
    alphas_cumprod: Tensor,
    x0_tgt: Tensor,
    x0_src: Tensor,
    cond_tgt: Tensor,
    cond_src: Tensor,
    t: Tensor,
    noise: Tensor,
    record: Optional[Dict[str, Tensor]] = None,
) -> Tensor:
    """Delta Denoising Score (Hertz et al. 2023, Eq. 6): eps_hat(x_t^tgt, y_tgt) - eps_hat(x_t^src, y_src), shared noise."""
    xt_tgt = add_noise(alphas_cumprod, x0_tgt, noise, t)
    xt_src = add_noise(alphas_cumprod, x0_src, noise, t)
    eps_src, eps_tgt = _denoise_pair(eps, xt_src, xt_tgt, t, cond_src, cond_tgt)
    if record is not None:
        record["x0_hat_tgt"] = one_step_estimate(alphas_cumprod, xt_tgt, eps_tgt, t)
    return _finite(eps_tgt - eps_src)


def pds_gradient(
    eps: Denoiser,
    alphas_cumprod: Tensor,
    x0_tgt: Tensor,
    x0_src: Tensor,
    cond_tgt: Tensor,
    cond_src: Tensor,
    t: Tensor,
    t_prev: Tensor,
    noise: Tensor,
    noise_prev: Tensor,
    coefficients: PosteriorCoefficients = "official",
    betas: Optional[Tensor] = None,
    record: Optional[Dict[str, Tensor]] = None,
) -> Tensor:
    """Posterior Distillation Sampling (PDS paper Eq. 13): z_tgt - z_src through the stochastic latents.

    ``noise`` (eps_t) and ``noise_prev`` (eps_prev) are independent and shared by source and target.
    ``record``, if given, receives the target's one-step estimate as ``x0_hat_tgt``.
    """
    coefficients_t = posterior_coefficients(alphas_cumprod, t, t_prev, coefficients, betas)
    c0, c1, sigma_t = (_per_sample(c, x0_tgt) for c in coefficients_t)

    def stochastic_latent(x0: Tensor, x_t: Tensor, x0_hat: Tensor) -> Tensor:
        x_prev = add_noise(alphas_cumprod, x0, noise_prev, t_prev)  # q(x_prev | x0), Eq. 6
        mu = c0 * x0_hat + c1 * x_t  # posterior mean, Eq. 10
        return (x_prev - mu) / sigma_t  # stochastic latent, Eq. 11

    xt_tgt = add_noise(alphas_cumprod, x0_tgt, noise, t)
    xt_src = add_noise(alphas_cumprod, x0_src, noise, t)
    eps_src, eps_tgt = _denoise_pair(eps, xt_src, xt_tgt, t, cond_src, cond_tgt)
    x0_hat_tgt = one_step_estimate(alphas_cumprod, xt_tgt, eps_tgt, t)  # Eq. 9
    x0_hat_src = one_step_estimate(alphas_cumprod, xt_src, eps_src, t)
    if record is not None:
        record["x0_hat_tgt"] = x0_hat_tgt
    return _finite(stochastic_latent(x0_tgt, xt_tgt, x0_hat_tgt) - stochastic_latent(x0_src, xt_src, x0_hat_src))


def randn_like(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device; with one generator per batch
    element, each element's noise is drawn from its own (what a view gets does not depend on the batch it is in)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
        return torch.cat([randn_like(x[i : i + 1], g) for i, g in enumerate(generator)])
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device).to(x)


@dataclass
class DistillationStep:
    """What a gradient of :data:`GRADIENTS` is given: the denoiser, the schedule, both latents and conditions, the
    timesteps, the noise eps_t already drawn (shared by source and target), where further draws come from, and where
    it records the target's one-step estimate (``record["x0_hat_tgt"]``)."""

    eps: Denoiser
    alphas_cumprod: Tensor
    x0_tgt: Tensor
    x0_src: Tensor
    cond_tgt: Tensor
    cond_src: Tensor
    t: Tensor
    t_prev: Tensor
    noise: Tensor
    generator: Generators
    coefficients: PosteriorCoefficients
    betas: Optional[Tensor]
    record: Dict[str, Tensor]


def _sds(step: DistillationStep) -> Tensor:
    return sds_gradient(step.eps, step.alphas_cumprod, step.x0_tgt, step.cond_tgt, step.t, step.noise, step.record)


def _dds(step: DistillationStep) -> Tensor:
    return dds_gradient(
        step.eps, step.alphas_cumprod, step.x0_tgt, step.x0_src, step.cond_tgt, step.cond_src, step.t, step.noise,
        step.record,
    )  # fmt: skip


def _pds(step: DistillationStep) -> Tensor:
    noise_prev = randn_like(step.x0_tgt, step.generator)  # eps_prev: independent of eps_t, drawn after it
    return pds_gradient(
        step.eps, step.alphas_cumprod, step.x0_tgt, step.x0_src, step.cond_tgt, step.cond_src, step.t, step.t_prev,
        step.noise, noise_prev, step.coefficients, step.betas, step.record,
    )  # fmt: skip


GRADIENTS: Dict[str, Callable[[DistillationStep], Tensor]] = {"pds": _pds, "sds": _sds, "dds": _dds}
"""Each distillation method's gradient wrt x0_tgt: a new method is one function of a :class:`DistillationStep` and
one row here (and its name in :data:`DistillationMethod`)."""

DISTILLATION_METHODS: Tuple[str, ...] = tuple(GRADIENTS)


def distillation_gradient(
    method: DistillationMethod,
    eps: Denoiser,
    alphas_cumprod: Tensor,
    x0_tgt: Tensor,
    x0_src: Tensor,
    cond_tgt: Tensor,
    cond_src: Tensor,
    t: Tensor,
    t_prev: Tensor,
    generator: Generators = None,
    coefficients: PosteriorCoefficients = "official",
    betas: Optional[Tensor] = None,
) -> DistillationOutput:
    """One distillation step of ``method`` at timesteps (t, t_prev), drawing the shared noises."""
    check_choice("distillation method", method, DISTILLATION_METHODS)
    x0_tgt = x0_tgt.detach()
    step = DistillationStep(
        eps, alphas_cumprod, x0_tgt, x0_src.detach(), cond_tgt, cond_src, t, t_prev, randn_like(x0_tgt, generator),
        generator, coefficients, betas, record={},
    )  # fmt: skip
    grad = GRADIENTS[method](step)
    return DistillationOutput(grad=grad, t=t, x0_hat_tgt=step.record["x0_hat_tgt"])


def surrogate_loss(x0: Tensor, grad: Tensor, reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """0.5 ||x0 - (x0 - grad).detach()||^2, reduced so that its gradient wrt each view's latent x0[i] is grad[i]
    divided by the number of views B: the gradient of a batch is the mean over its views.

    ``sum`` (the released Perturb-and-Revise code, threestudio's 0.5 * sum / B): grad[i] / B. ``mean`` (the official
    PDS release, one view a step): grad[i] / (B * elements of a view), i.e. also averaged over the latent's elements.
    With one view both are the releases' losses; with B views each view weighs 1 / B, so a step of B views moves the
    scene as far as a step of one view would on average, and B views on one device give the update that B devices
    with one view each give when their gradients are averaged."""
    target = (x0 - grad).detach()
    squared = torch.nn.functional.mse_loss(x0, target, reduction="sum")
    per_view = x0[0].numel() if reduction == "mean" else 1
    return 0.5 * squared / (x0.shape[0] * per_view)
