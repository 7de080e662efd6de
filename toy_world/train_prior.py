"""Train the toy world's prior: a complete Stable Diffusion pipeline folder (diffusers' ``StableDiffusionPipeline``:
UNet2DConditionModel, AutoencoderKL, a CLIP text encoder and tokenizer, SD 1.5's DDPM schedule, epsilon prediction)
that knows the toy world of :mod:`toy_world.world` from its captions, small enough to train on two CPU cores.

    python -m toy_world.train_prior --output toy_world/prior          # the committed model (about 45 minutes)
    python -m toy_world.train_prior --output /tmp/p --vae-steps 2 --unet-steps 2 --vae-refit-steps 2 --images 64   # smoke

1. render ``--images`` random views of the world at ``--resolution`` px with their captions (:func:`training_images`);
2. train the VAE on them (L1 + a small KL term); its ``scaling_factor`` is set so the latents have unit variance, as
   SD's 0.18215 does for its VAE;
3. train the UNet and the text encoder together on the denoising loss, ||eps_hat(x_t, y) - eps||^2 with t uniform
   in [0, 1000) on SD 1.5's schedule, the caption dropped to "" for ``--caption-dropout`` of the steps so that
   classifier-free guidance has an unconditional model; the UNet's weights are averaged (EMA) and the average saved;
4. refit the VAE to colours the world lacks, the world's latents kept (:func:`refit_vae`; ``--refit-only`` runs just
   this stage on a trained folder, as the committed prior's was);
5. ``save_pretrained`` the pipeline with a DDIM scheduler of SD 1.5's schedule, and write the model card (README.md)
   and ``card.json`` (world, captions, resolution, steps, final losses, seed, sha256 of each weight file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from toy_world.models import SD15_SCHEDULER, write_clip_tokenizer_files
from toy_world.world import CAPTION_WORDS, DARK, DARK_ALBEDO, all_captions, caption, training_images

CARD_NAME = "card.json"
WORLD = (
    "toy_world.world: one ball or cube of four colours on a grey floor, cameras on a ring (radius 2.6-3.4, elevation "
    "20-40 degrees) looking at it, 45 degree field of view"
)
"""What the models' cards say of the world they were trained on."""
DARK_WORLD = "; {share:.0%} of the images with the object's albedo darkened by a factor of {low}-{high}, its colour captioned '{word} <colour>'"
"""What the card adds to :data:`WORLD` for a prior trained with ``--dark-share``."""
MAX_TOKENS = 16
"""Tokenizer and text encoder length: the longest caption is 13 tokens with CLIP's start and end tokens (a dark one)."""


def build_models(resolution: int, tokenizer_dir: Path, unet_channels=(32, 64), dark: bool = False, latent_channels: int = 4):
    """The untrained tokenizer (the world's words, and :data:`DARK` when ``dark``), text encoder, VAE (``latent_channels``
    at half the resolution) and UNet (``unet_channels`` per block), seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    files = write_clip_tokenizer_files(tokenizer_dir, (*CAPTION_WORDS, DARK) if dark else CAPTION_WORDS)
    tokenizer = CLIPTokenizer(vocab=str(files / "vocab.json"), merges=str(files / "merges.txt"), model_max_length=MAX_TOKENS)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            hidden_size=64, intermediate_size=128, projection_dim=64, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=MAX_TOKENS, vocab_size=len(tokenizer),
        )
    )  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8,
        sample_size=resolution,
    )  # fmt: skip
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=resolution // 2, in_channels=latent_channels, out_channels=latent_channels, layers_per_block=1, block_out_channels=tuple(unet_channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    )  # fmt: skip
    return tokenizer, text_encoder, vae, unet


def off_world_colours(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] recoloured off the world: a random gain and offset per channel, then three
    rectangles of random colour (3 to 15 px a side) per image."""
    batch, _, height, width = x.shape
    gain = torch.empty(batch, 3, 1, 1).uniform_(0.6, 1.4, generator=generator)
    offset = torch.empty(batch, 3, 1, 1).uniform_(-0.2, 0.2, generator=generator)
    out = ((x + 1) / 2 * gain + offset).clamp(0, 1)
    rows, columns = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
    for _ in range(3):
        top = torch.randint(0, height - 3, (batch, 1, 1), generator=generator)
        left = torch.randint(0, width - 3, (batch, 1, 1), generator=generator)
        tall = torch.randint(3, 16, (batch, 1, 1), generator=generator)
        wide = torch.randint(3, 16, (batch, 1, 1), generator=generator)
        inside = ((rows >= top) & (rows < top + tall) & (columns >= left) & (columns < left + wide)).unsqueeze(1)
        out = torch.where(inside, torch.rand(batch, 3, 1, 1, generator=generator), out)
    return out * 2 - 1


def _fit_vae(vae, steps: int, lr: float, batch_loss: Callable[[], torch.Tensor], label: str, log) -> float:
    """AdamW on ``batch_loss()`` for ``steps`` steps; returns the last 50 steps' mean loss."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    losses: List[float] = []
    vae.train()
    for step in range(steps):
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            log(f"{label} step {step}: loss {np.mean(losses[-50:]):.4f}")
    vae.eval()
    return float(np.mean(losses[-50:]))


def train_vae(
    vae, images: torch.Tensor, steps: int, batch: int, generator: torch.Generator, log, off_world: float = 0.0, kl_weight: float = 1e-6
) -> float:
    """L1 reconstruction of images in [-1, 1] (a mean over the pixels) plus ``kl_weight`` times the KL term (a sum
    over the latents), AdamW 1e-3, a share ``off_world`` of each batch recoloured by :func:`off_world_colours` (floors
    and skies of every hue from the start); returns the last 50 steps' mean loss."""
    recoloured = int(round(batch * off_world))

    def batch_loss() -> torch.Tensor:
        x = images[torch.randint(0, len(images), (batch,), generator=generator)]
        if recoloured:
            x = torch.cat([x[: batch - recoloured], off_world_colours(x[batch - recoloured :], generator)])
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        return F.l1_loss(reconstruction, x) + kl_weight * posterior.kl().mean()

    return _fit_vae(vae, steps, 1e-3, batch_loss, "vae", log)


def refit_vae(vae, images: torch.Tensor, steps: int, batch: int, generator: torch.Generator, log) -> float:
    """Teach the trained VAE colours the world does not have, keeping the latents of the world's images (so the UNet
    trained on them still applies): half of each batch recoloured by :func:`off_world_colours`; L1 reconstruction of
    the whole batch, plus the squared distance of the world half's posterior means to the VAE's own before the refit,
    plus 1e-6 KL; AdamW 3e-4. Returns the last 50 steps' mean loss.

    Why: an edit's gradient reaches the image through the encoder. A codec that has only seen grey floors encodes every
    floor colour nearly alike, so the prior cannot see a floor drift and the edit does not resist it: on a red-to-blue
    ``pds`` edit of 100 steps the floor went orange (PSNR 9 dB against the source) before the refit and stayed near
    grey (20-24 dB) after it. Stable Diffusion's VAE, trained on every kind of image, encodes whatever colour a render has.
    """
    import copy

    reference = copy.deepcopy(vae).eval().requires_grad_(False)
    half = batch // 2

    def batch_loss() -> torch.Tensor:
        world = images[torch.randint(0, len(images), (batch,), generator=generator)]
        x = torch.cat([world[:half], off_world_colours(world[half:], generator)])
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        with torch.no_grad():
            kept = reference.encode(world[:half]).latent_dist.mean
        return F.l1_loss(reconstruction, x) + F.mse_loss(posterior.mean[:half], kept) + 1e-6 * posterior.kl().mean()

    return _fit_vae(vae, steps, 3e-4, batch_loss, "vae refit", log)


def descend(optimizer: torch.optim.Optimizer, parameters, loss: torch.Tensor, lr: float) -> None:
    """One step of ``optimizer`` on ``loss`` at rate ``lr`` (times a group's ``lr_scale``), the gradient's norm clipped
    to 1."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.step()


class Averaged:
    """An exponential moving average of a module's weights (decay min(0.999, (1 + step) / (10 + step))), copied into
    the module at the end of training."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.average = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(0.999, (1 + step) / (10 + step))
        for average, p in zip(self.average, self.module.parameters()):
            average.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @torch.no_grad()
    def copy_to_module(self) -> None:
        for average, p in zip(self.average, self.module.parameters()):
            p.copy_(average)


def train_unet(unet, text_encoder, tokenizer, latents_mean, latents_std, caption_ids, steps, batch, dropout, generator, log):
    """The denoising loss on (latent, caption) pairs, the text encoder trained with the UNet; EMA of the UNet."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")})
    texts = [caption(*pair) for pair in caption_ids["pairs"]] + [""]
    tokens = tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
    labels = caption_ids["labels"]
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=5e-4, weight_decay=1e-2)
    ema = Averaged(unet)
    losses: List[float] = []
    unet.train()
    text_encoder.train()
    for step in range(steps):
        index = torch.randint(0, len(labels), (batch,), generator=generator)
        x0 = latents_mean[index] + latents_std[index] * torch.randn(latents_mean[index].shape, generator=generator)
        label = labels[index].clone()
        label[torch.rand(batch, generator=generator) < dropout] = len(texts) - 1  # the empty caption
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
        hidden = text_encoder(tokens[label]).last_hidden_state
        prediction = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(prediction, noise)
        descend(optimizer, parameters, loss, 5e-4 * min(1.0, (step + 1) / 200))  # 200-step linear warmup
        ema.update(step)
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            log(f"unet step {step}: loss {np.mean(losses[-100:]):.4f}")
    ema.copy_to_module()
    unet.eval()
    text_encoder.eval()
    return float(np.mean(losses[-200:]))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weight_files(folder: Path) -> Dict[str, str]:
    """sha256 of every weight file under ``folder``, by path relative to it."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*.safetensors"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--images", type=int, default=16000)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=6000)
    parser.add_argument("--vae-refit-steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--unet-channels", type=int, nargs=2, default=(32, 64), help="the UNet's two blocks' widths")
    parser.add_argument(
        "--vae-off-world", type=float, default=0.0,
        help="share of each VAE training batch recoloured off the world (0: the world's colours only, then the refit)",
    )  # fmt: skip
    parser.add_argument(
        "--dark-share", type=float, default=0.0,
        help="share of the images whose object is darkened (albedo factor in DARK_ALBEDO) and captioned 'dark <colour>'",
    )  # fmt: skip
    parser.add_argument(
        "--latent-channels", type=int, default=4,
        help="the VAE's latent channels at half the resolution (Stable Diffusion's 4; 12 gives as many latents as pixels)",
    )  # fmt: skip
    parser.add_argument(
        "--vae-kl-weight", type=float, default=1e-6,
        help="the VAE's KL weight: its KL is a sum over the latents, its L1 a mean over the pixels, so more latents weigh the KL more "
        "(a 64 px VAE's posterior is six times as wide as the 32 px one's at 1e-6; 2.5e-7 keeps the 32 px balance)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--refit-only", action="store_true",
        help="only refit the VAE of the trained folder --output (the other settings must be the ones it was trained with)",
    )  # fmt: skip
    parser.add_argument(
        "--vae-only", action="store_true",
        help="train only the VAE (stage 2) and save it alone in --output/vae: for bench/pixel_edit.py's readings of a latent space",
    )  # fmt: skip
    args = parser.parse_args()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {text}", flush=True)

    generator = torch.Generator().manual_seed(args.seed)
    card = read_card(args.output) if args.refit_only else {}
    dark_share = card.get("dark_share", 0.0) if args.refit_only else args.dark_share  # a refit sees what the prior saw
    rendered = list(training_images(args.images, args.resolution, args.seed, dark_share))
    images = torch.from_numpy(np.stack([image for image, _, _ in rendered])).permute(0, 3, 1, 2).float() * 2 - 1
    log(f"rendered {len(images)} images at {args.resolution} px")
    if args.refit_only:
        card.setdefault("output", str(args.output))
        pipe = StableDiffusionPipeline.from_pretrained(args.output, safety_checker=None, requires_safety_checker=False)
        card["final_vae_refit_loss"] = refit_vae(pipe.vae, images, args.vae_refit_steps, args.batch, generator, log)
        card.update(vae_refit_steps=args.vae_refit_steps, vae_refit_seconds=round(time.perf_counter() - start, 1))
        card["vae_refit"] = f"a separate run on the trained folder (--refit-only), seed {args.seed}"
        pipe.vae.save_pretrained(args.output / "vae")
        save_card(args.output, card, model_card)
        log(f"refit the VAE of {args.output}")
        return

    dark = dark_share > 0
    world = WORLD + (DARK_WORLD.format(share=dark_share, low=DARK_ALBEDO[0], high=DARK_ALBEDO[1], word=DARK) if dark else "")  # what the card says of the images
    pairs = sorted({(colour, shape) for _, colour, shape in rendered}, key=lambda p: all_captions(dark).index(caption(*p)))
    labels = torch.tensor([pairs.index((colour, shape)) for _, colour, shape in rendered])
    work = args.output.parent / (args.output.name + ".tokenizer")
    tokenizer, text_encoder, vae, unet = build_models(args.resolution, work, args.unet_channels, dark, args.latent_channels)
    sizes = {name: sum(p.numel() for p in module.parameters()) for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    log(f"parameters: {sizes}")
    vae_loss = train_vae(vae, images, args.vae_steps, args.batch, generator, log, args.vae_off_world, args.vae_kl_weight)
    with torch.no_grad():
        posteriors = [vae.encode(images[i : i + 256]).latent_dist for i in range(0, len(images), 256)]
        means, stds = torch.cat([p.mean for p in posteriors]), torch.cat([p.std for p in posteriors])
    scaling = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"latent std {means.std():.4f}: scaling factor {scaling:.4f}")
    card = {  # what the VAE alone (--vae-only) and the whole prior both record
        "command": shlex.join(["python", "-m", "toy_world.train_prior", *sys.argv[1:]]),
        "output": str(args.output),
        "world": world,
        "resolution": args.resolution,
        "images": args.images,
        "vae_steps": args.vae_steps,
        "batch": args.batch,
        "vae_off_world": args.vae_off_world,
        "vae_kl_weight": args.vae_kl_weight,
        "dark_share": dark_share,
        "latent_channels": args.latent_channels,
        "seed": args.seed,
        "final_vae_loss": vae_loss,
        "vae_scaling_factor": scaling,
    }
    if args.vae_only:
        vae.save_pretrained(args.output / "vae")
        shutil.rmtree(work)
        card.update(parameters={"vae": sizes["vae"]}, training_seconds=round(time.perf_counter() - start, 1))
        save_card(args.output, card)
        log(f"saved the VAE alone in {args.output / 'vae'}")
        return
    unet_loss = train_unet(
        unet, text_encoder, tokenizer, means * scaling, stds * scaling, {"pairs": pairs, "labels": labels},
        args.unet_steps, args.batch, args.caption_dropout, generator, log,
    )  # fmt: skip
    refit_loss = refit_vae(vae, images, args.vae_refit_steps, args.batch, generator, log) if args.vae_refit_steps else None
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(**SD15_SCHEDULER),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(args.output)
    shutil.rmtree(work)
    card.update(
        captions=all_captions(dark),
        unet_steps=args.unet_steps,
        vae_refit_steps=args.vae_refit_steps,
        vae_refit="after the UNet, in the same run",
        caption_dropout=args.caption_dropout,
        unet_channels=list(args.unet_channels),
        final_unet_loss=unet_loss,
        final_vae_refit_loss=refit_loss,
        parameters=sizes,
        training_seconds=round(time.perf_counter() - start, 1),
    )
    save_card(args.output, card, model_card)
    log(f"saved {args.output}")


def read_card(folder: Path) -> Dict:
    """The card.json a training script saved in ``folder`` (:func:`save_card`)."""
    return json.loads((folder / CARD_NAME).read_text())


def save_card(folder: Path, card: Dict, readme: Optional[Callable[[Dict], str]] = None) -> None:
    """card.json and, given ``readme``, README.md (``readme(card)``) of a trained folder, the weight files' sha256 read
    from it."""
    card["sha256"] = weight_files(folder)
    (folder / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    if readme is not None:
        (folder / "README.md").write_text(readme(card))


def card_world(card: Dict) -> str:
    """A model card's lines on the world and its captions."""
    captions = "\n".join(f"- {text}" for text in card["captions"])
    return f"- World: {card['world']}.\n- Captions ({len(card['captions'])}):\n{captions}"


def card_weights(card: Dict) -> str:
    """A model card's table of weight files and their sha256."""
    files = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in card["sha256"].items())
    return f"| weight file | sha256 |\n|---|---|\n{files}\n"


def model_card(card: Dict) -> str:
    if card.get("final_vae_refit_loss") is None:
        vae_colours = f"The VAE saw {card.get('vae_off_world', 0):.0%} of each batch recoloured off the world from the start, no refit."
    else:
        vae_colours = f"""Then the VAE refit ({card["vae_refit"]}): {card["vae_refit_steps"]} steps, half of each batch recoloured
  off the world, the world images' latents kept (final loss {card["final_vae_refit_loss"]:.4f})."""
    return f"""# Toy-world prior (Stable Diffusion format)

A tiny model of a toy world, for checking that edits do what their prompt says (tests, the offline demo,
benchmarks); not for real scenes. Load it as any Stable Diffusion 1.x folder:
`--pipeline.guidance.model-id {card.get("output", "toy_world/prior")}`.

{card_world(card)}
- Resolution: {card["resolution"]} px (latents {card["resolution"] // 2} x {card["resolution"] // 2} x {card.get("latent_channels", 4)}); SD 1.5's DDPM schedule, epsilon prediction.
- Training (`{card.get("command", "python -m toy_world.train_prior --output " + card.get("output", "toy_world/prior"))}`, seed {card["seed"]}): {card["images"]} rendered
  images; VAE {card["vae_steps"]} steps (final L1 + KL loss {card["final_vae_loss"]:.4f}); UNet (block widths
  {card.get("unet_channels", [32, 64])}) and text encoder {card["unet_steps"]} steps of batch {card["batch"]}, captions
  dropped {card["caption_dropout"]:.0%} of the time (final denoising loss {card["final_unet_loss"]:.4f}); EMA of the UNet
  saved; {card["training_seconds"]:.0f} s on a 2-core CPU. {vae_colours} So the encoder sees colours the world lacks
  (a floor that drifts from grey).
- Parameters: {card["parameters"]}.

{card_weights(card)}"""


if __name__ == "__main__":
    main()
