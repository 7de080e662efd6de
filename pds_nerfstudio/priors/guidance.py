"""Stable Diffusion guidance on diffusers: text and image encoding, one batched UNet call per step.

Nothing is loaded until the first editing step needs it, so ``ns-train -h``, ``ns-export``,
``ns-render`` and ``ns-viewer`` never load Stable Diffusion. The gradient math itself lives in
:mod:`pds_nerfstudio.score_distillation`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, Literal, Optional, Tuple, Type

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from pds_nerfstudio.common.errors import InputError, check_ratio_range
from pds_nerfstudio.priors.loading import (
    DEFAULT_MODEL_ID,
    SUPPORTED_PREDICTIONS,
    check_device,
    check_model_available,
    load_stable_diffusion,
    model_dtype,
    num_train_timesteps,
)
from pds_nerfstudio.score_distillation.gradients import (
    DistillationMethod,
    Generators,
    PosteriorCoefficients,
    distillation_gradient,
    randn_like,
    sample_timesteps,
    surrogate_loss,
)


@dataclass
class GuidanceConfig(InstantiateConfig):
    """Configuration of the Stable Diffusion guidance."""

    _target: Type = field(default_factory=lambda: StableDiffusionGuidance)
    model_id: str = DEFAULT_MODEL_ID
    """Stable Diffusion 1.x pipeline: a Hugging Face id (needs the hub or its cache), a local folder saved by diffusers,
    or a pds-dreambooth output (a whole fine-tuned pipeline, or a LoRA adapter loaded on top of its base model)."""
    method: DistillationMethod = "pds"
    """Distillation gradient: pds (Posterior Distillation Sampling), or the baselines sds (DreamFusion) and dds (Delta Denoising Score)."""
    guidance_scale: float = 100.0
    """Classifier-free guidance scale (official PDS: 100)."""
    num_inference_steps: int = 500
    """Size of the DDIM inference grid on which t and t_prev are drawn (official: 500)."""
    t_ratio_range: Tuple[float, float] = (0.02, 0.98)
    """Range of grid positions t is drawn from, as fractions of the grid (official: 0.02 to 0.98)."""
    posterior_coefficients: PosteriorCoefficients = "official"
    """PDS posterior coefficients: official (one-step beta_t, keeps the identity term psi(t)) or exact (strided posterior, psi = 0)."""
    device: Optional[str] = None
    """Device for the diffusion model, e.g. cuda:1 to keep it on a second GPU; default: the scene's device."""
    dtype: Literal["auto", "float16", "float32"] = "auto"
    """Precision of the UNet and text encoder: auto is float32 on every device, as in the official release;
    float16 halves their memory and time on a GPU but moves the gradient (guidance 100 amplifies the UNet's
    rounding; docs/benchmarks.md, "Precision"). The VAE, which the gradient passes through, always runs in float32."""

    def check(self, scene_device: str) -> None:
        """Cheap checks of the flags, run before any heavy work; raises InputError."""
        check_ratio_range("--pipeline.guidance.t-ratio-range", self.t_ratio_range)
        check_device(self.device or scene_device, "--pipeline.guidance.device")
        check_model_available(self.model_id)
        check_inference_steps(self.model_id, self.num_inference_steps)


def check_inference_steps(model_id: str, num_inference_steps: int) -> None:
    """``--pipeline.guidance.num-inference-steps`` must lie between 1 and the model's training timesteps."""
    train_steps = num_train_timesteps(model_id)
    if not 1 <= num_inference_steps <= train_steps:
        raise InputError(
            f"--pipeline.guidance.num-inference-steps {num_inference_steps}: need 1 to the model's "
            f"{train_steps} training timesteps (official: 500 for pds, 20 for pds-refine)"
        )


@dataclass
class GuidanceOutput:
    """One guidance step: the loss term to add and diagnostics."""

    loss: Tensor
    """Surrogate loss whose gradient wrt the target latent is ``grad`` (official release: mean reduction)."""
    grad: Tensor
    """Distillation gradient in latent space."""
    t: Tensor
    """The timestep drawn for this step."""
    x0: Tensor
    """The target latent the gradient is for (detached)."""
    x0_hat: Tensor
    """The target's one-step estimate at t: what the denoiser makes of the noised target (PDS paper Eq. 9)."""


class StableDiffusionGuidance:
    """Stable Diffusion as a frozen prior: encodes text and images, and returns distillation gradients.

    Deliberately not an ``nn.Module``: its weights never enter the scene's checkpoints.
    """

    def __init__(self, config: GuidanceConfig, device: str) -> None:
        self.config = config
        self.device = torch.device(config.device or device)
        self.dtype = model_dtype(config.dtype, self.device)
        self._pipe = None
        self.prediction_type = "epsilon"  # what the loaded UNet predicts (its scheduler's prediction_type), set on load
        self._text_embeddings: Dict[str, Tensor] = {}

    @property
    def pipe(self):
        """The diffusers pipeline, loaded on first use."""
        if self._pipe is None:
            self._pipe = self._load()
        return self._pipe

    def _load(self):
        # Loaded in float32 (as saved) and cast down where asked: the VAE keeps its float32 weights.
        return self.prepare(load_stable_diffusion(self.config.model_id, torch.float32))

    def prepare(self, pipe):
        """Make a loaded ``StableDiffusionPipeline`` this guidance's model: DDIM on the configured grid, frozen,
        on the device; UNet and text encoder in the configured precision, the VAE in float32.

        Why the VAE stays in float32: the gradient reaching the rendered image passes back through the VAE
        encoder, and with the surrogate loss's mean reduction it enters there at about 1e-5, in float16's
        subnormal range (docs/benchmarks.md, "Precision", has the measurement).
        """
        from diffusers import DDIMScheduler

        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in SUPPORTED_PREDICTIONS:
            raise InputError(f"{self.config.model_id} predicts {self.prediction_type!r}; edits use epsilon or v-prediction models")
        # predict_noise hands the scheduler the noise whatever the UNet predicts
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
        pipe.scheduler.set_timesteps(self.config.num_inference_steps)
        pipe.set_progress_bar_config(disable=True)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()
        for module, dtype in ((pipe.unet, self.dtype), (pipe.text_encoder, self.dtype), (pipe.vae, torch.float32)):
            module.to(self.device)
            if module.dtype != dtype:  # diffusers warns about every cast, even to the dtype a module has
                module.to(dtype)
        self._pipe = pipe
        return pipe

    @property
    def alphas_cumprod(self) -> Tensor:
        """The training schedule's alphas_cumprod (length ``num_train_timesteps``)."""
        return self.pipe.scheduler.alphas_cumprod

    @property
    def timestep_grid(self) -> Tensor:
        """The inference grid in ascending order (1, 3, ..., 999 for SD 1.5 and 500 steps)."""
        return self.pipe.scheduler.timesteps.flip(0)

    @property
    def vae_scale_factor(self) -> int:
        """Spatial downsampling of the VAE, read from the loaded model (8 for Stable Diffusion)."""
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> Tensor:
        """CLIP text embedding of ``prompt`` [1, tokens, dim], computed once per prompt."""
        if prompt not in self._text_embeddings:
            embedding, _ = self.pipe.encode_prompt(
                prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            self._text_embeddings[prompt] = embedding
        return self._text_embeddings[prompt]

    def encode_images(self, images: Tensor, generator: Generators = None) -> Tensor:
        """VAE latents (float32) of images [B, 3, H, W] in [0, 1], a sample of the posterior drawn from ``generator``
        (or one generator per image); differentiable wrt the images."""
        vae = self.pipe.vae
        posterior = vae.encode((2 * images - 1).to(self.device, vae.dtype)).latent_dist
        generator = list(generator) if isinstance(generator, (list, tuple)) else generator
        return posterior.sample(generator=generator).float() * vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] (float32) from VAE latents."""
        vae = self.pipe.vae
        images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float()
        return (images / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def predict_noise(
        self, x_t: Tensor, t: Tensor, cond: Tensor, guidance_scale: Optional[float] = None,
        class_labels: Optional[Tensor] = None,
    ) -> Tensor:  # fmt: skip
        """Classifier-free guided noise prediction in ONE UNet call; float32 in and out, model dtype inside. A
        v-prediction UNet's output is converted to the noise here, the one place every method (pds, sds, dds, SDEdit,
        pnr's selection loss) reads the UNet.

        ``guidance_scale`` overrides the configured scale (the viewer can change it while editing); ``class_labels``
        [B, ...] go to the UNet with both branches (a multi-view prior's cameras)."""
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        uncond = self.text_embedding("").expand_as(cond)
        labels = {} if class_labels is None else {"class_labels": torch.cat([class_labels, class_labels]).to(self.device, self.dtype)}
        eps = self.pipe.unet(
            torch.cat([x_t, x_t]).to(self.dtype),
            torch.cat([t, t]).to(self.device),
            encoder_hidden_states=torch.cat([cond, uncond]).to(self.dtype),
            **labels,
        ).sample.float()
        eps_cond, eps_uncond = eps.chunk(2)
        # classifier-free guidance
        guided = eps_uncond + scale * (eps_cond - eps_uncond)
        if self.prediction_type == "v_prediction":
            # v = sqrt(a_t) eps - sqrt(1 - a_t) x0, so eps = sqrt(a_t) v + sqrt(1 - a_t) x_t (Salimans and Ho 2022;
            # affine in v with the same x_t for both halves, so it commutes with the guidance above)
            a_t = self.alphas_cumprod.to(x_t.device)[t.to(x_t.device).long()].view(-1, *[1] * (x_t.dim() - 1))
            guided = a_t.sqrt() * guided + (1 - a_t).sqrt() * x_t.float()
        return guided

    @torch.no_grad()
    def sdedit(
        self,
        latents: Tensor,
        prompt: str,
        num_denoise_steps: int,
        generator: Optional[torch.Generator] = None,
        guidance_scale: Optional[float] = None,
    ) -> Tensor:
        """SDEdit (Meng et al. 2022) on the DDIM grid of ``num_inference_steps``: noise the latents to the grid
        step that leaves ``num_denoise_steps`` steps, then denoise them with ``prompt`` (diffusers' DDIM step,
        eta 0). The official release skips 16 to 18 of 20 steps, i.e. denoises 2 to 4; 0 returns the input."""
        scheduler = self.pipe.scheduler
        if not 0 <= num_denoise_steps <= len(scheduler.timesteps):
            raise ValueError(f"num_denoise_steps must be in [0, {len(scheduler.timesteps)}], got {num_denoise_steps}")
        if num_denoise_steps == 0:
            return latents
        timesteps = scheduler.timesteps[-num_denoise_steps:]  # descending: the last steps of the trajectory
        batch = latents.shape[0]
        x_t = scheduler.add_noise(latents, randn_like(latents, generator), timesteps[:1].repeat(batch))
        cond = self.text_embedding(prompt).expand(batch, -1, -1)
        for t in timesteps:
            eps = self.predict_noise(x_t, t.repeat(batch), cond, guidance_scale)
            x_t = scheduler.step(eps, t, x_t, eta=0.0).prev_sample
        return x_t

    def __call__(
        self,
        x0_tgt: Tensor,
        x0_src: Tensor,
        tgt_prompt: str,
        src_prompt: str,
        t_ratio_range: Optional[Tuple[float, float]] = None,
        generator: Generators = None,
        guidance_scale: Optional[float] = None,
    ) -> GuidanceOutput:
        """Distillation gradient for target latents ``x0_tgt`` (with graph) against source latents ``x0_src``.

        Args:
            t_ratio_range: overrides the configured range for this step (timestep annealing, the viewer).
            guidance_scale: overrides the configured guidance scale for this step (the viewer).
            generator: where the timesteps and noises are drawn from; one generator per view gives each view the
                draws it would get in any other batch (or on another device).
        """
        low, high = t_ratio_range or self.config.t_ratio_range
        t, t_prev = sample_timesteps(self.timestep_grid, low, high, x0_tgt.shape[0], generator)
        predict = functools.partial(self.predict_noise, guidance_scale=guidance_scale)
        return self.distil(x0_tgt, x0_src, tgt_prompt, src_prompt, t, t_prev, predict, generator)

    def distil(
        self, x0_tgt: Tensor, x0_src: Tensor, tgt_prompt: str, src_prompt: str, t: Tensor, t_prev: Tensor,
        predict: Callable[[Tensor, Tensor, Tensor], Tensor], generator: Generators,
    ) -> GuidanceOutput:  # fmt: skip
        """The configured distillation gradient at the drawn timesteps (t, t_prev) [B], the noise predicted by
        ``predict(x_t, t, cond)``."""
        batch = x0_tgt.shape[0]
        cond_tgt = self.text_embedding(tgt_prompt).expand(batch, -1, -1)
        cond_src = self.text_embedding(src_prompt).expand(batch, -1, -1)
        with torch.no_grad():
            output = distillation_gradient(
                self.config.method,
                predict,
                self.alphas_cumprod,
                x0_tgt.to(self.device),
                x0_src.to(self.device),
                cond_tgt,
                cond_src,
                t,
                t_prev,
                generator=generator,
                coefficients=self.config.posterior_coefficients,
                betas=self.pipe.scheduler.betas,
            )
        grad = output.grad.to(x0_tgt.device)
        x0_hat = output.x0_hat_tgt.to(x0_tgt.device)
        return GuidanceOutput(loss=surrogate_loss(x0_tgt, grad), grad=grad, t=t, x0=x0_tgt.detach(), x0_hat=x0_hat)
