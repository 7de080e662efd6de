"""The ``pds`` method's pipeline: each step renders views of the scene and distils the guidance's gradient into them
(PDS by default; SDS and DDS selectable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Type

import torch
from torch import Tensor

from pds_nerfstudio.integration.pipeline import EditPipeline, EditPipelineConfig


@dataclass
class PDSPipelineConfig(EditPipelineConfig):
    """Editing by score distillation: Posterior Distillation Sampling (default), SDS or DDS."""

    _target: Type = field(default_factory=lambda: PDSPipeline)
    guidance_loss_mult: float = 1.0
    """Weight of the distillation loss."""


class PDSPipeline(EditPipeline):
    """One step: render a training view, encode it, take the distillation gradient in latent space."""

    config: PDSPipelineConfig
    holds_outside: ClassVar[bool] = True

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
        views = self.step_views(step)
        cameras = [self.guidance_camera(index) for index in views]
        with self.region_background():
            render = self.guidance_views(step, views, cameras)
            guided, region_losses = self.limit_to_region(views, cameras, render)
        loss, _, metrics = self.guidance_loss(step, views, guided)
        if self.region_masks_in_use is not None:
            metrics["region_share"] = self.region_masks_in_use.mean()
        self.report(step, metrics)
        return {"rgb": render}, {"guidance_loss": loss, **region_losses}, metrics


def view_metrics(views: List[int]) -> Dict[str, int]:
    """The views a step guided on this device, as logged scalars: ``view`` (the first), ``view_2``, ``view_3``, ..."""
    return {("view" if j == 0 else f"view_{j + 1}"): index for j, index in enumerate(views)}
