"""Loading Stable Diffusion, and the checks that run before it loads: a model id that names a local folder or a
cached hub model with whole weight files, a supported pipeline and prediction type, a DreamBooth LoRA's base model,
the device and the precision. Each failure is one line that says how to supply the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from pds_nerfstudio.common.checkpoints import is_whole_checkpoint
from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.priors.multiview import read_multiview_info

DEFAULT_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


MODEL_FLAG = "--pipeline.guidance.model-id"


DREAMBOOTH_INFO = "dreambooth.json"
"""What ``pds-dreambooth`` writes beside its model: prompts, settings and, for a LoRA adapter, the base model."""


LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
"""The LoRA adapter file of a ``pds-dreambooth --mode lora`` output (diffusers' name)."""


def check_device(name: str, flag: str) -> None:
    """Raise InputError unless ``name`` is a device this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"{flag} {name}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise InputError(f"{flag} {name}: this machine has no CUDA device; use cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu" and device.type != "mps":
        raise InputError(f"{flag} {name}: unsupported device type; use cpu or cuda:N")


def check_pretrained_available(model_id: str, kind: str, marker_file: str, flag: str, saved_by: str) -> None:
    """Raise InputError unless ``model_id`` is a local folder holding ``marker_file`` or a Hugging Face id
    that can be had from the hub or its cache. The message names the model and how to pass a local folder.

    Args:
        kind: what the model is, for messages ("Stable Diffusion", "CLIP").
        flag: the option that takes a local folder instead.
        saved_by: the library whose ``save_pretrained`` writes such a folder ("diffusers", "transformers").
    """
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / marker_file).is_file():
            raise InputError(f"{flag} {model_id}: no {marker_file} there; pass a {kind} folder saved by {saved_by}")
        return
    if model_id.startswith((".", "/", "~")) or model_id.count("/") != 1:
        raise InputError(f"{flag} {model_id}: no such folder, and not a Hugging Face id of the form owner/name")
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model_id, marker_file)
    except Exception as error:  # offline, unknown id, gated model: all end the same way for the user
        raise InputError(
            f"{kind} model '{model_id}' is not in the Hugging Face cache and cannot be downloaded "
            f"({type(error).__name__}); download it where the hub is reachable (hf download {model_id} --local-dir DIR) "
            f"and pass {flag} DIR"
        ) from None


def check_weight_files(folder: Path, flag: str) -> None:
    """Raise InputError if a weight file under ``folder`` (a model saved by diffusers or transformers) is cut
    short, as an interrupted download or copy leaves it. Reads only file headers and sizes.

    A ``.safetensors`` file starts with the 8-byte length of a JSON header that gives every tensor's byte
    range; the file must end where the last range ends. A ``.bin`` file saved by torch is a zip archive,
    whose directory is written last.
    """
    for path in sorted(folder.rglob("*.safetensors")):
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            header_size = int.from_bytes(prefix, "little") if len(prefix) == 8 else size
            try:
                header = json.loads(file.read(header_size)) if 8 + header_size <= size else None
            except ValueError:
                header = None
        ends = [entry["data_offsets"][1] for name, entry in (header or {}).items() if name != "__metadata__"]
        expected = 8 + header_size + max(ends, default=0)
        if header is None or size != expected:
            raise InputError(
                f"{flag} {folder}: the weight file {path} is incomplete ({size} bytes, expected {expected if header else 'more'}); "
                "download or copy the model again"
            )
    for path in sorted(folder.rglob("*.bin")):
        if not is_whole_checkpoint(path):
            raise InputError(f"{flag} {folder}: the weight file {path} is incomplete or damaged; download or copy the model again")


def lora_base_model(model_id: str) -> Optional[str]:
    """The base model of a ``pds-dreambooth --mode lora`` output folder, or None for any other model."""
    info = Path(model_id).expanduser() / DREAMBOOTH_INFO
    if not info.is_file():
        return None
    saved = json.loads(info.read_text())
    return saved["base_model"] if saved.get("mode") == "lora" else None


def check_model_available(model_id: str, flag: str = MODEL_FLAG) -> None:
    """Raise InputError unless the Stable Diffusion pipeline ``model_id`` (given with ``flag``) can be loaded (see
    above); a local folder's weight files must be whole, a LoRA adapter's base model must be available too, and the
    pipeline must be one this package reads right (:func:`check_supported_pipeline`)."""
    base = lora_base_model(model_id)
    if base is not None:
        folder = Path(model_id).expanduser()
        if not (folder / LORA_WEIGHTS_NAME).is_file():
            raise InputError(f"{flag} {model_id}: no {LORA_WEIGHTS_NAME} there; has pds-dreambooth finished?")
        check_weight_files(folder, flag)
        check_model_available(base, flag)
        return
    check_pretrained_available(model_id, "Stable Diffusion", "model_index.json", flag, "diffusers")
    if Path(model_id).expanduser().is_dir():
        check_weight_files(Path(model_id).expanduser(), flag)
        check_single_view(model_id, flag)
    check_supported_pipeline(model_id, flag)


def check_single_view(model_id: str, flag: str = MODEL_FLAG) -> None:
    """Raise InputError if the local folder ``model_id`` is a multi-view prior (:mod:`pds_nerfstudio.priors.multiview`):
    pds-refine, pds-dreambooth and pnr's real-scenes protocol take a single-view Stable Diffusion."""
    try:
        info = read_multiview_info(Path(model_id))
    except ValueError as error:
        raise InputError(f"{flag} {model_id}: {error}") from None
    if info is not None:
        raise InputError(
            f"{flag} {model_id} is a multi-view prior ({info.num_views} views, MVDream's format), which pds and pnr "
            "guide on orbit views round an object; pass a single-view Stable Diffusion folder here"
        )


SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)
"""diffusers pipelines of Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet on 4-channel latents, a DDPM schedule."""


SUPPORTED_PREDICTIONS = ("epsilon", "v_prediction")
"""What the UNet may predict: the noise (SD 1.x, SD 2.x-base) or v (SD 2.x 768 px); both are read as the noise."""


def _model_file(model_id: str, filename: str) -> Optional[Path]:
    """A small config file of a local folder or of the Hugging Face cache (None if neither has it)."""
    path = Path(model_id).expanduser()
    if path.exists():
        return path / filename if (path / filename).is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model_id, filename))
    except Exception:  # offline and not cached: check_pretrained_available said what to do already
        return None


def check_supported_pipeline(model_id: str, flag: str = MODEL_FLAG) -> None:
    """Raise InputError unless ``model_id`` is a Stable Diffusion 1.x/2.x pipeline whose UNet predicts epsilon or v
    (read from model_index.json and the scheduler's config; SDXL and SD3 are other pipelines)."""
    index = _model_file(model_id, "model_index.json")
    supported = "Stable Diffusion 1.x and 2.x pipelines (StableDiffusionPipeline, epsilon or v-prediction)"
    if index is not None:
        name = json.loads(index.read_text()).get("_class_name")
        if name not in SUPPORTED_PIPELINES:
            raise InputError(f"{flag} {model_id} is a {name}; edits use {supported}")
    scheduler = _model_file(model_id, "scheduler/scheduler_config.json")
    if scheduler is not None:
        prediction = json.loads(scheduler.read_text()).get("prediction_type", "epsilon")
        if prediction not in SUPPORTED_PREDICTIONS:
            raise InputError(f"{flag} {model_id} predicts {prediction!r}; edits use {supported}")


def load_stable_diffusion(model_id: str, dtype: torch.dtype, flag: str = MODEL_FLAG):
    """``StableDiffusionPipeline`` of ``model_id`` in ``dtype``, without safety checker; a pds-dreambooth LoRA
    output is its base model with the adapter fused into the UNet. Raises InputError if it does not load."""
    try:
        from diffusers import StableDiffusionPipeline
    except ImportError as error:
        raise ImportError("Editing needs diffusers and transformers: pip install diffusers transformers") from error
    base = lora_base_model(model_id)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            base or model_id, torch_dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        if base is not None:
            pipe.load_lora_weights(str(Path(model_id).expanduser()), weight_name=LORA_WEIGHTS_NAME)
            pipe.fuse_lora()
            pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(
            f"cannot load Stable Diffusion from '{model_id}' ({str(error).splitlines()[0]}); "
            f"pass a complete local folder with {flag} DIR"
        ) from None
    return pipe


def num_train_timesteps(model_id: str) -> int:
    """The training schedule's length of a Stable Diffusion pipeline (1000 unless its local folder says otherwise)."""
    model_id = lora_base_model(model_id) or model_id
    scheduler_config = Path(model_id).expanduser() / "scheduler" / "scheduler_config.json"
    if scheduler_config.is_file():
        return int(json.loads(scheduler_config.read_text()).get("num_train_timesteps", 1000))
    return 1000


def model_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The precision of the UNet and text encoder for the ``dtype`` flag on ``device``.

    ``auto`` is float32 everywhere: measured on SD-1.5-shaped models, a float16 UNet sends the rendered
    image a gradient with cosine 0.9986 (relative error 5%) to float32's, below the 0.999 the tests require.
    """
    return torch.float32 if dtype == "auto" else getattr(torch, dtype)
