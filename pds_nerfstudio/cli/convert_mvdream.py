"""``pds-convert-mvdream``: the original MVDream checkpoint (``sd-v2.1-base-4view.pt``, ldm key layout) as a multi-view
prior folder in diffusers' classes (:mod:`pds_nerfstudio.priors.multiview`).

The UNet and its camera MLP come from the checkpoint, converted by diffusers' own single-file converters; the VAE,
text encoder, tokenizer and noise schedule come from the Stable Diffusion 2.1-base folder MVDream was fine-tuned from
(it kept them frozen, and the released guidance loads them from there)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from pds_nerfstudio.common.checkpoints import is_whole_checkpoint
from pds_nerfstudio.common.errors import InputError, run_command
from pds_nerfstudio.priors.loading import check_model_available
from pds_nerfstudio.priors.multiview import MVDREAM_ORIGINAL_CONFIG, MultiViewInfo, convert_mvdream_unet


@dataclass
class ConvertMVDream:
    """Convert MVDream's released checkpoint into a multi-view prior folder (a diffusers pipeline folder with a
    multiview.json)."""

    checkpoint: tyro.conf.Positional[Path]
    """The original checkpoint, e.g. sd-v2.1-base-4view.pt."""
    base: Path = Path()
    """A local Stable Diffusion 2.1-base folder (diffusers layout): its VAE, text encoder, tokenizer and scheduler
    (required)."""
    output: Path = Path()
    """The folder to write (required; must not exist yet)."""
    num_views: int = 4
    """Views the prior denoises together (MVDream's release: 4)."""
    original_config: Optional[Path] = None
    """MVDream's configs/sd-v2-base.yaml, if its UNet settings differ from the released one's (default: the release's)."""

    def check(self) -> dict:
        """Every one-line error before anything loads; returns the original config."""
        if not self.checkpoint.is_file():
            raise InputError(f"{self.checkpoint}: no such file; give the path of MVDream's checkpoint (sd-v2.1-base-4view.pt)")
        if not is_whole_checkpoint(self.checkpoint):
            raise InputError(f"{self.checkpoint} is incomplete or not a torch checkpoint; download or copy it again")
        if self.base == Path():
            raise InputError("--base is required: a local Stable Diffusion 2.1-base folder (its VAE, text encoder and tokenizer)")
        check_model_available(str(self.base), "--base")
        if self.output == Path():
            raise InputError("--output is required: the folder to write the multi-view prior to")
        if self.output.exists():
            raise InputError(f"--output {self.output} exists; give a new folder")
        if self.num_views < 1:
            raise InputError(f"--num-views {self.num_views}: need at least 1")
        config = MVDREAM_ORIGINAL_CONFIG
        if self.original_config is not None:
            import yaml

            if not self.original_config.is_file():
                raise InputError(f"--original-config {self.original_config}: no such file")
            config = yaml.safe_load(self.original_config.read_text())
        context = config["model"]["params"]["unet_config"]["params"]["context_dim"]
        text = json.loads((self.base / "text_encoder" / "config.json").read_text())
        if text.get("hidden_size") != context:
            raise InputError(
                f"--base {self.base}: its text encoder gives {text.get('hidden_size')}-wide embeddings, the UNet takes "
                f"{context}; give the Stable Diffusion 2.1-base folder MVDream was trained with"
            )
        return config

    def main(self) -> Path:
        import torch
        from diffusers import StableDiffusionPipeline

        config = self.check()
        CONSOLE.log(f"Converting the UNet of {self.checkpoint}")
        saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        try:
            unet = convert_mvdream_unet(saved.get("state_dict", saved), config)
        except ValueError as error:
            raise InputError(f"{self.checkpoint}: {error}") from None
        base = StableDiffusionPipeline.from_pretrained(self.base, safety_checker=None, requires_safety_checker=False)
        pipeline = StableDiffusionPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet, scheduler=base.scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
        pipeline.save_pretrained(self.output)
        MultiViewInfo(self.num_views).save(self.output)
        CONSOLE.log(f"Wrote the multi-view prior ({self.num_views} views) to {self.output}")
        return self.output


def entrypoint() -> None:
    """``pds-convert-mvdream``."""
    run_command(ConvertMVDream)


if __name__ == "__main__":
    entrypoint()
