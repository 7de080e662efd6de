"""Editing with a multi-view prior (MVDream's format): every step a new group of orbit views round the object, each
view's camera given to the prior.

Where the object is: ``--pipeline.multiview.object-centre`` and ``--pipeline.multiview.object-radius`` in the capture's
world frame (the coordinates of its transforms.json, like ``--pipeline.region.box``), or, without them, the region's
box (its centre, and half its diagonal as the radius), followed as the viewer moves it. The orbit cameras are drawn in
nerfstudio's scene frame, z up (the frame nerfstudio's dataparsers orient a capture to, and MVDream's), with the
released objects code's ranges (threestudio's random_multiview.py). pnr descends the released x0-reconstruction
objective on them (:mod:`pnr_nerfstudio.objects`); pds its distillation gradient, with the source scene's render of
each orbit view as that view's source (:meth:`pds_nerfstudio.methods.pds.PDSPipeline.orbit_guidance_loss`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.guidance import GuidanceConfig
from pds_nerfstudio.priors.multiview_guidance import RELEASED_NEGATIVE_PROMPT, MultiViewGuidanceConfig
from pds_nerfstudio.regions.region import Region, RegionConfig
from pds_nerfstudio.scenes.box import in_scene_frame
from pds_nerfstudio.scenes.orbit import OrbitGroup, OrbitRanges

ORBIT_SEED_BIT = 1 << 61
"""Flipped in a step's seed for its orbit cameras, so that their draws are not the stream of its noises."""
SOURCE_LATENT_SEED_BIT = 1 << 60
"""pds: flipped in each view's seed for the posterior sample of its source latent."""


@dataclass
class OrbitStep:
    """What a step with a multi-view prior gave the prior (read back by tests)."""

    groups: List[OrbitGroup]
    cameras: Tensor
    """The camera vectors the UNet was given [N, 16]."""
    latents: Tensor
    """The orbit views' latents [N, 4, h, w]."""
    output: Any
    """The guidance's output: pnr's :class:`~pds_nerfstudio.priors.multiview_guidance.MultiViewOutput`, pds's
    :class:`~pds_nerfstudio.priors.guidance.GuidanceOutput`."""
    source_latents: Optional[Tensor] = None
    """pds: the source scene's renders of the same orbit views, encoded [N, 4, h, w]."""


def orbit_metrics(groups: List[OrbitGroup]) -> Dict[str, float]:
    """The step's first orbit group's drawn camera, as logged scalars (the same names for pds and pnr)."""
    first = groups[0]
    return {"orbit_elevation": first.elevation, "orbit_azimuth": first.azimuths[0], "orbit_fovy": first.fovy, "orbit_distance": first.distance}


@dataclass(frozen=True)
class MultiViewConfig:
    """The orbit views round the object and pnr's objective settings, used when --pipeline.guidance.model-id is a
    multi-view prior."""

    object_centre: Optional[Tuple[float, float, float]] = None
    """Centre of the object the orbit cameras look at, in the capture's world frame (transforms.json's coordinates);
    default: the centre of --pipeline.region.box."""
    object_radius: Optional[float] = None
    """The radius the orbit distances are relative to, in the same units: the released code's object box has radius 1
    round objects that fill part of it, so give the radius of a sphere with room round the object (a tight bounding
    radius puts the object across the whole frame); default: half the region box's diagonal."""
    elevation_range: Tuple[float, float] = (0.0, 30.0)
    """Degrees above the object's centre the orbit cameras are drawn from (released: 0 to 30)."""
    fovy_range: Tuple[float, float] = (15.0, 60.0)
    """Vertical field of view, degrees (released: 15 to 60)."""
    distance_range: Tuple[float, float] = (0.8, 1.0)
    """Camera distance in units of radius / tan(fovy / 2) (released relative_radius: 0.8 to 1.0)."""
    negative_prompt: str = RELEASED_NEGATIVE_PROMPT
    """pnr's x0-reconstruction objective: the unconditional branch's prompt (released: MVDream-threestudio's list);
    pds keeps its own, the empty prompt."""
    std_rescale: float = 0.5
    """pnr's x0-reconstruction objective: recon_std_rescale (released: 0.5)."""

    @property
    def ranges(self) -> OrbitRanges:
        return OrbitRanges(self.elevation_range, self.fovy_range, self.distance_range)

    def guidance(self, guidance: GuidanceConfig) -> MultiViewGuidanceConfig:
        """The multi-view guidance of ``--pipeline.guidance.*`` (model, scale, t range, device, and pds's distillation
        settings) with these settings."""
        typed = {f.name: getattr(guidance, f.name) for f in dataclasses.fields(GuidanceConfig) if f.name != "_target"}
        return MultiViewGuidanceConfig(**typed, negative_prompt=self.negative_prompt, std_rescale=self.std_rescale)

    def check(self, region: RegionConfig, views_per_step: int, num_views: int) -> None:
        """One-line errors, before anything loads."""
        if (self.object_centre is None) != (self.object_radius is None):
            raise InputError("--pipeline.multiview.object-centre and --pipeline.multiview.object-radius go together; give both")
        if self.object_radius is not None and self.object_radius <= 0:
            raise InputError(f"--pipeline.multiview.object-radius {self.object_radius}: need a positive radius")
        if self.object_centre is None and region.box is None:
            raise InputError(
                "a multi-view prior's views are orbit views round the object: give --pipeline.multiview.object-centre X Y Z "
                "and --pipeline.multiview.object-radius R (the capture's world frame), or a --pipeline.region.box round it"
            )
        if region.masks is not None:
            raise InputError(
                "--pipeline.region.masks with a multi-view prior: masks cover the training views, not the orbit views "
                "round the object; give the region as --pipeline.region.box"
            )
        if views_per_step % num_views:
            raise InputError(
                f"--pipeline.views-per-step {views_per_step}: the multi-view prior denoises groups of {num_views} views; "
                f"give a multiple of {num_views}"
            )
        for flag, (low, high), limit in (("elevation-range", self.elevation_range, (-90, 90)), ("fovy-range", self.fovy_range, (0, 180)),
                                         ("distance-range", self.distance_range, (0, math.inf))):  # fmt: skip
            if not limit[0] <= low <= high <= limit[1] or (flag != "elevation-range" and low <= 0):
                raise InputError(f"--pipeline.multiview.{flag} {low} {high}: need low <= high within {limit}")
        if not 0.0 <= self.std_rescale <= 1.0:
            raise InputError(f"--pipeline.multiview.std-rescale {self.std_rescale}: need a number in [0, 1]")

    def object_in_scene(self, region: Optional[Region], transform: Tensor, scale: float) -> Tuple[Tensor, float]:
        """The object's centre [3] and radius in the scene's frame: the flags' (the dataparser's ``transform`` and
        ``scale`` applied), or the region's box as it is now."""
        if self.object_centre is not None:
            assert self.object_radius is not None
            return in_scene_frame(torch.tensor(self.object_centre), transform, scale), scale * self.object_radius
        assert region is not None and region.box is not None, "MultiViewConfig.check runs first"
        return region.box.centre.float(), float(region.box.size.norm()) / 2
