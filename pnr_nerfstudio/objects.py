"""Perturb-and-Revise's objects protocol as its code releases it, for a multi-view prior (MVDream's format): every step
a new group of orbit cameras round the object, the prior given each view's camera, the x0-reconstruction objective at
scale 50 with the released negative prompt, one timestep a step (:mod:`pds_nerfstudio.priors.multiview_guidance`).

The orbit views and where the object is: :mod:`pds_nerfstudio.methods.orbits` (``--pipeline.multiview.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple, Type

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig

from pds_nerfstudio.methods.orbits import MultiViewConfig  # noqa: F401 (configs saved before it moved name it here)
from pds_nerfstudio.scenes.representations import Nerfacto

RELEASED_GUIDANCE_SCALE = 50.0
"""The released objects configs' guidance scale for MVDream."""
RELEASED_RENDER_RESOLUTION = 256
"""The released objects configs' render size after the coarse steps (MVDream's 256 px)."""


@dataclass
class AdamWOptimizerConfig(AdamOptimizerConfig):
    """torch's AdamW (weight decay decoupled from the gradient) in nerfstudio's optimizer config."""

    _target: Type = torch.optim.AdamW
    betas: Tuple[float, float] = (0.9, 0.99)
    """The moments' decay rates (released: 0.9, 0.99; torch's default 0.999 for the second)."""
    weight_decay: float = 0.01
    """Decoupled weight decay (released: torch's default for AdamW, 0.01)."""


def released_nerfacto_optimizers() -> Dict[str, Dict[str, Any]]:
    """The released objects code's optimiser for a NeRF (configs/mvdream-pnr*.yaml): AdamW (0.9, 0.99), eps 1e-15,
    weight decay 0.01, the hash grid at 0.01 and the MLPs at 0.001; nerfacto's proposal networks, which the release
    has not, at the grid's rate (a hash grid each, and most of their parameters). The schedules are nerfacto's, which
    the objects protocol holds at 1 (``--pipeline.learning-rate-schedule constant``, the release's)."""
    schedule = Nerfacto().optimizers()["fields"]["scheduler"]
    rates = {"proposal_networks": 1e-2, "field_grid": 1e-2, "fields": 1e-3}
    return {group: {"optimizer": AdamWOptimizerConfig(lr=lr, eps=1e-15), "scheduler": schedule} for group, lr in rates.items()}
