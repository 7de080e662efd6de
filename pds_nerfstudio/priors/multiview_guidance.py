"""A multi-view prior (MVDream's format, :mod:`pds_nerfstudio.priors.multiview`) as guidance, each view's camera fed to
the UNet and one timestep for all the views of a step: with the objective Perturb-and-Revise's released code descends
(threestudio's multi-view guidance with ``recon_loss``, :mod:`pds_nerfstudio.score_distillation.reconstruction`; the t
drawn on the training schedule's 1000 steps, the negative prompt as the unconditional branch), or with PDS's
distillation gradient (:meth:`MultiViewGuidance.distil_views`; ours: PDS's inference grid and its empty unconditional
prompt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple, Type

import torch
from torch import Tensor

from pds_nerfstudio.common.errors import InputError, check_ratio_range
from pds_nerfstudio.priors.guidance import (
    GuidanceConfig,
    GuidanceOutput,
    StableDiffusionGuidance,
    check_inference_steps,
)
from pds_nerfstudio.priors.loading import (
    check_device,
    check_pretrained_available,
    check_weight_files,
    load_stable_diffusion,
)
from pds_nerfstudio.priors.multiview import MULTIVIEW_INFO, make_multiview, read_multiview_info
from pds_nerfstudio.score_distillation.gradients import (
    Generators,
    add_noise,
    randn_like,
    sample_timesteps,
)
from pds_nerfstudio.score_distillation.reconstruction import Reconstruction, reconstruction_loss, reconstruction_target

RELEASED_NEGATIVE_PROMPT = (
    "ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and unclear, cropped, "
    "lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn face, deformed, dehydrated, "
    "bad proportions"
)
"""The negative prompt of Perturb-and-Revise's (and MVDream-threestudio's) released configs."""


@dataclass
class MultiViewGuidanceConfig(GuidanceConfig):
    """A multi-view prior: ``--pipeline.guidance.*`` (:class:`GuidanceConfig`; the method, inference grid and posterior
    coefficients serve pds on orbit views, :meth:`MultiViewGuidance.distil_views`) and the released objective's own
    settings. The released objective draws its t on the training schedule's 1000 steps within ``t_ratio_range``, not
    on the inference grid."""

    _target: Type = field(default_factory=lambda: MultiViewGuidance)
    model_id: str = ""
    """A multi-view prior folder (pds-convert-mvdream's output, or the toy world's)."""
    guidance_scale: float = 50.0
    """Classifier-free guidance scale (released: 50)."""
    negative_prompt: str = RELEASED_NEGATIVE_PROMPT
    """The unconditional branch's prompt (released: the list above)."""
    std_rescale: float = 0.5
    """recon_std_rescale (released: 0.5): the share of the target rescaled to the conditional estimate's spread."""

    def check(self, scene_device: str) -> None:
        """Cheap checks of the flags, before anything loads; raises InputError."""
        check_ratio_range("--pipeline.guidance.t-ratio-range", self.t_ratio_range)
        check_device(self.device or scene_device, "--pipeline.guidance.device")
        folder = Path(self.model_id).expanduser()
        try:
            info = read_multiview_info(folder) if folder.is_dir() else None
        except ValueError as error:
            raise InputError(f"--pipeline.guidance.model-id {self.model_id}: {error}") from None
        check_pretrained_available(self.model_id, "multi-view prior", "model_index.json", "--pipeline.guidance.model-id", "diffusers")
        if info is None:
            raise InputError(
                f"--pipeline.guidance.model-id {self.model_id}: not a multi-view prior folder (no {MULTIVIEW_INFO}); "
                "convert MVDream's checkpoint with pds-convert-mvdream"
            )
        check_weight_files(folder, "--pipeline.guidance.model-id")
        check_inference_steps(self.model_id, self.num_inference_steps)
        if not 0.0 <= self.std_rescale <= 1.0:
            raise InputError(f"--pipeline.guidance.std-rescale {self.std_rescale}: need a number in [0, 1]")


@dataclass
class MultiViewOutput:
    """One step of the multi-view guidance: the loss to descend and what the step used."""

    loss: Tensor
    """0.5 sum (z - sg(x0))^2 / B: its gradient wrt each view's latent is (z - x0) / B."""
    t: Tensor
    """The step's timestep, one for all its views [1]."""
    reconstruction: Reconstruction
    """The target and its parts."""


class MultiViewGuidance(StableDiffusionGuidance):
    """A multi-view prior as a frozen guide: text and image encoding as Stable Diffusion's, the UNet with its cameras
    and cross-view attention."""

    def __init__(self, config: MultiViewGuidanceConfig, device: str) -> None:
        info = read_multiview_info(Path(config.model_id).expanduser())
        assert info is not None, "MultiViewGuidanceConfig.check runs first"
        self.info = info
        super().__init__(config, device)
        self.config: MultiViewGuidanceConfig = config

    def _load(self):
        pipe = load_stable_diffusion(self.config.model_id, torch.float32)
        try:
            make_multiview(pipe.unet, self.info, Path(self.config.model_id))
        except ValueError as error:
            raise InputError(f"--pipeline.guidance.model-id: {error}") from None
        return self.prepare(pipe)

    @property
    def num_views(self) -> int:
        return self.info.num_views

    def draw_timestep(self, t_ratio_range: Tuple[float, float], generator: Optional[torch.Generator] = None) -> Tensor:
        """One t for the step, uniform on the training schedule's integers from int(T low) to int(T high) (the
        released code's randint over its min and max step)."""
        steps = len(self.alphas_cumprod)
        low, high = int(steps * t_ratio_range[0]), int(steps * t_ratio_range[1])
        return torch.randint(low, high + 1, (1,), generator=generator)

    def __call__(  # type: ignore[override]
        self, latents: Tensor, prompt: str, cameras: Tensor, t_ratio_range: Optional[Tuple[float, float]] = None,
        generator: Generators = None, guidance_scale: Optional[float] = None,
    ) -> MultiViewOutput:  # fmt: skip
        """The released objective for ``latents`` [B, 4, h, w] (with graph; B whole groups of the prior's views) seen
        by ``cameras`` [B, 16] (:func:`pds_nerfstudio.priors.multiview.camera_vectors`); ``guidance_scale`` overrides
        the configured one for this step (the viewer)."""
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        batch = latents.shape[0]
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        t = self.draw_timestep(t_ratio_range or self.config.t_ratio_range, first)
        with torch.no_grad():
            x0 = latents.detach().to(self.device)
            x_t = add_noise(self.alphas_cumprod, x0, randn_like(x0, first), t.repeat(batch))
            cond = self.text_embedding(prompt).expand(batch, -1, -1)
            negative = self.text_embedding(self.config.negative_prompt).expand(batch, -1, -1)
            camera = cameras.to(self.device, self.dtype)
            eps = self.pipe.unet(
                torch.cat([x_t, x_t]).to(self.dtype),
                t.repeat(2 * batch).to(self.device),
                encoder_hidden_states=torch.cat([cond, negative]).to(self.dtype),
                class_labels=torch.cat([camera, camera]),
            ).sample.float()
            eps_cond, eps_negative = eps.chunk(2)
            target = reconstruction_target(
                self.alphas_cumprod, x_t, t.repeat(batch), eps_cond, eps_negative, scale,
                self.num_views, self.config.std_rescale,
            )  # fmt: skip
        loss = reconstruction_loss(latents, target.x0.to(latents.device))
        return MultiViewOutput(loss=loss, t=t, reconstruction=target)

    def distil_views(
        self, x0_tgt: Tensor, x0_src: Tensor, tgt_prompt: str, src_prompt: str, cameras: Tensor,
        t_ratio_range: Optional[Tuple[float, float]] = None, generator: Generators = None,
        guidance_scale: Optional[float] = None,
    ) -> GuidanceOutput:  # fmt: skip
        """``pds`` with this prior (ours; the release guides it only with its x0-reconstruction objective): the
        configured distillation gradient (PDS by default) for target latents ``x0_tgt`` [B, 4, h, w] (with graph; B
        whole groups of the prior's views) against the source's latents of the same views ``x0_src``, each view's
        camera [B, 16] fed to the UNet in both branches. One (t, t_prev) for all the views, drawn on PDS's inference
        grid from the first generator, as the prior denoises the views of an object at one t; the noises are each
        view's own; the empty prompt as the unconditional branch, as PDS."""
        low, high = t_ratio_range or self.config.t_ratio_range
        batch = x0_tgt.shape[0]
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        t, t_prev = (value.repeat(batch) for value in sample_timesteps(self.timestep_grid, low, high, 1, first))
        camera = cameras.to(self.device)

        def predict(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:  # source and target in one call: the cameras twice
            labels = camera.repeat(x_t.shape[0] // batch, 1)
            return self.predict_noise(x_t, t, cond, guidance_scale, class_labels=labels)

        return self.distil(x0_tgt, x0_src, tgt_prompt, src_prompt, t, t_prev, predict, generator)
