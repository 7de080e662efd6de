"""``pds-refine``: the refinement stage of PDS (paper Sec. 5), started directly from a ``pds`` run.

At start every training view of the edited scene is rendered once; those renders become the training
images. Every ``edit_every`` steps one view (in turn) is made more realistic with SDEdit under the
target prompt and replaces that view's training image in memory, while the scene trains with its
model's reconstruction losses on the current images (nerfacto: ray patches; splatfacto: one whole view
a step, 0.8 L1 + 0.2 (1 - SSIM)) (an iterative dataset update, as in the
official release, which needs the renders written to disk and passed as ``--data`` first).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from pds_nerfstudio.common.errors import InputError, check_ratio_range
from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.integration.pipeline import EditPipeline, EditPipelineConfig
from pds_nerfstudio.integration.source_run import Run
from pds_nerfstudio.methods.pds import PDSPipelineConfig
from pds_nerfstudio.parallel import collectives
from pds_nerfstudio.priors.guidance import GuidanceConfig
from pds_nerfstudio.scenes.representations import Splatfacto

SPLAT_REFINE_STEPS = 30000
"""Steps of the official refinement of a splatfacto edit (pds_config.py: pds_splat_refinement)."""


@dataclass
class RefinePipelineConfig(EditPipelineConfig):
    """Refinement of a pds edit by iterative dataset update with SDEdit."""

    _target: Type = field(default_factory=lambda: RefinePipeline)
    guidance: GuidanceConfig = field(default_factory=lambda: GuidanceConfig(guidance_scale=15.0, num_inference_steps=20))
    """The Stable Diffusion model for SDEdit (official: guidance scale 15 on a 20-step DDIM grid)."""
    edit_every: int = 10
    """Steps between two SDEdits of a training view (official: 10)."""
    skip_ratio_range: Tuple[float, float] = (0.8, 0.9)
    """Fraction of the DDIM grid SDEdit skips, drawn per edit (official: 0.8 to 0.9, i.e. 16 to 18 of 20 steps)."""
    refine: Literal["initial-render", "current-render"] = "initial-render"
    """What SDEdit starts from: the render of the edited scene taken at the start (official release),
    or the current render (the paper's text)."""

    source_description: ClassVar[str] = "a pds run (ns-train pds)"

    @property
    def ratio_control(self) -> Tuple[str, str]:
        return "SDEdit skip ratio", "skip_ratio_range"

    def accepts_source(self, config: TrainerConfig) -> bool:
        return isinstance(config.pipeline, PDSPipelineConfig)

    def with_source(self, run: Run, typed: TypedFlags) -> "RefinePipelineConfig":
        """The pds run supplies data, model and checkpoint, and unless typed its prompts, guidance model and region."""
        completed = super().with_source(run, typed)
        edit = run.config.pipeline
        model_id = self.guidance.model_id if "guidance.model_id" in typed else edit.guidance.model_id
        return dataclasses.replace(
            completed,
            tgt_prompt=self.tgt_prompt if "tgt_prompt" in typed else edit.tgt_prompt,
            src_prompt=self.src_prompt if "src_prompt" in typed else edit.src_prompt,
            guidance=dataclasses.replace(self.guidance, model_id=model_id),
            region=self.region if typed.any_under("region") else edit.region,
        )

    def default_max_num_iterations(self, method_default: Optional[int]) -> Optional[int]:
        """The official refinements: 15000 steps of nerfacto, 30000 of splatfacto."""
        return SPLAT_REFINE_STEPS if isinstance(self.representation, Splatfacto) else method_default

    def check(self, scene_device: str) -> None:
        super().check(scene_device)
        check_ratio_range("--pipeline.skip-ratio-range", self.skip_ratio_range)
        if self.edit_every <= 0:
            raise InputError("--pipeline.edit-every must be positive")
        patch, rays = self.datamanager.patch_size, self.datamanager.train_num_rays_per_batch
        if patch <= 0 or rays < patch**2 or rays % patch**2:
            raise InputError(
                f"--pipeline.datamanager.train-num-rays-per-batch {rays} must be a positive multiple of the "
                f"patch's {patch}x{patch} pixels (--pipeline.datamanager.patch-size {patch}; official: 4096 rays, patch 32)"
            )


class RefinePipeline(EditPipeline):
    """nerfacto's reconstruction training on training images that SDEdit keeps making more realistic.

    The refined images are kept (as 8-bit buffers) in the pipeline's state, so a resumed run trains on
    the images it had; the original capture's files are never touched.
    """

    config: RefinePipelineConfig

    def __init__(self, config: RefinePipelineConfig, device: str, test_mode="val", *args: Any, **kwargs: Any) -> None:
        super().__init__(config, device, test_mode, *args, **kwargs)
        dataset = self.datamanager.train_dataset
        height, width = int(dataset.cameras.height.max()), int(dataset.cameras.width.max())
        self.register_buffer("refined_images", torch.zeros(len(dataset), height, width, 3, dtype=torch.uint8))
        self.register_buffer("refined", torch.zeros(len(dataset), dtype=torch.bool))
        self.initial_renders: Dict[int, Tensor] = {}
        if test_mode == "val":
            self._start_from_renders()

    def _start_from_renders(self) -> None:
        """Render every training view of the edited scene once; the renders are the first training images."""
        for index in range(self.datamanager.num_train_views):
            render = self.training_view_image(index)
            self.initial_renders[index] = render
            self.datamanager.replace_train_image(index, render)
        CONSOLE.log(f"Rendered the {len(self.initial_renders)} training views of the edited scene to refine")

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        """Resume: the field, and the training images as they were refined."""
        super().load_pipeline(loaded_state, step)
        if self.test_mode != "val":  # ns-export, ns-render, ns-viewer: no training images
            return
        for index in self.refined.nonzero()[:, 0].tolist():
            image = self.refined_images[index].float() / 255
            self.datamanager.replace_train_image(index, image[: self._height(index), : self._width(index)])

    def _height(self, index: int) -> int:
        return int(self.datamanager.train_dataset.cameras.height[index])

    def _width(self, index: int) -> int:
        return int(self.datamanager.train_dataset.cameras.width[index])

    def view_to_refine(self, index: int) -> Tensor:
        """[H, W, 3] image SDEdit starts from: the initial render or the current render of view ``index``."""
        if self.config.refine == "initial-render":
            return self.initial_renders[index]
        return self.training_view_image(index)

    def views_to_refine(self, step: int) -> List[int]:
        """The training views this device SDEdits at ``step`` (an SDEdit step): the step's ``views_per_step`` views on
        every device, in turn through the training views."""
        total, count = self.views_in_step, self.datamanager.num_train_views
        first = (step // self.config.edit_every) * total
        return self.device_views([(first + j) % count for j in range(total)])

    @torch.no_grad()
    def refine_views(self, step: int) -> Dict[str, Any]:
        """SDEdit this device's views of ``step`` in one batch and make the results their training images (on every
        device: each shares its results with the others); returns the values it used: the first view, the grid
        steps skipped and the guidance scale."""
        views = self.views_to_refine(step)
        befores = [self.view_to_refine(index).to(self.device) for index in views]
        camera = self.guidance_camera(views[0])
        size = (int(camera.height), int(camera.width))
        images = torch.cat(
            [F.interpolate(before.permute(2, 0, 1)[None], size=size, mode="bilinear", align_corners=False) for before in befores]
        )
        used = self.use_values(
            step,
            tgt_prompt=self.controls.tgt_prompt,
            guidance_scale=self.controls.guidance_scale,
            skip_ratio_range=self.controls.ratio_range,
        )
        num_steps = self.config.guidance.num_inference_steps
        low, high = used["skip_ratio_range"]
        rng = random.Random(step)  # a value of the step: a resumed run draws the same
        skip = rng.randint(int(num_steps * low), int(num_steps * high))
        generators = self.view_generators(step)
        latents = self.guidance.sdedit(
            self.guidance.encode_images(images, generators),
            used["tgt_prompt"],
            num_steps - skip,
            generators,
            guidance_scale=used["guidance_scale"],
        )
        afters = self.guidance.decode_latents(latents).to(self.device)
        refined = []
        for index, before, after in zip(views, befores, afters):
            after = F.interpolate(after[None], size=before.shape[:2], mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
            if self.region is not None:  # SDEdit changes the region only: outside it, the view as refining started
                inside = self.region.view_mask(index, self.datamanager.train_camera(index)).to(self.device)[..., None]
                after = torch.where(inside, after, self.initial_renders[index].to(self.device))
            refined.append((index, (after * 255).round().to(torch.uint8).cpu()))
        for index, image in collectives.all_gather(refined):  # every device's views, on every device
            self.datamanager.replace_train_image(index, image.float().to(self.device) / 255)
            self.refined_images[index, : image.shape[0], : image.shape[1]] = image
            self.refined[index] = True
        if step % self.config.steps_per_log_image == 0:
            first = self.datamanager.train_image(views[0])
            writer.put_image(name="refine/before|after SDEdit", image=torch.cat([befores[0], first], 1).cpu(), step=step)
        return {"refined_view": views[0], "sdedit_skip": skip, "sdedit_guidance_scale": used["guidance_scale"]}

    def get_train_loss_dict(self, step: int):
        metrics: Dict[str, Any] = {}
        self.share_controls()
        self.take_region()
        if step % self.config.edit_every == 0:
            metrics.update(self.refine_views(step))
        if isinstance(self.representation, Splatfacto):  # whole views, as splatfacto trains
            camera, batch = self.datamanager.next_train_view(step)
            outputs = self.model(camera)
            model_metrics = self.model.get_metrics_dict(outputs, batch)
            loss_dict = self.model.get_loss_dict(outputs, batch, model_metrics)
        else:
            outputs, loss_dict, model_metrics = super().get_train_loss_dict(step)
        metrics = {**model_metrics, **metrics}
        self.report(step, {name: value for name, value in metrics.items() if name in ("psnr", "refined_view", "sdedit_skip")})
        return outputs, loss_dict, metrics
