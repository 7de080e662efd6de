"""Train the toy world's multi-view prior: MVDream's format (:mod:`pds_nerfstudio.priors.multiview`) on the toy world,
fine-tuned from the single-view toy prior as MVDream is from Stable Diffusion 2.1.

    python -m toy_world.train_multiview_prior --output toy_world/multiview_prior
    python -m toy_world.train_multiview_prior --output /tmp/mv --groups 8 --steps 2 --batch 2   # smoke

1. render ``--groups`` groups of 4 views of one random toy object (a ball or cube of the four colours, sized and
   turned at random up to ``--max-turn`` degrees, resting on the floor at the origin), each group's cameras drawn as
   Perturb-and-Revise's released objects code draws them round the object
   (:func:`pds_nerfstudio.scenes.orbit.draw_orbit_group`: one elevation, field of view and distance a group, views 90
   degrees apart), with the object's caption;
2. encode them with the single-view prior's VAE (``--base``, frozen, as MVDream keeps SD's VAE and text encoder);
3. build the multi-view UNet: the base UNet's config and weights, plus the camera's projection into the time
   embedding (its last layer zero, so training starts from the single-view prior) and the cross-view processor on
   every self-attention; train it on the denoising loss with one t per group (MVDream's), the caption dropped to ""
   for ``--caption-dropout`` of the groups, EMA of the weights saved;
4. ``save_pretrained`` the pipeline (the base's VAE, text encoder, tokenizer and schedule) with ``multiview.json``, the
   model card (README.md) and ``card.json`` (steps, final loss, seed, sha256 of each weight file).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from toy_world.train_prior import MAX_TOKENS, Averaged, card_weights, card_world, descend, save_card
from toy_world.world import COLOURS, SHAPES, Thing, caption, render

ROOT = Path(__file__).resolve().parents[1]
TOY_OBJECT_CENTRE = (0.0, 0.0, 0.0)
"""Where a toy object's centre is: on the floor (z = -0.35) at the origin, half its height above it."""
TOY_ORBIT_RADIUS = 1.0
"""The radius the orbit distances are relative to: the released objects code's, its object field's radius-1 box. A toy
object (ball radius and cube half-edge 0.35, scaled 0.8-1.2) then fills a third to three quarters of the frame, as
objects do in the release's views; with the cube's bounding sphere (0.61) a cube filled the whole frame and the first
multi-view prior learned cubes as frame-filling colour fields (docs/toy_world.md)."""
TOY_MULTIVIEW_GUIDANCE_SCALE = 5.0
"""The guidance scale the toy world's pnr runs pass with this prior (``--pipeline.guidance.guidance-scale``; the method
keeps the release's 50): the largest measured at which the released objective's targets at the world's own red cube
are that cube over the t range an edit ends in (its pixels within 10% and read red on 88-100% of views to t 300, +16%
and 81% at t 400; 7.5 grows it by 27% and 56%); at 50 they are a magenta field 2.5 to 3.2 times its size at every
t, and the edit of a source that already is the cube melts it (``bench/multiview_targets.py``, docs/toy_world.md)."""
TOY_OBJECT_BOX = (0.0, 0.0, 0.06, 0.9, 0.9, 0.78)
"""A box round the toy object at the origin (a cube of edge 0.7 fits), its bottom above the floor (z = -0.35), so that
no floor Gaussian is inside: centre x y z, size x y z in the world's frame (``--pipeline.region.box``): the object field
of the toy world's pnr runs."""


def toy_orbit_flags(centre: Sequence[float] = TOY_OBJECT_CENTRE) -> List[str]:
    """The ``ns-train pnr`` flags that draw the orbit cameras round a toy object (by default the one at the origin), as
    this prior was trained."""
    return [
        "--pipeline.multiview.object-centre", *map(str, centre),
        "--pipeline.multiview.object-radius", str(TOY_ORBIT_RADIUS),
    ]  # fmt: skip


VIEWS = 4


def render_group(
    rng: np.random.Generator, generator: torch.Generator, colour: str, shape: str, size: int, radius: float = TOY_ORBIT_RADIUS,
    max_turn: float = 90.0,
):  # fmt: skip
    """One object's group of orbit views: images [4, size, size, 3] in [0, 1] and the cameras relative to its centre;
    the object at a scale and a turn (up to ``max_turn`` degrees; 90: any, a cube's turns repeat every 90) drawn from
    ``rng``."""
    thing = Thing(colour, shape, (0.0, 0.0), float(rng.uniform(0.8, 1.2)), float(rng.uniform(0, np.pi / 2 * max_turn / 90)))
    return render_orbit_group(thing, generator, size, radius)


def render_orbit_group(thing: Thing, generator: torch.Generator, size: int, radius: float = TOY_ORBIT_RADIUS):
    """``thing`` seen by a group of orbit cameras drawn from ``generator`` as the released objects code draws them:
    images [4, size, size, 3] in [0, 1] and the cameras relative to the object's centre."""
    from pds_nerfstudio.scenes.orbit import draw_orbit_group

    group = draw_orbit_group(generator, TOY_OBJECT_CENTRE, radius, size, VIEWS)
    focal = float(group.cameras.fx[0])
    images = [render(thing, orbit_pose(c2w), size, focal) for c2w in group.cameras.camera_to_worlds]
    return np.stack(images), group.object_c2w


def orbit_pose(c2w: torch.Tensor) -> np.ndarray:
    """An orbit camera's [3, 4] camera-to-world (nerfstudio's) as the world's [4, 4] pose."""
    pose = np.eye(4)
    pose[:3, :] = c2w.double().numpy()
    return pose


def multiview_unet_from(base, seed: int = 0) -> "torch.nn.Module":
    """The base UNet's config and weights plus the camera's projection (16 -> time width -> time width), its first
    layer drawn from ``seed`` (so that the script's ``--seed`` makes the same prior twice), its last layer zero: at
    first the camera changes nothing and the prior is the base's."""
    from diffusers import UNet2DConditionModel

    from pds_nerfstudio.priors.multiview import CAMERA_DIM

    with torch.random.fork_rng(devices=[]):  # the projection's first layer is the only one the global generator draws
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config({**base.config, "class_embed_type": "projection", "projection_class_embeddings_input_dim": CAMERA_DIM})
    missing, unexpected = unet.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("class_embedding.") for name in missing), (missing, unexpected)
    with torch.no_grad():
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()
    return unet


def train_unet(
    unet, latents, cameras, hidden, labels, empty, steps, batch, dropout, generator, scheduler, log, camera_lr_scale: float = 1.0
) -> float:  # fmt: skip
    """Denoising loss on groups (one t and one caption a group), cross-view attention on; EMA of the weights. The
    camera's projection (``class_embedding``) learns at ``camera_lr_scale`` times the rate of the rest."""
    from pds_nerfstudio.priors.multiview import camera_vectors, install_multiview_attention

    install_multiview_attention(unet, VIEWS)
    camera = [p for name, p in unet.named_parameters() if name.startswith("class_embedding.")]
    rest = [p for name, p in unet.named_parameters() if not name.startswith("class_embedding.")]
    optimizer = torch.optim.AdamW([{"params": rest}, {"params": camera, "lr_scale": camera_lr_scale}], lr=2e-4, weight_decay=1e-2)
    ema = Averaged(unet)
    losses: List[float] = []
    unet.train()
    for step in range(steps):
        groups = torch.randint(0, latents.shape[0], (batch,), generator=generator)
        x0 = latents[groups].flatten(0, 1)  # [batch * 4, 4, h, w]
        camera = camera_vectors(cameras[groups].flatten(0, 1))
        label = labels[groups].clone()
        label[torch.rand(batch, generator=generator) < dropout] = empty
        text = hidden[label].repeat_interleave(VIEWS, dim=0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator).repeat_interleave(VIEWS)
        noise = torch.randn(x0.shape, generator=generator)
        prediction = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=text, class_labels=camera).sample
        loss = F.mse_loss(prediction, noise)
        descend(optimizer, list(unet.parameters()), loss, 2e-4 * min(1.0, (step + 1) / 100))  # 100-step linear warmup
        ema.update(step)
        losses.append(loss.item())
        if step % 200 == 0 or step == steps - 1:
            log(f"unet step {step}: loss {np.mean(losses[-100:]):.4f}")
    ema.copy_to_module()
    unet.eval()
    return float(np.mean(losses[-200:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=Path(__file__).resolve().parent / "prior")
    parser.add_argument("--groups", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8, help="groups of 4 views a step")
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orbit-radius", type=float, default=TOY_ORBIT_RADIUS, help="the radius the camera distances are relative to")
    parser.add_argument("--camera-lr-scale", type=float, default=1.0, help="the camera projection's rate over the rest's (2e-4)")
    parser.add_argument(
        "--max-turn", type=float, default=90.0,
        help="the cubes' turns about the vertical, drawn from 0 to this (degrees): 90 any turn; 0 every cube facing the world's axes, so the cameras tell the prior which way a cube faces",
    )  # fmt: skip
    args = parser.parse_args()
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from pds_nerfstudio.priors.multiview import MultiViewInfo

    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {text}", flush=True)

    base = StableDiffusionPipeline.from_pretrained(args.base, safety_checker=None, requires_safety_checker=False)
    size = int(base.unet.config.sample_size) * 2 ** (len(base.vae.config.block_out_channels) - 1)
    rng, generator = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    pairs: List[Tuple[str, str]] = [(colour, shape) for shape in SHAPES for colour in COLOURS]
    images, cameras, labels = [], [], []
    for index in range(args.groups):
        colour, shape = pairs[index % len(pairs)]
        group, c2w = render_group(rng, generator, colour, shape, size, args.orbit_radius, args.max_turn)
        images.append(group)
        cameras.append(c2w.float())
        labels.append(index % len(pairs))
    log(f"rendered {args.groups} groups of {VIEWS} views at {size} px")
    pixels = torch.from_numpy(np.stack(images)).float().flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        latents = torch.cat([base.vae.encode(pixels[i : i + 256]).latent_dist.mean for i in range(0, len(pixels), 256)])
        latents = (latents * base.vae.config.scaling_factor).view(args.groups, VIEWS, *latents.shape[1:])
        texts = [caption(*pair) for pair in pairs] + [""]
        tokens = base.tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids
        hidden = base.text_encoder(tokens).last_hidden_state
    unet = multiview_unet_from(base.unet, args.seed)
    scheduler = DDPMScheduler.from_config(base.scheduler.config)
    loss = train_unet(
        unet, latents, torch.stack(cameras), hidden, torch.tensor(labels), len(texts) - 1, args.steps, args.batch,
        args.caption_dropout, generator, scheduler, log, args.camera_lr_scale,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet, scheduler=base.scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(args.output)
    MultiViewInfo(VIEWS).save(args.output)
    card: Dict = {
        "world": "toy_world.world: one ball or cube of four colours on a grey floor, groups of 4 orbit views round it "
        f"(the released objects code's camera ranges relative to a radius of {args.orbit_radius:g})",
        "captions": [caption(*pair) for pair in pairs],
        "base": str(args.base.resolve().relative_to(ROOT)) if args.base.resolve().is_relative_to(ROOT) else str(args.base),
        "resolution": size,
        "orbit_radius": args.orbit_radius,
        "max_turn_degrees": args.max_turn,
        "camera_lr_scale": args.camera_lr_scale,
        "groups": args.groups,
        "steps": args.steps,
        "batch_groups": args.batch,
        "caption_dropout": args.caption_dropout,
        "seed": args.seed,
        "final_unet_loss": loss,
        "training_seconds": round(time.perf_counter() - start, 1),
    }
    save_card(args.output, card, model_card)
    log(f"saved {args.output}")


def model_card(card: Dict) -> str:
    return f"""# Toy-world multi-view prior (MVDream's format)

A tiny multi-view model of the toy world, for checking pnr's objects protocol as released (4 views of one object
denoised together, each with its camera). It loads as any multi-view prior folder
(`pds_nerfstudio.priors.multiview.load_multiview_unet`, the guidance `pds_nerfstudio.priors.multiview_guidance`).

{card_world(card)}
- Resolution: {card["resolution"]} px; the single-view toy prior's VAE, text encoder, tokenizer and schedule
  (`{card["base"]}`), frozen.
- Training (`python -m toy_world.train_multiview_prior`, seed {card["seed"]}): {card["groups"]} rendered groups;
  the UNet fine-tuned from the base's with the camera projection added (last layer zero at the start) and the
  cross-view self-attention, {card["steps"]} steps of {card["batch_groups"]} groups, one t a group, captions dropped
  {card["caption_dropout"]:.0%} of the time (final denoising loss {card["final_unet_loss"]:.4f}); EMA saved;
  {card["training_seconds"]:.0f} s on a 2-core CPU.

{card_weights(card)}"""


if __name__ == "__main__":
    main()
