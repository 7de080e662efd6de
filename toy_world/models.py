"""Models built in code, no hub: a CLIP tokenizer vocabulary, Stable Diffusion 1.5's noise schedule (what the trained
toy-world prior shares with the tiny models), a seeded tiny Stable-Diffusion-shaped pipeline (the shapes of diffusers'
own ``get_dummy_components``), an SD-1.5-shaped one built from config for benchmarks, and a ``TORCH_HOME`` with random
AlexNet and VGG16 weights under torchvision's file names, so LPIPS constructs offline.

Random weights are a test and benchmark device; the product never substitutes them for real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP byte-to-printable-character table used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_clip_tokenizer_files(directory: Path, words: Sequence[str]) -> Path:
    """Write a tiny CLIP BPE vocabulary (``vocab.json``, ``merges.txt``) into ``directory``.

    The vocabulary holds every byte-level character alone and with the end-of-word marker
    ``</w>`` (so any text tokenizes), the merges that spell each word of ``words`` as one token,
    and CLIP's two special tokens last, as in the real CLIP vocabulary.
    """
    directory.mkdir(parents=True, exist_ok=True)
    byte_chars = list(_bytes_to_unicode().values())
    vocab: List[str] = byte_chars + [c + "</w>" for c in byte_chars]
    merges: List[str] = []
    for word in words:
        # Merge left to right: "p h", "ph o", "pho t", "phot o</w>" for "photo".
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merged = symbols[0] + symbols[1]
            rule = f"{symbols[0]} {symbols[1]}"
            if rule not in merges:
                merges.append(rule)
            if merged not in vocab:
                vocab.append(merged)
            symbols = [merged] + symbols[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
"""Stable Diffusion 1.5's training schedule, sampled with DDIM (its scheduler_config.json)."""

# --------------------------------------------------------------------------------------------------
# Tiny Stable Diffusion
# --------------------------------------------------------------------------------------------------

TINY_SD_PROMPT_WORDS = ("a", "photo", "of", "the", "polar", "bear", "statue", "person", "face", "scene")
"""Words that get whole-word BPE merges in the tiny vocabulary; any other text falls back to bytes."""

TINY_SD_MODEL_MAX_LENGTH = 77
"""Tokenizer length (CLIP's), also the text encoder's number of positions."""

TINY_SD_VOCAB_SIZE = 1000
"""Text encoder vocabulary size; the written tokenizer vocabulary fits below it."""


def write_tiny_clip_tokenizer_files(directory: Path, words: Sequence[str] = TINY_SD_PROMPT_WORDS) -> Path:
    """The tiny CLIP BPE vocabulary of :func:`toy_world.models.write_clip_tokenizer_files` for the test prompts' words."""
    return write_clip_tokenizer_files(directory, words)


def build_tiny_stable_diffusion(path: Path) -> Path:
    """Build a seeded tiny ``StableDiffusionPipeline`` from configs and ``save_pretrained`` it to ``path``.

    UNet (4, 8) channels with cross-attention dim 8; VAE [4, 8] channels (downsamples by 2) with 4
    latent channels; CLIP text encoder of width 8 and 2 layers; DDIM scheduler with Stable Diffusion
    1.5's training schedule. Load it back with ``StableDiffusionPipeline.from_pretrained(path)``.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    # The vocabulary files stay beside the tokenizer.json that save_pretrained writes.
    tokenizer_files = write_tiny_clip_tokenizer_files(path / "tokenizer")
    tokenizer = CLIPTokenizer(
        vocab=str(tokenizer_files / "vocab.json"),
        merges=str(tokenizer_files / "merges.txt"),
        model_max_length=TINY_SD_MODEL_MAX_LENGTH,
    )
    if len(tokenizer) > TINY_SD_VOCAB_SIZE:
        raise ValueError(f"tiny tokenizer has {len(tokenizer)} tokens, more than {TINY_SD_VOCAB_SIZE}")

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=8,
            intermediate_size=16,
            projection_dim=8,
            layer_norm_eps=1e-05,
            num_attention_heads=2,
            num_hidden_layers=2,
            max_position_embeddings=TINY_SD_MODEL_MAX_LENGTH,
            vocab_size=TINY_SD_VOCAB_SIZE,
        )
    )
    scheduler = DDIMScheduler(**SD15_SCHEDULER)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def sd15_shaped_pipeline(tiny_path: Path):
    """An in-memory ``StableDiffusionPipeline`` with Stable Diffusion 1.5's UNet, VAE and text encoder shapes
    (UNet 859.5M, VAE 83.7M, text encoder 123M parameters), seeded random weights, in float32.

    Random weights cost the same compute and memory as the real ones. The tokenizer and scheduler come from
    the tiny pipeline saved at ``tiny_path`` (:func:`build_tiny_stable_diffusion`).
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_path, subfolder="tokenizer")
    scheduler = DDIMScheduler.from_pretrained(tiny_path, subfolder="scheduler")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                       vocab_size=tokenizer.vocab_size, max_position_embeddings=TINY_SD_MODEL_MAX_LENGTH)
    )  # fmt: skip
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def rendered_image_gradient(guidance, image, source, tgt_prompt: str, src_prompt: str, seed: int = 0):
    """The gradient a pds step sends back to a rendered ``image`` [1, 3, H, W] in [0, 1] against the
    ``source`` image: VAE-encode the render, take the distillation gradient, backpropagate the surrogate
    loss (what :class:`pds_nerfstudio.methods.pds.PDSPipeline` does after rendering). Seeded, so two
    guidance precisions draw the same t, noise and VAE sample."""
    import torch

    image = image.detach().clone().requires_grad_(True)
    with torch.no_grad():
        torch.manual_seed(seed)
        x0_src = guidance.encode_images(source)
    torch.manual_seed(seed + 1)
    x0_tgt = guidance.encode_images(image)
    output = guidance(x0_tgt, x0_src, tgt_prompt, src_prompt, generator=torch.Generator().manual_seed(seed))
    output.loss.backward()
    return image.grad


# --------------------------------------------------------------------------------------------------
# TORCH_HOME with random torchvision backbones (LPIPS)
# --------------------------------------------------------------------------------------------------

TORCHVISION_CHECKPOINTS = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth"}
"""File names under ``$TORCH_HOME/hub/checkpoints`` that torchvision's IMAGENET1K_V1 weights load from."""


def _random_backbone_state_dict(name: str, seed: int) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    """A seeded random state dict for a torchvision classifier, quick to make and small on disk.

    The architecture is built on the meta device (no memory, no init cost) only to read its keys and
    shapes. Weights are He-normal, biases zero. LPIPS uses only the convolutional ``features``; the
    fully connected ``classifier`` matrices (most of the parameters: 0.2 GB for AlexNet, 0.5 GB for
    VGG16) are one random row broadcast over the outputs, a stride-0 view that saves as one row.
    """
    import torch
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, meta in model.state_dict().items():
        if meta.ndim < 2:
            state[key] = torch.zeros(meta.shape, dtype=meta.dtype)
            continue
        std = (2.0 / meta[0].numel()) ** 0.5
        if key.startswith("classifier."):
            row = torch.randn((1, *meta.shape[1:]), generator=generator) * std
            state[key] = row.expand(meta.shape)
        else:
            state[key] = torch.randn(meta.shape, generator=generator) * std
    return state


def seed_torch_home(path: Path) -> Path:
    """Create a ``TORCH_HOME`` at ``path`` with random AlexNet and VGG16 weights where torchvision looks.

    With ``TORCH_HOME`` pointing here, ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` and the
    VGG16 equivalent load without network, so torchmetrics' and ``lpips``' LPIPS construct offline.
    """
    import torch

    path = Path(path)
    checkpoints = path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for seed, (name, filename) in enumerate(TORCHVISION_CHECKPOINTS.items()):
        target = checkpoints / filename
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            torch.save(_random_backbone_state_dict(name, seed), tmp)
            tmp.replace(target)
    return path


# --------------------------------------------------------------------------------------------------
# Tiny CLIP (pds-eval's metric model)
# --------------------------------------------------------------------------------------------------


def build_tiny_clip(path: Path, seed: int) -> Path:
    """A seeded tiny CLIPModel (text and vision width 16, 2 layers, 32 px images in 8 px patches) with its
    processor (a tokenizer on the tiny vocabulary, CLIP's preprocessing at 32 px), saved with save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = Path(path)
    files = write_tiny_clip_tokenizer_files(path)
    tokenizer = CLIPTokenizer(vocab=str(files / "vocab.json"), merges=str(files / "merges.txt"), model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            tiny,
            vocab_size=1000,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tiny, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    return path
