"""The x0-reconstruction score distillation that Perturb-and-Revise's released code descends with MVDream
(threestudio's multi-view guidance with ``recon_loss``), as pure tensor math.

With the guided noise eps_g = eps_neg + s (eps_cond - eps_neg) (the negative prompt as the unconditional branch) and
the one-step estimates x0_g (from eps_g) and x0_c (from eps_cond alone) of the noised latents x_t:

    factor = (std(x0_c over the group) + 1e-8) / (std(x0_g over the group) + 1e-8)      one per group of views
    x0     = r factor x0_g + (1 - r) x0_g                                                 r: recon_std_rescale
    loss   = 0.5 sum (z - sg(x0))^2 / B                                                   B: views in the batch

so the gradient wrt each view's latent z is (z - x0) / B. The standard deviation is torch's (unbiased) over all the
elements of a group's views together, as the released code takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pds_nerfstudio.score_distillation.gradients import one_step_estimate


@dataclass
class Reconstruction:
    """One step's x0 target and what it was made of (kept for tests and diagnostics)."""

    x0: Tensor
    """The rescaled guided estimate the latents are pulled to (no graph)."""
    x0_guided: Tensor
    """The one-step estimate from the guided noise."""
    factor: Tensor
    """The std ratio of each group [groups]."""


def reconstruction_target(
    alphas_cumprod: Tensor, x_t: Tensor, t: Tensor, eps_cond: Tensor, eps_negative: Tensor, guidance_scale: float,
    views: int, std_rescale: float,
) -> Reconstruction:  # fmt: skip
    """The x0 the latents of a batch of groups of ``views`` views are pulled to (module docstring); ``t`` per view."""
    if x_t.shape[0] % views:
        raise ValueError(f"a batch of {x_t.shape[0]} latents is not whole groups of {views} views")
    guided = eps_negative + guidance_scale * (eps_cond - eps_negative)
    x0_guided = one_step_estimate(alphas_cumprod, x_t, guided, t)
    x0_cond = one_step_estimate(alphas_cumprod, x_t, eps_cond, t)
    groups = x_t.shape[0] // views
    spread = lambda x: x.reshape(groups, -1).std(dim=1) + 1e-8  # noqa: E731
    factor = spread(x0_cond) / spread(x0_guided)
    scaled = x0_guided * factor.repeat_interleave(views).view(-1, *[1] * (x_t.dim() - 1))
    x0 = std_rescale * scaled + (1 - std_rescale) * x0_guided
    return Reconstruction(x0=x0, x0_guided=x0_guided, factor=factor)


def reconstruction_loss(latents: Tensor, x0: Tensor) -> Tensor:
    """0.5 sum (z - sg(x0))^2 / B: its gradient wrt each view's latent is (z - x0) / B."""
    return 0.5 * (latents - x0.detach()).pow(2).sum() / latents.shape[0]
