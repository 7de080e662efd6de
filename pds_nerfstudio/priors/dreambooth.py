"""``pds-dreambooth``: personalise Stable Diffusion to a scene before editing it (PDS paper Sec. 5).

PDS matches the target against the source's generative trajectory, so on real scenes the paper uses a
Stable Diffusion fine-tuned on the scene's own images with DreamBooth (Ruiz et al., CVPR 2023): the UNet
learns to reproduce the source images under an instance prompt with a rare identifier ("a photo of a
sks bear"), while a prior-preservation loss on images the base model generates from the class prompt
("a photo of a bear") keeps the class as it was. One training step, as in the official release:

    x0      = VAE latents of one instance image and one class image (short side resized, random crop)
    x_t     = sqrt(a_t) x0 + sqrt(1 - a_t) eps,   eps ~ N(0, I),   t ~ U{0, ..., T - 1}
    loss    = ||eps_hat(x_t, y_instance) - eps||^2  +  w_prior ||eps_hat(x_t', y_class) - eps'||^2   (means)

``full`` trains every UNet weight and saves a whole pipeline; ``lora`` trains low-rank adapters on the
UNet's attention projections (peft, as diffusers loads LoRA) and saves only the adapter, with the base
model it belongs to. Either output folder is what ``--pipeline.guidance.model-id`` takes.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.loading import (
    DREAMBOOTH_INFO,
    LORA_WEIGHTS_NAME,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASS_IMAGES_DIR = "class_images"
CHECKPOINT_NAME = "checkpoint.pt"
LORA_TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
"""The UNet's attention projections, where diffusers' DreamBooth LoRA puts its adapters."""
RESUME_IGNORES = ("max_train_steps", "checkpoint_every", "device", "output_dir")
"""Settings a resumed run may change (the precision the device gives may not: it is a setting of its own)."""
CLASS_IMAGE_SETTINGS = ("model_id", "class_prompt", "class_image_steps", "seed", "precision")
"""Settings the class images depend on."""


class DreamBoothTrainer:
    """The fine-tuning loop on diffusers' public components (UNet, VAE, text encoder, the training scheduler)."""

    def __init__(self, config: Any, pipe, device: torch.device) -> None:
        """``config``: the ``pds-dreambooth`` command's settings (:class:`pds_nerfstudio.cli.dreambooth.DreamBooth`)."""
        from diffusers import DDPMScheduler

        self.config, self.pipe, self.device = config, pipe, device
        self.unet = pipe.unet
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        if config.mode == "lora":
            from peft import LoraConfig

            self.unet.requires_grad_(False)
            torch.manual_seed(config.seed)  # peft draws the adapters' initial weights from the global generator
            self.unet.add_adapter(
                LoraConfig(
                    r=config.lora_rank,
                    lora_alpha=config.lora_rank,
                    init_lora_weights="gaussian",
                    target_modules=LORA_TARGET_MODULES,
                )
            )
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.unet.train()
        self.parameters = [p for p in self.unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters,
            lr=config.lr,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.uses_fp16(device))
        self.step = 0

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> Tensor:
        embedding, _ = self.pipe.encode_prompt(prompt, self.device, 1, do_classifier_free_guidance=False)
        return embedding

    @torch.no_grad()
    def latents(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """VAE latents of images in [-1, 1], the posterior sampled with ``generator`` (the step's seed)."""
        vae = self.pipe.vae
        posterior = vae.encode(images.to(self.device, vae.dtype)).latent_dist
        return posterior.sample(generator=generator).float() * vae.config.scaling_factor

    def train(self, instance_paths: List[Path], class_paths: List[Path], output_dir: Path) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        config = self.config
        self.resume(output_dir)
        instance = [load_image(p) for p in instance_paths]
        classes = [load_image(p) for p in class_paths]
        embeddings = self.text_embedding(config.instance_prompt)
        if classes:
            embeddings = torch.cat([embeddings, self.text_embedding(config.class_prompt)])
        CONSOLE.log(
            f"DreamBooth ({config.mode}): {len(instance)} instance images, {len(classes)} class images, "
            f"{sum(p.numel() for p in self.parameters) / 1e6:.2f}M trained parameters, steps {self.step} to {config.max_train_steps}"
        )
        columns = [TextColumn("[bold]DreamBooth"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                   TextColumn("{task.fields[rate]} steps/s"), TimeRemainingColumn()]  # fmt: skip
        with Progress(*columns, console=CONSOLE) as progress:
            task = progress.add_task("train", total=config.max_train_steps, completed=self.step, loss="-", rate="-")
            start, start_step = time.perf_counter(), self.step
            while self.step < config.max_train_steps:
                rng = random.Random(f"{config.seed}-{self.step}")  # a value of the step: a resumed run draws the same
                generator = torch.Generator().manual_seed(rng.getrandbits(63))
                batch = [crop(rng.choice(instance), config.resolution, rng)]
                if classes:
                    batch.append(crop(rng.choice(classes), config.resolution, rng))
                loss = self.training_step(torch.stack(batch), embeddings, generator)
                self.step += 1
                rate = (self.step - start_step) / (time.perf_counter() - start)
                progress.update(task, completed=self.step, loss=f"{loss:.4f}", rate=f"{rate:.2f}")
                if self.step % config.checkpoint_every == 0 and self.step < config.max_train_steps:
                    self.save_checkpoint(output_dir)

    def training_step(self, images: Tensor, embeddings: Tensor, generator: torch.Generator) -> float:
        """One optimizer step on [instance, class] images in [-1, 1]; returns the loss."""
        config = self.config
        latents = self.latents(images, generator)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        num_train = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_train, (latents.shape[0],), generator=generator).to(self.device)
        with config.autocast(self.device):
            losses = denoising_losses(self.unet, self.noise_scheduler, latents, noise, timesteps, embeddings)
            loss = losses[0] + (config.prior_loss_weight * losses[1] if len(losses) > 1 else 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def trainable_state(self) -> Dict[str, Tensor]:
        if self.config.mode == "lora":
            from peft.utils import get_peft_model_state_dict

            return get_peft_model_state_dict(self.unet)
        return self.unet.state_dict()

    def save_checkpoint(self, output_dir: Path) -> None:
        """The trained weights, the optimizer and the step, written whole or not at all."""
        state = {
            "step": self.step,
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        partial = output_dir / (CHECKPOINT_NAME + ".partial")
        torch.save(state, partial)
        os.replace(partial, output_dir / CHECKPOINT_NAME)

    def resume(self, output_dir: Path) -> None:
        path = output_dir / CHECKPOINT_NAME
        if not path.is_file():
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        if self.config.mode == "lora":
            from peft.utils import set_peft_model_state_dict

            set_peft_model_state_dict(self.unet, state["trainable"])
        else:
            self.unet.load_state_dict(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # float16 runs only (a float32 run's scaler is disabled and saves nothing)
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        CONSOLE.log(f"Resuming DreamBooth at step {self.step} from {path}")

    def save(self, output_dir: Path) -> None:
        """full: the whole pipeline with the trained UNet; lora: the adapter alone (the base model is recorded)."""
        self.unet.eval()
        if self.config.mode == "lora":
            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet))
            StableDiffusionPipeline.save_lora_weights(output_dir, unet_lora_layers=layers, weight_name=LORA_WEIGHTS_NAME)
        else:
            self.unet.disable_gradient_checkpointing()
            self.pipe.save_pretrained(output_dir)


def denoising_losses(unet, scheduler, latents: Tensor, noise: Tensor, timesteps: Tensor, embeddings: Tensor) -> List[Tensor]:
    """The DreamBooth loss of each batch element: mean squared error of the UNet's prediction of the
    noise (or of v, for a v-prediction model) at x_t = scheduler.add_noise(latents, noise, t)."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, encoder_hidden_states=embeddings).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return [F.mse_loss(p.float(), q.float()) for p, q in zip(prediction, target)]


@torch.no_grad()
def ensure_class_images(pipe, prompt: str, count: int, folder: Path, steps: int, seed: int) -> List[Path]:
    """``count`` images of ``prompt`` from the base model in ``folder``, at the model's own size (512 px for SD 1.5;
    training resizes them as it does the instance images, as the official script does): those already there are
    kept, the rest generated."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{index:04d}.png" for index in range(count)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        CONSOLE.log(f"Generating {len(missing)} class images of {prompt!r} with the base model into {folder}")
    else:
        CONSOLE.log(f"Using the {count} class images in {folder}")
    for path in missing:
        generator = torch.Generator().manual_seed(seed * 100003 + int(path.stem))
        image = pipe(prompt, num_inference_steps=steps, generator=generator).images[0]
        partial = path.with_suffix(".partial.png")
        image.save(partial)
        os.replace(partial, path)
    return paths


def check_image(path: Path) -> None:
    """Raise InputError unless ``path`` is an image file that can be read (cheap: PIL checks the file, no decoding)."""
    from PIL import Image

    if not Path(path).is_file():
        raise InputError(f"the image {path} is missing; restore it, or pass a folder of the images to use")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises several kinds for truncated, empty or foreign files
        raise InputError(f"the image {path} cannot be read ({type(error).__name__}); replace or remove it") from None


def load_image(path: Path) -> Tensor:
    """An image file as [3, H, W] uint8, turned as its EXIF orientation says, RGBA composited over white."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    array = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return array.view(image.height, image.width, 3).permute(2, 0, 1).clone()


def to_unit_range(image: Tensor) -> Tensor:
    """uint8 [..., 3, H, W] to float32 in [-1, 1], the VAE's input range."""
    return image.float() / 127.5 - 1


def crop(image: Tensor, resolution: int, rng: random.Random) -> Tensor:
    """Resize so the short side is ``resolution`` (bilinear, antialiased), then a random square crop of that size;
    a uint8 image becomes float32 in [-1, 1]."""
    if image.dtype == torch.uint8:
        image = to_unit_range(image)
    height, width = image.shape[-2:]
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    resized = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = rng.randint(0, size[0] - resolution), rng.randint(0, size[1] - resolution)
    return resized[:, top : top + resolution, left : left + resolution]


def identifier_words(instance_prompt: str, class_prompt: str) -> List[str]:
    """Words of the instance prompt that the class prompt lacks: DreamBooth's identifier (e.g. 'sks')."""
    class_words = set(re.findall(r"\w+", class_prompt.lower()))
    return [word for word in re.findall(r"\w+", instance_prompt.lower()) if word not in class_words]


def latent_multiple(model_id: str) -> Optional[int]:
    """What the image size must be a multiple of for a local Stable Diffusion folder: the VAE's downsampling times
    the UNet's (64 for SD 1.x/2.x), read from their configs; None when the configs are not local files."""
    folder = Path(model_id).expanduser()
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return 2 ** (len(vae["block_out_channels"]) - 1) * 2 ** (len(unet["down_block_types"]) - 1)


def model_reference(model_id: str) -> str:
    """A model id as recorded: a local folder as its absolute path, a Hugging Face id as it is."""
    path = Path(model_id).expanduser()
    return str(path.resolve()) if path.exists() else model_id


def write_info(output_dir: Path, settings: Dict[str, Any], finished: bool) -> None:
    """``dreambooth.json``: the prompts, the settings, the base model and whether training ended."""
    info = {
        "mode": settings["mode"],
        "base_model": settings["model_id"],
        "instance_prompt": settings["instance_prompt"],
        "class_prompt": settings["class_prompt"],
        "finished": finished,
        "settings": settings,
    }
    partial = output_dir / (DREAMBOOTH_INFO + ".partial")
    partial.write_text(json.dumps(info, indent=2))
    os.replace(partial, output_dir / DREAMBOOTH_INFO)
