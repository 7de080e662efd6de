"""Identity-preserving gradient (IPG) of Perturb-and-Revise (paper Sec. 4.3, Appendix E).

During the revise steps the render of the edited field is pulled towards the render of the source
field at the same view: lambda_L1 * L1 + lambda_p * LPIPS, both weights decaying linearly to 0 by
half of the revise steps. The released code and the paper's Table 4 use lambda_L1 = 30000 and
lambda_p = 300 (Appendix E's text has the two swapped).

The weights were tuned for the released form of the terms, which is the default here: both renders
compared at 256 px, and LPIPS given the [0, 1] images directly (the lpips package expects [-1, 1]; the
"textbook" form, ``--pipeline.ipg.lpips-input normalised``, maps them first and gives other values).
The released code sums LPIPS over the 4 views of a step, and so does this term over the step's views: with
several devices, each device's share is its mean times the step's number of views on all devices, so that the
average of the devices' gradients is the gradient of the sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type

import torch.nn.functional as F
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.perceptual import LpipsNet, load_lpips
from pnr_nerfstudio.schedules import ipg_weight


@dataclass
class IPGConfig(InstantiateConfig):
    """The identity-preserving terms of the revise steps and their weights."""

    _target: Type = field(default_factory=lambda: IdentityPreservingLoss)
    l1_loss_mult: float = 30000.0
    """Initial weight of the L1 distance to the source render (released code and paper Table 4: 30000)."""
    lpips_loss_mult: float = 300.0
    """Initial weight of the LPIPS distance to the source render (released code and paper Table 4: 300)."""
    decay_fraction: float = 0.5
    """Fraction of the revise steps over which both weights decay linearly to 0 (released code: 0.5)."""
    lpips_net: LpipsNet = "vgg"
    """LPIPS backbone (lpips package); the released code's perceptual loss is LPIPS on VGG16."""
    lpips_input: Literal["released", "normalised"] = "released"
    """released: the [0, 1] images go to LPIPS as they are, as in the released code (whose weights assume it);
    normalised: mapped to [-1, 1] first, the range the lpips package documents."""
    resolution: int = 256
    """Short side, in pixels, at which both terms compare the render with the source's (released: 256); 0: as rendered."""

    def check(self) -> None:
        if self.l1_loss_mult < 0 or self.lpips_loss_mult < 0:
            raise InputError("--pipeline.ipg.l1-loss-mult and --pipeline.ipg.lpips-loss-mult must not be negative")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise InputError(f"--pipeline.ipg.decay-fraction {self.decay_fraction}: need a number in (0, 1]")
        if self.resolution < 0:
            raise InputError(f"--pipeline.ipg.resolution {self.resolution}: need 0 (as rendered) or a size in pixels")

    def weights(self, step: int, num_steps: int) -> Tuple[float, float]:
        """(lambda_L1, lambda_p) at ``step`` of a revise phase of ``num_steps`` steps."""
        return (
            ipg_weight(self.l1_loss_mult, step, num_steps, self.decay_fraction),
            ipg_weight(self.lpips_loss_mult, step, num_steps, self.decay_fraction),
        )


class IdentityPreservingLoss:
    """L1 and LPIPS distances between a render and the source scene's render of the same view.

    Deliberately not an ``nn.Module``: the LPIPS network never enters the scene's checkpoints.
    """

    def __init__(self, config: IPGConfig, device: str) -> None:
        self.config = config
        self.lpips = load_lpips(config.lpips_net, device)

    def __call__(self, render: Tensor, source: Tensor, views_in_step: Optional[int] = None) -> Dict[str, Tensor]:
        """Unweighted distances of ``render`` [B, 3, H, W] (with graph) to ``source`` (no graph), both in [0, 1]: L1
        averaged over the pixels, LPIPS summed over the step's ``views_in_step`` views (default: these B)."""
        render, source = self.resized(render), self.resized(source.detach().to(render))
        if self.config.lpips_input == "normalised":
            render_in, source_in = 2 * render - 1, 2 * source - 1
        else:  # released: the [0, 1] images as they are
            render_in, source_in = render, source
        # one LPIPS value per image, summed over the step's views as in the released code
        perceptual = self.lpips(render_in, source_in).mean() * (views_in_step or render.shape[0])
        return {"l1": F.l1_loss(render, source), "lpips": perceptual}

    def resized(self, images: Tensor) -> Tensor:
        """``images`` with their short side at ``resolution`` (bilinear, antialiased), or as they are."""
        height, width = images.shape[-2:]
        if self.config.resolution == 0 or min(height, width) == self.config.resolution:
            return images
        scale = self.config.resolution / min(height, width)
        size = (round(height * scale), round(width * scale))
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
