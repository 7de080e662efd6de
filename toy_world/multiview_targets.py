"""Where the released multi-view objective pulls an object that is already right: the x0 targets a multi-view prior's
guidance (:class:`pds_nerfstudio.priors.multiview_guidance.MultiViewGuidance`) gives at the world's own renders of an
object from orbit groups drawn as pnr's objects protocol draws them, decoded and read by the world's classifier.

If the target object itself is not near a fixed point of that pull (its targets larger than it, or another colour), no
edit can hold it (``bench/multiview_targets.py``, docs/toy_world.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np
import torch

from toy_world.train_multiview_prior import render_orbit_group
from toy_world.world import Thing


def orbit_renders(thing_at: Callable[[float], Thing], groups: int, seed: int = 0, size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Views [groups * 4, 3, size, size] in [0, 1] of the world's object from orbit groups drawn as the edit draws them
    (the released ranges round the toy object at its orbit radius), and their camera vectors [groups * 4, 16];
    ``thing_at(turn)`` is the object at a turn drawn per group."""
    from pds_nerfstudio.priors.multiview import camera_vectors

    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    views, cameras = [], []
    for _ in range(groups):
        images, object_c2w = render_orbit_group(thing_at(float(rng.uniform(0, np.pi / 2))), generator, size)
        views.append(torch.from_numpy(images).permute(0, 3, 1, 2).float())
        cameras.append(camera_vectors(object_c2w))
    return torch.cat(views), torch.cat(cameras)


@dataclass(frozen=True)
class ViewsReading:
    """What the classifier reads over a set of decoded images."""

    mean_pixels: float
    """Object pixels a view, on average."""
    cube_share: float
    """Share of views read as a cube (the classifier's "not round": a frame-filling field reads cube too)."""
    colour_share: float
    """Share of views read as the colour asked."""


def read_views(images: torch.Tensor, colour: str) -> ViewsReading:
    """The classifier's reading of images [N, 3, H, W] in [0, 1]."""
    from toy_world.classify import read

    readings = [read(image) for image in images.permute(0, 2, 3, 1).numpy()]
    return ViewsReading(
        float(np.mean([reading.mask.sum() for reading in readings])),
        float(np.mean([reading.shape == "cube" for reading in readings])),
        float(np.mean([reading.colour == colour for reading in readings])),
    )


@dataclass(frozen=True)
class Targets:
    """The decoded x0 targets of a batch of groups at one t, and each group's std rescale factor."""

    images: torch.Tensor
    """[N, 3, H, W] in [0, 1]."""
    factors: torch.Tensor
    """[groups]: the conditional estimate's spread over the guided one's (1 at scale 1)."""


@torch.no_grad()
def decoded_targets(
    guidance, latents: torch.Tensor, cameras: torch.Tensor, prompt: str, t: int, guidance_scale: float, seed: int = 100
) -> Targets:
    """The x0 targets the guidance gives each group of ``latents`` at timestep ``t`` (of the 1000-step schedule) and
    ``guidance_scale``, each group's noise from its own seed."""
    views = guidance.num_views
    x0, factors = [], []
    for start in range(0, len(latents), views):
        step = guidance(
            latents[start:start + views], prompt, cameras[start:start + views], t_ratio_range=(t / 1000, t / 1000),
            generator=torch.Generator().manual_seed(seed + start), guidance_scale=guidance_scale,
        )  # fmt: skip
        x0.append(step.reconstruction.x0)
        factors.append(step.reconstruction.factor)
    return Targets(guidance.decode_latents(torch.cat(x0)), torch.cat(factors))
