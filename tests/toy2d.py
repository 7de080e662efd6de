"""A 2D class-conditional diffusion model with an analytic noise predictor (Figure 3 of the PDS paper).

Data: two adjacent isotropic Gaussian blobs in the plane, class A centred at (-1, 0) and class B at
(+1, 0), each with standard deviation ``std``, mixed with equal weights. Under the forward process
x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps every marginal stays Gaussian, so the minimum-mean-squared-error
noise predictor (what a perfectly trained eps-network converges to) is known in closed form:

    class c:       x_t | c ~ N(sqrt(a_t) mu_c, v_t I),   v_t = a_t std^2 + 1 - a_t
                   eps(x_t, c) = E[eps | x_t, c] = sqrt(1 - a_t) (x_t - sqrt(a_t) mu_c) / v_t
    unconditional: eps(x_t) = sum_c p(c | x_t) eps(x_t, c),   p(c | x_t) ∝ N(x_t; sqrt(a_t) mu_c, v_t I)
    guided:        eps_hat = eps(x_t) + w (eps(x_t, c) - eps(x_t))        (classifier-free guidance)

The schedule is Stable Diffusion's (1000 training steps, "scaled_linear" betas from 0.00085 to 0.012),
and timesteps are drawn on the 500-step DDIM grid 1, 3, ..., 999 as the official PDS release does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Tuple

import torch
from torch import Tensor

from pds_nerfstudio.score_distillation.gradients import DistillationOutput, distillation_gradient, sample_timesteps

CLASS_A = 0
CLASS_B = 1


def sd_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> Tensor:
    """alphas_cumprod of Stable Diffusion's "scaled_linear" schedule (as diffusers builds it), in float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_grid(num_inference_steps: int = 500, num_train_timesteps: int = 1000, steps_offset: int = 1) -> Tensor:
    """Ascending DDIM inference grid, i.e. reversed(DDIMScheduler.timesteps) (1, 3, ..., 999 for 500 steps)."""
    step = num_train_timesteps // num_inference_steps
    return torch.arange(0, num_inference_steps, dtype=torch.long) * step + steps_offset


@dataclass
class TwoBlobDiffusion:
    """Exact noise predictor of a two-class Gaussian-blob distribution, with classifier-free guidance.

    Calling the model as ``model(x_t, t, cond)`` (x_t: (N, 2), t: (N,) long, cond: (N,) class ids)
    returns the guided prediction eps_hat, which makes it a ``Denoiser`` for
    :mod:`pds_nerfstudio.score_distillation`.
    """

    alphas_cumprod: Tensor
    """Training schedule a_t (length 1000), e.g. :func:`sd_alphas_cumprod`."""
    guidance_scale: float = 3.0
    """Classifier-free guidance scale w (1: plain conditional model)."""
    std: float = 0.15
    """Standard deviation of each blob."""
    centres: Optional[Tensor] = None
    """(num_classes, 2) class centres mu_c; defaults to A = (-1, 0), B = (+1, 0)."""

    def __post_init__(self) -> None:
        if self.centres is None:
            self.centres = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)

    def _marginal(self, x_t: Tensor, t: Tensor):
        """sqrt(a_t), sqrt(1 - a_t) and the marginal variance v_t, shaped (N, 1)."""
        a_t = self.alphas_cumprod[t].to(x_t).unsqueeze(-1)
        v_t = a_t * self.std**2 + 1 - a_t
        return a_t.sqrt(), (1 - a_t).sqrt(), v_t

    def log_prob_unconditional(self, x_t: Tensor, t: Tensor) -> Tensor:
        """log p_t(x_t) of the equal-weight mixture (used to check the predictor against the score)."""
        sqrt_a, _, v_t = self._marginal(x_t, t)
        sq_dist = ((x_t.unsqueeze(1) - sqrt_a.unsqueeze(1) * self.centres.to(x_t)) ** 2).sum(-1)  # (N, C)
        log_n = -0.5 * sq_dist / v_t - torch.log(2 * torch.pi * v_t)  # 2D isotropic Gaussian
        return torch.logsumexp(log_n, dim=1) - torch.log(torch.tensor(float(len(self.centres))))

    def eps_conditional(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """E[eps | x_t, c] = sqrt(1 - a_t) (x_t - sqrt(a_t) mu_c) / v_t."""
        sqrt_a, sqrt_one_minus_a, v_t = self._marginal(x_t, t)
        mu = self.centres.to(x_t)[cond.long()]
        return sqrt_one_minus_a * (x_t - sqrt_a * mu) / v_t

    def eps_unconditional(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E[eps | x_t] = sqrt(1 - a_t) (x_t - sqrt(a_t) sum_c p(c | x_t) mu_c) / v_t."""
        sqrt_a, sqrt_one_minus_a, v_t = self._marginal(x_t, t)
        centres = self.centres.to(x_t)
        sq_dist = ((x_t.unsqueeze(1) - sqrt_a.unsqueeze(1) * centres) ** 2).sum(-1)  # (N, C)
        posterior = torch.softmax(-0.5 * sq_dist / v_t, dim=1)  # p(c | x_t), equal priors
        return sqrt_one_minus_a * (x_t - sqrt_a * (posterior @ centres)) / v_t

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        eps_uncond = self.eps_unconditional(x_t, t)
        eps_cond = self.eps_conditional(x_t, t, cond)
        # classifier-free guidance
        return eps_uncond + self.guidance_scale * (eps_cond - eps_uncond)

    def sample(self, cls: int, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n exact samples x0 ~ N(mu_cls, std^2 I)."""
        noise = torch.randn((n, 2), generator=generator, dtype=torch.float64)
        return self.centres[cls] + self.std * noise


def edit_samples(
    model: TwoBlobDiffusion,
    method: Literal["pds", "sds", "dds"],
    coefficients: Literal["official", "exact"] = "official",
    num_samples: int = 128,
    num_steps: int = 300,
    learning_rate: float = 0.01,
    num_inference_steps: int = 500,
    t_ratio_range: Tuple[float, float] = (0.02, 0.98),
    seed: int = 0,
    target_class: int = 1,
    on_step: Optional[Callable[[Tensor, DistillationOutput], None]] = None,
) -> Tuple[Tensor, Tensor]:
    """Edit samples of class A towards class B by plain gradient descent on one distillation gradient.

    x0_src are samples of class A (source condition A); x0_tgt starts at x0_src and follows
    x0_tgt <- x0_tgt - learning_rate * grad with target condition ``target_class`` (B), where each step draws its
    own (t, t_prev) per sample on the DDIM grid and fresh shared noises. ``on_step(x0_tgt, output)`` sees each
    step's target before the update and the distillation output.

    Returns:
        (x0_src, x0_tgt) after ``num_steps`` steps, both (num_samples, 2).
    """
    generator = torch.Generator().manual_seed(seed)
    grid = ddim_grid(num_inference_steps)
    x0_src = model.sample(CLASS_A, num_samples, generator)
    x0_tgt = x0_src.clone()
    cond_src = torch.full((num_samples,), CLASS_A, dtype=torch.long)
    cond_tgt = torch.full((num_samples,), target_class, dtype=torch.long)
    for _ in range(num_steps):
        t, t_prev = sample_timesteps(grid, *t_ratio_range, num_samples, generator=generator)
        out = distillation_gradient(
            method,
            model,
            model.alphas_cumprod,
            x0_tgt,
            x0_src,
            cond_tgt,
            cond_src,
            t,
            t_prev,
            generator=generator,
            coefficients=coefficients,
        )
        if on_step is not None:
            on_step(x0_tgt, out)
        x0_tgt = x0_tgt - learning_rate * out.grad
    return x0_src, x0_tgt
