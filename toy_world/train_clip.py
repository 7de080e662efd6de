"""Train the toy world's CLIP: a transformers ``CLIPModel`` folder (vision and text towers, their projections, the
processor) whose embeddings tell the world's captions apart, so that ``pds-eval --clip-models toy_world/clip``
gives numbers that can be checked (an edit's directional similarity, the text-image similarity of renders to their
own caption against the other captions').

    python -m toy_world.train_clip --output toy_world/clip          # the committed model (a few minutes)
    python -m toy_world.train_clip --output /tmp/c --steps 2 --images 64     # smoke

1. render ``--images`` random views of the world at ``--resolution`` px with their captions (:func:`training_images`),
   each view also blurred and noised as a small field renders it (:func:`as_rendered`) half of the time;
2. train both towers contrastively on the captions: each image's cosine logits against the world's eight captions,
   cross-entropy on its own (image to text), and each caption's logits against the batch's images, cross-entropy
   on the images that show it, shared evenly (text to image; captions repeat within a batch, so the positives are
   several); CLIP's learned temperature;
3. ``save_pretrained`` the model and its ``CLIPProcessor`` (CLIP's normalisation, no resize at ``--resolution``),
   and write the model card (README.md) and ``card.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from toy_world.models import write_clip_tokenizer_files
from toy_world.train_prior import MAX_TOKENS, WORLD, card_weights, card_world, save_card
from toy_world.world import CAPTION_WORDS, all_captions, caption, training_images


def build_model(resolution: int, tokenizer_dir: Path):
    """The untrained processor and CLIPModel, seeded."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    files = write_clip_tokenizer_files(tokenizer_dir, CAPTION_WORDS)
    tokenizer = CLIPTokenizer(vocab=str(files / "vocab.json"), merges=str(files / "merges.txt"), model_max_length=MAX_TOKENS)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": resolution}, crop_size={"height": resolution, "width": resolution}
    )
    text_config = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS, vocab_size=len(tokenizer),
    )  # fmt: skip
    vision_config = dict(
        image_size=resolution, patch_size=4, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=64))
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer), model


def as_rendered(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images [B, 3, H, W] in [0, 1] as a small field renders them: a 3x3 box blur mixed in by a random weight in
    [0, 1) and Gaussian noise of a random std in [0, 0.03)."""
    batch = len(images)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    weight = torch.rand(batch, 1, 1, 1, generator=generator)
    noise = torch.randn(images.shape, generator=generator) * torch.rand(batch, 1, 1, 1, generator=generator) * 0.03
    return (images + weight * (blurred - images) + noise).clamp(0, 1)


def normalise(images: torch.Tensor, processor) -> torch.Tensor:
    """CLIP's normalisation of images [B, 3, H, W] in [0, 1], as the processor's (no resize at the trained size)."""
    mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
    return (images - mean) / std


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Unit projected image embeddings, as pds-eval's ClipEmbedder takes them (pooled output, visual projection)."""
    return F.normalize(model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output), dim=-1)


def text_features(model, tokens) -> torch.Tensor:
    """Unit projected text embeddings of tokenizer output (pooled output, text projection)."""
    pooled = model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    return F.normalize(model.text_projection(pooled), dim=-1)


def contrastive_loss(model, pixel_values: torch.Tensor, labels: torch.Tensor, caption_tokens) -> torch.Tensor:
    """Image-to-caption cross-entropy over every caption plus caption-to-image cross-entropy over the batch (the
    images showing the caption share the target evenly), halved."""
    image, text = image_features(model, pixel_values), text_features(model, caption_tokens)
    logits = model.logit_scale.exp() * image @ text.T  # [B, C]
    image_to_text = F.cross_entropy(logits, labels)
    shows = F.one_hot(labels, len(text)).float().T  # [C, B]
    present = shows.sum(1) > 0
    targets = shows[present] / shows[present].sum(1, keepdim=True)
    text_to_image = -(targets * F.log_softmax(logits.T[present], dim=1)).sum(1).mean()
    return (image_to_text + text_to_image) / 2


@torch.no_grad()
def caption_accuracy(model, processor, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images [N, 3, H, W] in [0, 1] whose most similar caption is their own."""
    tokens = processor.tokenizer(all_captions(), padding=True, return_tensors="pt")
    text = text_features(model, tokens)
    image = torch.cat([image_features(model, normalise(images[i : i + 256], processor)) for i in range(0, len(images), 256)])
    return float(((image @ text.T).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {text}", flush=True)

    captions = all_captions()
    rendered = list(training_images(args.images, args.resolution, args.seed))
    images = torch.from_numpy(np.stack([image for image, _, _ in rendered])).permute(0, 3, 1, 2).float()
    labels = torch.tensor([captions.index(caption(colour, shape)) for _, colour, shape in rendered])
    held_out = list(training_images(400, args.resolution, args.seed + 1))
    held_images = torch.from_numpy(np.stack([image for image, _, _ in held_out])).permute(0, 3, 1, 2).float()
    held_labels = torch.tensor([captions.index(caption(colour, shape)) for _, colour, shape in held_out])
    log(f"rendered {len(images)} training and {len(held_out)} held-out images at {args.resolution} px")

    work = args.output.parent / (args.output.name + ".tokenizer")
    processor, model = build_model(args.resolution, work)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"parameters: {parameters}")
    caption_tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    losses: List[float] = []
    model.train()
    for step in range(args.steps):
        index = torch.randint(0, len(images), (args.batch,), generator=generator)
        batch = images[index]
        rendered_like = torch.rand(args.batch, 1, 1, 1, generator=generator) < 0.5
        batch = torch.where(rendered_like, as_rendered(batch, generator), batch)
        loss = contrastive_loss(model, normalise(batch, processor), labels[index], caption_tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:  # 100-step linear warmup, then cosine decay
            progress = step / max(1, args.steps)
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * progress))
        optimizer.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == args.steps - 1:
            log(f"clip step {step}: loss {np.mean(losses[-50:]):.4f}")
    model.eval()
    accuracy = caption_accuracy(model, processor, held_images, held_labels)
    log(f"held-out caption accuracy {accuracy:.3f}")

    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    card: Dict = {
        "world": WORLD,
        "captions": captions,
        "resolution": args.resolution,
        "images": args.images,
        "steps": args.steps,
        "batch": args.batch,
        "seed": args.seed,
        "final_loss": float(np.mean(losses[-50:])),
        "held_out_caption_accuracy": accuracy,
        "held_out_images": len(held_out),
        "parameters": parameters,
        "training_seconds": round(time.perf_counter() - start, 1),
    }
    save_card(args.output, card, model_card)
    log(f"saved {args.output}")


def model_card(card: Dict) -> str:
    return f"""# Toy-world CLIP (transformers CLIPModel format)

A tiny CLIP of a toy world, for checking the numbers of `pds-eval` on edits of toy-world scenes
(`pds-eval RUN --clip-models toy_world/clip`); not for real images.

{card_world(card)}
- Resolution: {card["resolution"]} px (ViT, 4 px patches); CLIP's normalisation, no resize at {card["resolution"]} px.
- Training (`python -m toy_world.train_clip --output toy_world/clip`, seed {card["seed"]}): {card["images"]} rendered
  images, half of each batch blurred and noised as a small field renders them; {card["steps"]} steps of batch
  {card["batch"]}, contrastive on the eight captions (final loss {card["final_loss"]:.4f}; its floor is about 1, as a caption's
  cross-entropy over the batch's images cannot fall below the log of how many show it); {card["training_seconds"]:.0f} s
  on a 2-core CPU.
- Held out: on {card["held_out_images"]} new views the most similar caption is the image's own for
  {card["held_out_caption_accuracy"]:.1%} of them.
- Parameters: {card["parameters"]}.

{card_weights(card)}"""


if __name__ == "__main__":
    main()
