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

from toy_world.train_multiview_prior import TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, VIEWS
from toy_world.world import Thing, render


def orbit_renders(thing_at: Callable[[float], Thing], groups: int, seed: int = 0, size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Views [groups * 4, 3, size, size] in [0, 1] of the world's object from orbit groups drawn as the edit draws them
    (the released ranges round the toy object), and their camera vectors [groups * 4, 16]; ``thing_at(turn)`` is the
    object at a turn drawn per group."""
    from pds_nerfstudio.priors.multiview import camera_vectors
    from pds_nerfstudio.scenes.orbit import draw_orbit_group

    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    views, cameras = [], []
    for _ in range(groups):
        group = draw_orbit_group(generator, TOY_OBJECT_CENTRE, TOY_ORBIT_RADIUS, size, VIEWS)
        thing = thing_at(float(rng.uniform(0, np.pi / 2)))
        for c2w in group.cameras.camera_to_worlds:
            pose = np.eye(4)
            pose[:3, :] = c2w.double().numpy()
            views.append(render(thing, pose, size, float(group.cameras.fx[0])))
        cameras.append(camera_vectors(group.object_c2w))
    return torch.tensor(np.stack(views)).permute(0, 3, 1, 2).float(), torch.cat(cameras)


@dataclass(frozen=True)
class Reading:
    """What the classifier reads in a set of decoded images."""

    pixels: float
    """Mean object pixels a view."""
    cube: float
    """Share of views read as a cube (the classifier's "not round": a frame-filling field reads cube too)."""
    colour: float
    """Share of views read as the colour asked."""


def read_views(images: torch.Tensor, colour: str) -> Reading:
    """The classifier's reading of images [N, 3, H, W] in [0, 1]."""
    from toy_world.classify import read

    readings = [read(image) for image in images.permute(0, 2, 3, 1).numpy()]
    return Reading(
        float(np.mean([reading.mask.sum() for reading in readings])),
        float(np.mean([reading.shape == "cube" for reading in readings])),
        float(np.mean([reading.colour == colour for reading in readings])),
    )


@torch.no_grad()
def decoded_targets(guidance, latents: torch.Tensor, cameras: torch.Tensor, prompt: str, t: int, seed: int = 100) -> torch.Tensor:
    """The decoded x0 targets [N, 3, H, W] the guidance gives each group of ``latents`` at timestep ``t`` (of the
    1000-step schedule), each group's noise from its own seed."""
    views = guidance.num_views
    out = []
    for start in range(0, len(latents), views):
        step = guidance(
            latents[start:start + views], prompt, cameras[start:start + views], t_ratio_range=(t / 1000, t / 1000),
            generator=torch.Generator().manual_seed(seed + start),
        )  # fmt: skip
        out.append(step.reconstruction.x0)
    return guidance.decode_latents(torch.cat(out))
