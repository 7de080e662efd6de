"""Parameter perturbation of Perturb-and-Revise (Hong et al., CVPR 2025, Sec. 4.1-4.2, Alg. 1 and 2).

Pure functions on tensors and modules: choosing the perturbation strength eta from the guidance
losses of a short editing run, and moving the source parameters part of the way towards a fresh
initialisation of the same field.

    Alg. 2 (eta selection):  dL  = mean(L[-w:]) - mean(L[:w])
                             eta = max(0, eta_max (1 - 2^(-(dL + d_min) / d_min)))
    Alg. 1 (perturbation):   theta = (1 - eta) theta_src + eta theta_0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Literal, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from pds_nerfstudio.common.errors import InputError

Eta = Union[float, Literal["auto"]]


@dataclass
class PerturbationConfig:
    """How strongly the source field is perturbed before editing, and how that strength is chosen."""

    eta: Eta = "auto"
    """Perturbation strength in [0, 1], or auto: chosen from the guidance losses of the eta-selection steps (Alg. 2). The paper's real scenes used 0.6."""
    eta_max: float = 0.6
    """Largest eta that auto selection returns (released code: 0.6)."""
    d_min: float = 1000.0
    """Loss change at which auto selection gives eta = 0, and its half-life (released code: 1000). Units: the x0-reconstruction
    loss 0.5 ||x0 - x0_hat||^2 summed over a 4x32x32 latent (the released code's), which the recorded loss is scaled to."""
    loss_window: int = 10
    """Number of losses averaged at each end of the eta-selection steps (released code: 10)."""
    seed: int = 0
    """Seed of the fresh initialisation theta_0 and of the eta-selection views. With nerfstudio's torch hash encoding it
    draws every tensor of theta_0; with tiny-cuda-nn, tcnn initialises its hash grids and fused MLPs with its own
    fixed seed (1337), as in the released code, so those parts of theta_0 equal the source run's own initialisation."""

    def check(self, selection_steps: int) -> None:
        """Cheap checks of the flags; raises InputError."""
        if self.eta != "auto" and not 0.0 <= float(self.eta) <= 1.0:
            raise InputError(f"--pipeline.perturbation.eta {self.eta}: need a number in [0, 1], or auto")
        if not 0.0 <= self.eta_max <= 1.0:
            raise InputError(f"--pipeline.perturbation.eta-max {self.eta_max}: need a number in [0, 1]")
        if self.d_min <= 0:
            raise InputError(f"--pipeline.perturbation.d-min {self.d_min}: need a positive number")
        if self.eta == "auto" and not 1 <= self.loss_window <= selection_steps:
            raise InputError(
                f"--pipeline.perturbation.loss-window {self.loss_window}: need 1 to --pipeline.eta-selection-steps "
                f"({selection_steps})"
            )


RELEASED_LATENT_NUMEL = 4 * 32 * 32
"""Elements of one view's latent in the released code (MVDream at 256 px: 4 x 32 x 32), the units of d_min."""


def selection_loss(x0: Tensor, x0_hat: Tensor) -> float:
    """The editing loss Alg. 2 records, in the released code's units.

    The released code records MVDream's x0-reconstruction loss 0.5 ||x0 - x0_hat||^2 / B (x0_hat the
    one-step estimate of the noised latent, summed over each view's 4x32x32 latent and averaged over the B = 4 views
    of a step), and d_min = 1000 was set for it. Here the same loss is averaged over the step's views
    (``--pipeline.views-per-step``, 4 by default; with several devices the pipeline averages the devices' means) and
    summed over each view's latent of 4x(H/8)x(W/8) elements (16384 at 512 px), so it is scaled by 4096 / (elements
    per view): per element and per view, the released units. The number of views changes only the noise of the
    recorded losses (the window means of Alg. 2 average 40 views, as released), not their expected value.

    Why not the PDS gradient: at the selection steps' t = 751 (ratio 0.75 of the 500-step grid, SD 1.5
    schedule) a_t = 0.0557, so x0 - x0_hat = sqrt((1 - a_t) / a_t) (eps_hat - eps) = 4.12 (eps_hat - eps) and
    the loss is 8.5 ||eps_hat - eps||^2, whereas the PDS gradient weighs its noise difference by chi(751) =
    0.093 (psi = 0.012): 0.5 ||PDS gradient||^2 is about 2000 times smaller per unit of noise difference,
    so with it every dL was far below d_min and eta sat at eta_max / 2. What remains different: the released
    code guides MVDream at scale 50, PDS here at 100 (the guided noise difference, and the loss with its
    square, are larger).
    """
    per_view = x0[0].numel()
    squared = (x0.detach().float() - x0_hat.detach().float()).pow(2).sum().item()
    return 0.5 * squared / x0.shape[0] * RELEASED_LATENT_NUMEL / per_view


def loss_change(losses: Sequence[float], window: int) -> float:
    """dL = mean of the last ``window`` losses - mean of the first ``window`` (Alg. 2)."""
    if not 1 <= window <= len(losses):
        raise ValueError(f"window must be in [1, {len(losses)}] for {len(losses)} losses, got {window}")
    values = torch.as_tensor(list(losses), dtype=torch.float64)
    return (values[-window:].mean() - values[:window].mean()).item()


def eta_from_loss_change(delta: float, eta_max: float = 0.6, d_min: float = 1000.0) -> float:
    """eta = max(0, eta_max (1 - 2^(-(dL + d_min) / d_min))) (Alg. 2).

    0 at dL = -d_min (and below), eta_max / 2 at dL = 0, approaching eta_max as the loss grows. Below -d_min the
    power is not taken: 2^x of a fall of a thousand d_min overflows a float (the toy world's selection losses fall by
    up to 10^6 with d_min = 1000), and eta is 0 there anyway.
    """
    exponent = -(delta + d_min) / d_min
    if exponent >= 0.0:
        return 0.0
    return eta_max * (1.0 - 2.0**exponent)


def select_eta(losses: Sequence[float], window: int, eta_max: float = 0.6, d_min: float = 1000.0) -> float:
    """eta from the guidance losses of the eta-selection steps (Alg. 2)."""
    return eta_from_loss_change(loss_change(losses, window), eta_max, d_min)


def edited_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """The parameters an edit trains, by name: those in the model's optimizer parameter groups.

    For the edit models these are nerfacto's field and proposal networks, or splatfacto's Gaussians; the
    camera pose refinements and per-image appearance stay out, so they are never perturbed either.
    """
    trained = {id(p) for group in model.get_param_groups().values() for p in group}  # type: ignore[operator]
    return {name: p for name, p in model.named_parameters() if id(p) in trained}


@torch.no_grad()
def perturbed_values(
    names: Sequence[str],
    source: Mapping[str, Tensor],
    fresh: Mapping[str, Tensor],
    eta: float,
    interpolate: Callable[[str, Tensor, Tensor, float], Tensor],
) -> Dict[str, Tensor]:
    """theta = (1 - eta) theta_src + eta theta_0 for each parameter in ``names`` (Alg. 1).

    Args:
        source: theta_src, the source scene's values, by name.
        fresh: theta_0, a fresh initialisation of the same scene, by the same names.
        eta: perturbation strength in [0, 1]; 0 gives theta_src exactly, 1 gives theta_0 exactly.
        interpolate: how one parameter is interpolated (the representation's ``interpolate``: its geometry).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    missing = [name for name in names if name not in source or name not in fresh]
    if missing:
        raise KeyError(f"no source or fresh value for parameters {missing}")
    values = {}
    for name in names:
        theta_src, theta_0 = source[name], fresh[name].to(source[name])
        if theta_src.shape != theta_0.shape:
            raise ValueError(f"{name}: source {tuple(theta_src.shape)}, fresh {tuple(theta_0.shape)}")
        values[name] = interpolate(name, theta_src, theta_0, eta)
    return values
