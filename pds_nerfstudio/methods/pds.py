"""The ``pds`` method's pipeline: each step renders views of the scene and distils the guidance's gradient into them
(PDS by default; SDS and DDS selectable). The views are training views, each with its captured image as the source;
with a multi-view prior (MVDream's format) they are groups of orbit views round the object, each with the source
scene's render of it as the source (:mod:`pds_nerfstudio.methods.orbits`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils import writer
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.integration.pipeline import EditPipeline, EditPipelineConfig
from pds_nerfstudio.integration.source_run import Run
from pds_nerfstudio.methods.orbits import (
    ORBIT_SEED_BIT,
    SOURCE_LATENT_SEED_BIT,
    MultiViewConfig,
    OrbitStep,
    orbit_metrics,
)
from pds_nerfstudio.priors.multiview import MultiViewInfo, camera_vectors, native_resolution, read_multiview_info
from pds_nerfstudio.priors.multiview_guidance import MultiViewGuidance
from pds_nerfstudio.scenes.frozen_source import FrozenSource
from pds_nerfstudio.scenes.orbit import OrbitGroup, draw_orbit_group


@dataclass
class PDSPipelineConfig(EditPipelineConfig):
    """Editing by score distillation: Posterior Distillation Sampling (default), SDS or DDS."""

    _target: Type = field(default_factory=lambda: PDSPipeline)
    guidance_loss_mult: float = 1.0
    """Weight of the distillation loss."""
    multiview: MultiViewConfig = MultiViewConfig()
    """With a multi-view prior (--pipeline.guidance.model-id a folder in MVDream's format): the object the orbit views
    look at and their ranges (pnr also reads its objective's settings here). (A plain default: runs saved before it load
    without the field.)"""

    def multiview_prior(self) -> Optional[MultiViewInfo]:
        """What the guidance model folder says of itself when it is a multi-view prior; None for a single-view one."""
        folder = Path(self.guidance.model_id).expanduser()
        try:
            return read_multiview_info(folder) if folder.is_dir() else None
        except ValueError as error:
            raise InputError(f"--pipeline.guidance.model-id {self.guidance.model_id}: {error}") from None

    def guidance_config(self) -> Any:
        """A multi-view prior's guidance (:class:`MultiViewGuidance`), or Stable Diffusion's."""
        return self.multiview.guidance(self.guidance) if self.multiview_prior() is not None else self.guidance

    def with_source(self, run: Run, typed: TypedFlags) -> "PDSPipelineConfig":
        """As for every edit; with a multi-view prior a step guides one group of its views, unless
        ``--pipeline.views-per-step`` is typed (pnr: also its objects protocol's), and pds renders them at the size
        the prior was trained at (MVDream's 256 px; unless ``--pipeline.render-resolution`` is typed; pnr's objects
        protocol sets the release's own)."""
        resolved = super().with_source(run, typed)
        info = self.multiview_prior()
        if info is not None and "views_per_step" not in typed:
            resolved = dataclasses.replace(resolved, views_per_step=info.num_views)
        if info is not None and "render_resolution" not in typed and type(self) is PDSPipelineConfig:
            resolved = dataclasses.replace(resolved, render_resolution=native_resolution(Path(self.guidance.model_id).expanduser()))
        return resolved

    def guides_training_views(self) -> bool:
        return self.multiview_prior() is None

    def check(self, scene_device: str) -> None:
        info = self.multiview_prior()
        if info is not None:
            self.multiview.check(self.region, self.views_per_step, info.num_views)
        super().check(scene_device)


class PDSPipeline(EditPipeline):
    """One step: render a training view (or, with a multi-view prior, a group of orbit views), encode it, take the
    distillation gradient in latent space."""

    config: PDSPipelineConfig
    holds_outside: ClassVar[bool] = True

    def __init__(self, config: PDSPipelineConfig, device: str, *args: Any, **kwargs: Any) -> None:
        self._frozen_source: Optional[FrozenSource] = None
        super().__init__(config, device, *args, **kwargs)
        self.guides_orbits = isinstance(self.guidance, MultiViewGuidance)
        """With a multi-view prior: orbit views round the object (:meth:`orbit_views`)."""
        self.orbit_step_in_use: Optional[OrbitStep] = None
        """What the last step with a multi-view prior gave the prior (read back by tests)."""

    def load_source(self, checkpoint: Path) -> None:
        """Load the source field; with a multi-view prior keep a frozen copy, whose renders of the orbit views are
        their sources."""
        super().load_source(checkpoint)
        if isinstance(self.guidance, MultiViewGuidance):
            self.frozen_source()

    def frozen_source(self) -> FrozenSource:
        """One frozen copy of the source scene as loaded, for the orbit views' sources and the region's hold term."""
        if self._frozen_source is None:
            self._frozen_source = super().frozen_source()
        return self._frozen_source

    def region_background(self):
        """With a multi-view prior the source's renders are the orbit views' sources: the edit and the source render
        over one background (splatfacto), region or not."""
        if self.guides_orbits:
            return self.representation.same_background(self.model, self.frozen_source().model)
        return super().region_background()

    def guidance_loss(self, step: int, views: List[int], render: Tensor, **guidance_kwargs):
        """Distillation loss of ``render`` [N, 3, H, W] (training ``views``) against their source views, plus
        diagnostics; each view's timestep and noises come from its own generator (:meth:`view_generators`)."""
        size = tuple(render.shape[-2:])
        x0_src = torch.cat([self.datamanager.source_latent(index, size, self.guidance.encode_images) for index in views])
        generators = self.view_generators(step)
        x0_tgt = self.guidance.encode_images(render, generators)
        # A t ratio range passed in is a schedule's value of this step (pnr), not the viewer's: it changes every
        # step, so it is reported in the metrics only.
        scheduled_range = guidance_kwargs.pop("t_ratio_range", None)
        controlled = {} if scheduled_range else {"t_ratio_range": self.controls.ratio_range}
        used = self.use_values(
            step,
            tgt_prompt=self.controls.tgt_prompt,
            src_prompt=self.config.src_prompt,
            guidance_scale=self.controls.guidance_scale,
            **controlled,
        )
        t_ratio_range = scheduled_range or used["t_ratio_range"]
        output = self.guidance(
            x0_tgt,
            x0_src,
            used["tgt_prompt"],
            used["src_prompt"],
            t_ratio_range=t_ratio_range,
            guidance_scale=used["guidance_scale"],
            generator=generators,
            **guidance_kwargs,
        )
        if step % self.config.steps_per_log_image == 0:
            self.log_edit_image(step, views[0], render[:1], output.grad[:1])
        metrics = {
            "guidance_t": output.t.float().mean(),
            "guidance_grad_norm": output.grad.norm(),
            "guidance_scale": used["guidance_scale"],
            "t_ratio_min": t_ratio_range[0],
            "t_ratio_max": t_ratio_range[1],
            **view_metrics(views),
        }
        return self.config.guidance_loss_mult * output.loss.to(self.device), output, metrics

    def get_train_loss_dict(self, step: int):
        self.share_controls()
        if self.guides_orbits:
            views, cameras, groups = self.orbit_views(step)
        else:
            views = self.step_views(step)
            cameras = [self.guidance_camera(index) for index in views]
        with self.region_background():
            render = self.guidance_views(step, views, cameras)
            guided, region_losses = self.limit_to_region(views, cameras, render)
            if self.guides_orbits:
                loss, metrics = self.orbit_distillation_loss(step, groups, views, cameras, guided)
            else:
                loss, _, metrics = self.guidance_loss(step, views, guided)
        if self.region_masks_in_use is not None:
            metrics["region_share"] = self.region_masks_in_use.mean()
        self.report(step, metrics)
        return {"rgb": render}, {"guidance_loss": loss, **region_losses}, metrics


    # ----------------------------------------------------------------------------------------------
    # With a multi-view prior: orbit views round the object (pds_nerfstudio.methods.orbits)
    # ----------------------------------------------------------------------------------------------

    def orbit_views(self, step: int) -> Tuple[List[int], List[Cameras], List[OrbitGroup]]:
        """This device's groups of orbit cameras at ``step``, drawn round the object from the step's seed, at the
        guidance resolution; and for each camera the training view whose appearance embedding and pose refinement it
        renders with (the nearest one: nerfstudio renders every ray as some view's)."""
        outputs = self.datamanager.train_dataparser_outputs
        multiview = self.config.multiview
        centre, radius = multiview.object_in_scene(self.region, outputs.dataparser_transform, outputs.dataparser_scale)
        generator = torch.Generator().manual_seed(self.orbit_seed(step))
        size, views = self.config.render_resolution, self.guidance.num_views  # type: ignore[attr-defined]
        groups = [
            draw_orbit_group(generator, centre.tolist(), radius, size, views, multiview.ranges)
            for _ in range(self.config.views_per_step // views)
        ]
        cameras = [group.cameras[i : i + 1].to(self.device) for group in groups for i in range(views)]
        positions = self.datamanager.train_dataset.cameras.camera_to_worlds[:, :3, 3]
        nearest = [int((positions - camera.camera_to_worlds[0, :3, 3].cpu()).norm(dim=-1).argmin()) for camera in cameras]
        return nearest, cameras, groups

    def orbit_seed(self, step: int) -> int:
        """The seed of this device's orbit groups at ``step``: the step's own, a bit flipped."""
        return self.view_seeds(step)[0] ^ ORBIT_SEED_BIT

    def orbit_distillation_loss(
        self, step: int, groups: List[OrbitGroup], views: List[int], cameras: List[Cameras], render: Tensor
    ) -> Tuple[Tensor, Dict[str, Any]]:
        """The distillation loss of the step's orbit views ``render`` [N, 3, H, W] against the source scene's renders
        of the same views (:meth:`MultiViewGuidance.distil_views`), and diagnostics; what the step gave the prior is
        kept in :attr:`orbit_step_in_use`."""
        guidance: MultiViewGuidance = self.guidance  # type: ignore[assignment]
        used = self.use_values(
            step, tgt_prompt=self.controls.tgt_prompt, src_prompt=self.config.src_prompt,
            guidance_scale=self.controls.guidance_scale, t_ratio_range=self.controls.ratio_range,
        )  # fmt: skip
        generators = self.view_generators(step)
        x0_tgt = guidance.encode_images(render, generators)
        source_views = self.frozen_source().render(cameras, views, self.config.ray_chunk_size)  # over the edit's background
        # each source view's posterior sample from its view's own seed (as a training view's source latent, from its index)
        source_generators = [torch.Generator().manual_seed(seed ^ SOURCE_LATENT_SEED_BIT) for seed in self.view_seeds(step)]
        x0_src = guidance.encode_images(source_views, source_generators)
        vectors = camera_vectors(torch.cat([group.object_c2w for group in groups]))
        output = guidance.distil_views(
            x0_tgt, x0_src, used["tgt_prompt"], used["src_prompt"], vectors, t_ratio_range=used["t_ratio_range"],
            generator=generators, guidance_scale=used["guidance_scale"],
        )  # fmt: skip
        self.orbit_step_in_use = OrbitStep(groups, vectors, x0_tgt.detach(), output, x0_src)
        if step % self.config.steps_per_log_image == 0:
            row = torch.cat([torch.cat(list(images.detach().clamp(0, 1)), dim=2) for images in (render, source_views)], dim=1)
            writer.put_image(name="edit/orbit views (edit above, source below)", image=row.permute(1, 2, 0).cpu(), step=step)
        metrics = {
            "guidance_t": output.t.float().mean(),
            "guidance_grad_norm": output.grad.norm(),
            "guidance_scale": used["guidance_scale"],
            "t_ratio_min": used["t_ratio_range"][0],
            "t_ratio_max": used["t_ratio_range"][1],
            **orbit_metrics(groups),
        }
        return self.config.guidance_loss_mult * output.loss.to(self.device), metrics


def view_metrics(views: List[int]) -> Dict[str, int]:
    """The views a step guided on this device, as logged scalars: ``view`` (the first), ``view_2``, ``view_3``, ..."""
    return {("view" if j == 0 else f"view_{j + 1}"): index for j, index in enumerate(views)}
