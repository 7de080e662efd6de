"""Measuring an edit: CLIP and LPIPS metrics of the edited scene against the source scene.

``pds-eval outputs/bear/pds`` renders the source scene and the edited scene at the same cameras (the
training cameras, or a nerfstudio camera path), saves both sets of renders as 8-bit PNGs and computes
every metric on those PNGs. Notation: ``o_i`` and ``e_i`` are the source and edited renders of view
``i = 1..N`` (in order), ``T_src`` and ``T_tgt`` the source and target prompts, ``E_I`` and ``E_T`` a
CLIP model's projected image and text embeddings, each L2-normalised (``^E = E / ||E||``) before any
difference is taken, as in InstructPix2Pix's ``ClipSimilarity`` and StyleGAN-NADA.

1. CLIP text-image similarity (the "CLIP score" of the PDS paper; Radford et al. 2021, Hessel et al. 2021):
   ``mean_i cos(^E_I(e_i), ^E_T(T_tgt))``, a plain cosine in [-1, 1], not multiplied by 100 and not
   clipped at 0 (torchmetrics' ``CLIPScore`` reports ``100 * max(cos, 0)``).
2. CLIP directional similarity (Gal et al. 2022, StyleGAN-NADA; Brooks et al. 2023, InstructPix2Pix;
   Haque et al. 2023, Instruct-NeRF2NeRF "CLIP text-image direction similarity"):
   ``mean_i cos(^E_I(e_i) - ^E_I(o_i), ^E_T(T_tgt) - ^E_T(T_src))``.
3. CLIP directional consistency (Instruct-NeRF2NeRF, Sec. 5 and Appendix C): the appendix prints
   ``(C(e_i) - C(o_i)) . (C(e_{i+1}) - C(e_i))``, a writing error; the form proposed in
   instruct-nerf2nerf issue #28, which issue #91 reports the authors confirmed there, is implemented:
   ``mean_i cos(^E_I(e_{i+1}) - ^E_I(e_i), ^E_I(o_{i+1}) - ^E_I(o_i))`` over the N - 1 neighbouring pairs:
   the edit changes from one view to the next as the source does.
4. CLIP edit-direction consistency (the other reading asked about in issue #91, still open):
   ``mean_i cos(^E_I(e_i) - ^E_I(o_i), ^E_I(e_{i+1}) - ^E_I(o_{i+1}))``: neighbouring views are edited
   in the same CLIP direction.
5. LPIPS (Zhang et al. 2018, the ``lpips`` package, linear layers v0.1) with the VGG16 and the AlexNet
   trunk: ``mean_i LPIPS(2 o_i - 1, 2 e_i - 1)``, images in [-1, 1], spatially averaged; 0 means the
   edit looks like the source.

A cosine with a zero vector is undefined: a difference of unit embeddings with a norm of at most
:data:`ZERO_TOLERANCE` counts as zero, the cosine counts as 0 in the mean, and the number of such views
(or pairs) is reported as ``undefined_views``. So an edit identical to its source scores LPIPS 0,
directional similarity 0 (every view undefined), directional consistency 1 and edit-direction
consistency 0 (every pair undefined); identical prompts make every directional similarity undefined.
With several CLIP models each one's numbers are reported, and beside them their mean over the models.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch import Tensor

from pds_nerfstudio.checkpoints import load_checkpoint
from pds_nerfstudio.errors import InputError, run_command
from pds_nerfstudio.guidance import check_device, check_pretrained_available
from pds_nerfstudio.perceptual import LPIPS_VERSION, LpipsNet, ensure_lpips_weights, load_lpips
from pds_nerfstudio.pipeline import EditPipeline, EditPipelineConfig, is_edit_run, is_source_run
from pds_nerfstudio.source_run import CONFIG_NAME, Run, find_run, read_run

DEFAULT_CLIP_MODELS: Tuple[str, ...] = ("openai/clip-vit-base-patch32",)
"""CLIP ViT-B/32. For the three-backbone average reported by PnR pass
``--clip-models openai/clip-vit-base-patch32 openai/clip-vit-base-patch16 openai/clip-vit-large-patch14``."""

CLIP_FLAG = "--clip-models"
ZERO_TOLERANCE = 1e-6
"""Norm below which a difference of unit CLIP embeddings counts as the zero vector."""
EDIT_CLIP_METRICS = (
    "text_image_similarity",
    "directional_similarity",
    "directional_consistency",
    "edit_direction_consistency",
)
"""The CLIP metrics, in the order of the module docstring."""
LPIPS_MIN_SIZE = 32
"""Smallest image side both LPIPS trunks accept (AlexNet's strided convolution and pooling need 31 px, VGG16 16 px)."""
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


# --------------------------------------------------------------------------------------------------
# Metrics on embeddings and images (pure tensor math)
# --------------------------------------------------------------------------------------------------


class Cosines(NamedTuple):
    """Per-view (or per-pair) cosines; undefined ones (a zero vector) hold 0 and are marked in ``defined``."""

    values: Tensor
    defined: Tensor

    def summary(self) -> Dict[str, Any]:
        """Mean (None without any view), per-view values and the number of undefined views, for the JSON."""
        values = self.values.double()
        return {
            "value": values.mean().item() if len(values) else None,
            "per_view": values.tolist(),
            "undefined_views": int((~self.defined).sum().item()),
        }


def cosine(a: Tensor, b: Tensor, tolerance: float = ZERO_TOLERANCE) -> Cosines:
    """Row-wise cosine of [N, D] (or broadcastable) vectors; 0 and undefined where either norm <= ``tolerance``."""
    a, b = torch.broadcast_tensors(a.double(), b.double())
    norm_a, norm_b = a.norm(dim=-1), b.norm(dim=-1)
    defined = (norm_a > tolerance) & (norm_b > tolerance)
    values = (a * b).sum(-1) / (norm_a * norm_b).clamp(min=tolerance**2)
    return Cosines(torch.where(defined, values, torch.zeros_like(values)), defined)


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.double(), dim=-1)


def text_image_similarity(edit_images: Tensor, tgt_text: Tensor) -> Cosines:
    """cos(E_I(e_i), E_T(T_tgt)) for image embeddings [N, D] and a text embedding [D]."""
    return cosine(_unit(edit_images), _unit(tgt_text))


def directional_similarity(src_images: Tensor, edit_images: Tensor, src_text: Tensor, tgt_text: Tensor) -> Cosines:
    """cos(^E_I(e_i) - ^E_I(o_i), ^E_T(T_tgt) - ^E_T(T_src)) for image embeddings [N, D] and text embeddings [D]."""
    return cosine(_unit(edit_images) - _unit(src_images), _unit(tgt_text) - _unit(src_text))


def directional_consistency(src_images: Tensor, edit_images: Tensor) -> Cosines:
    """cos(^E_I(e_{i+1}) - ^E_I(e_i), ^E_I(o_{i+1}) - ^E_I(o_i)) for the N - 1 neighbouring pairs (IN2N, issue #28)."""
    src, edit = _unit(src_images), _unit(edit_images)
    return cosine(edit[1:] - edit[:-1], src[1:] - src[:-1])


def edit_direction_consistency(src_images: Tensor, edit_images: Tensor) -> Cosines:
    """cos(^E_I(e_i) - ^E_I(o_i), ^E_I(e_{i+1}) - ^E_I(o_{i+1})) for the N - 1 neighbouring pairs."""
    change = _unit(edit_images) - _unit(src_images)
    return cosine(change[:-1], change[1:])


def clip_metrics(src_images: Tensor, edit_images: Tensor, src_text: Tensor, tgt_text: Tensor) -> Dict[str, Cosines]:
    """Every CLIP metric of the module docstring, keyed as in :data:`EDIT_CLIP_METRICS`."""
    return {
        "text_image_similarity": text_image_similarity(edit_images, tgt_text),
        "directional_similarity": directional_similarity(src_images, edit_images, src_text, tgt_text),
        "directional_consistency": directional_consistency(src_images, edit_images),
        "edit_direction_consistency": edit_direction_consistency(src_images, edit_images),
    }


@torch.no_grad()
def lpips_distances(lpips_model: torch.nn.Module, src: Sequence[np.ndarray], edit: Sequence[np.ndarray]) -> Tensor:
    """LPIPS between each pair of 8-bit [H, W, 3] images, fed to the network in [-1, 1]; returns [N] on the CPU."""
    device = next(lpips_model.parameters()).device

    def to_input(image: np.ndarray) -> Tensor:
        return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    return torch.stack([lpips_model(to_input(o), to_input(e)).flatten()[0].cpu() for o, e in zip(src, edit)])


# --------------------------------------------------------------------------------------------------
# Models: CLIP from transformers, LPIPS from the lpips package; never random weights
# --------------------------------------------------------------------------------------------------


def check_clip_model_available(model_id: str) -> None:
    """Raise InputError unless the CLIP model ``model_id`` is a local transformers folder or can be had from the hub."""
    check_pretrained_available(model_id, "CLIP", "config.json", CLIP_FLAG, "transformers")


class ClipEmbedder:
    """A CLIP model and its processor from ``from_pretrained``: projected (not normalised) embeddings."""

    def __init__(self, model_id: str, device: torch.device) -> None:
        try:
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as error:
            raise ImportError("CLIP metrics need transformers: pip install transformers") from error
        check_clip_model_available(model_id)
        try:
            self.model = CLIPModel.from_pretrained(model_id).eval().to(device)
            self.processor = CLIPProcessor.from_pretrained(model_id)
        except (OSError, ValueError) as error:
            raise InputError(
                f"{CLIP_FLAG} {model_id}: cannot load a CLIP model from it: {str(error).splitlines()[0]}"
            ) from None
        self.device = device

    def pixel_values(self, images: Sequence[np.ndarray]) -> Tensor:
        """CLIP's preprocessing of 8-bit [H, W, 3] images (resize, center crop, normalise): [N, 3, S, S]."""
        pil_images = [Image.fromarray(image) for image in images]
        return self.processor.image_processor(images=pil_images, return_tensors="pt")["pixel_values"]

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """E_I of preprocessed images [N, 3, S, S] (differentiable): [N, D]."""
        pooled = self.model.vision_model(pixel_values=pixel_values.to(self.device)).pooler_output
        return self.model.visual_projection(pooled)

    @torch.no_grad()
    def images(self, images: Sequence[np.ndarray], batch_size: int = 16) -> Tensor:
        """E_I of 8-bit [H, W, 3] images: [N, D] on the CPU."""
        batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        return torch.cat([self.image_features(self.pixel_values(batch)).cpu() for batch in batches])

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> Tensor:
        """E_T of prompts (truncated to the model's context): [N, D] on the CPU."""
        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(
            self.device
        )
        pooled = self.model.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        return self.model.text_projection(pooled).cpu()


# --------------------------------------------------------------------------------------------------
# Runs and renders
# --------------------------------------------------------------------------------------------------


def original_source(checkpoint: Path) -> Tuple[Path, List[Path]]:
    """The unedited scene an edit goes back to, and the edit checkpoints passed on the way.

    ``checkpoint`` is an edit's source checkpoint. If it belongs to an edit run itself (``pds-refine``
    starts from a ``pds`` run), that run's own source is followed, and so on. Only the runs' config.yml
    files are read, so an intermediate checkpoint that was since replaced by a newer one does not matter.
    """
    via: List[Path] = []
    while True:
        config_path = checkpoint.parent.parent / CONFIG_NAME  # <run>/nerfstudio_models/step-N.ckpt
        if not config_path.is_file():
            return checkpoint, via
        config = read_run(config_path).config
        if not is_edit_run(config) or config.pipeline.source_checkpoint is None:
            return checkpoint, via
        if checkpoint in via:
            raise InputError(f"the edits' source checkpoints form a loop at {checkpoint}; pass --source PATH")
        via.append(checkpoint)
        checkpoint = Path(config.pipeline.source_checkpoint)


class Views(NamedTuple):
    """The cameras both scenes are rendered at, in order (neighbours are consecutive)."""

    cameras: List[Cameras]
    camera_indices: List[int]
    names: List[str]


def training_views(pipeline: EditPipeline, downscale_factor: float) -> Views:
    """The training cameras in the dataset's order (each tagged with its own index), named after their images."""
    datamanager = pipeline.datamanager
    cameras = [datamanager.train_camera(i) for i in range(datamanager.num_train_views)]
    names = [Path(name).stem for name in datamanager.train_dataset.image_filenames]
    return Views(_rescaled(cameras, downscale_factor), list(range(len(cameras))), names)


def camera_path_views(camera_path: Dict[str, Any], device: torch.device, downscale_factor: float) -> Views:
    """The frames of a nerfstudio camera path (as ``ns-render camera-path`` reads it), named frame_00000, ..."""
    path = get_path_from_json(camera_path)
    cameras = [path[i : i + 1].to(device) for i in range(len(path))]
    return Views(
        _rescaled(cameras, downscale_factor), [0] * len(cameras), [f"frame_{i:05d}" for i in range(len(cameras))]
    )


def _rescaled(cameras: List[Cameras], downscale_factor: float) -> List[Cameras]:
    for camera in cameras:
        if downscale_factor != 1.0:
            camera.rescale_output_resolution(1.0 / downscale_factor)
    return cameras


def render_views(pipeline: EditPipeline, views: Views, label: str) -> List[np.ndarray]:
    """Render every view of the pipeline's scene (no graph; nerfacto in nerfstudio's evaluation chunks of rays, as
    ns-render) as 8-bit [H, W, 3] images, with a progress bar."""
    chunk_size = getattr(pipeline.model.config, "eval_num_rays_per_chunk", 4096)
    images = []
    columns = (TextColumn(f"Rendering the {label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=CONSOLE, transient=True) as progress:
        for camera, index in progress.track(list(zip(views.cameras, views.camera_indices))):
            image = pipeline.representation.render_image(pipeline.model, camera, index, chunk_size)
            images.append((image.numpy() * 255).round().astype(np.uint8))
    CONSOLE.log(f"Rendered the {label} at {len(images)} views")
    return images


def measure(
    src_images: Sequence[np.ndarray],
    edit_images: Sequence[np.ndarray],
    src_prompt: str,
    tgt_prompt: str,
    clip_models: Sequence[str],
    lpips_nets: Sequence[LpipsNet],
    device: torch.device,
) -> Tuple[Dict[str, Dict[str, Cosines]], Dict[str, Tensor]]:
    """Every metric of 8-bit source and edited renders (same views, in order), one model loaded at a time.

    Returns the CLIP metrics per model (keyed as :data:`EDIT_CLIP_METRICS`) and the LPIPS distances [N] per trunk.
    """
    clip: Dict[str, Dict[str, Cosines]] = {}
    for model_id in clip_models:
        CONSOLE.log(f"CLIP metrics with {model_id}")
        embedder = ClipEmbedder(model_id, device)
        src_text, tgt_text = embedder.texts([src_prompt, tgt_prompt])
        clip[model_id] = clip_metrics(embedder.images(src_images), embedder.images(edit_images), src_text, tgt_text)
        del embedder
    lpips_scores: Dict[str, Tensor] = {}
    for net in lpips_nets:
        CONSOLE.log(f"LPIPS ({net})")
        lpips_scores[net] = lpips_distances(load_lpips(net, device), src_images, edit_images)
    return clip, lpips_scores


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


@dataclass
class EvaluateEdit:
    """Measure an edit: render the source and the edited scene at the same cameras and compute CLIP
    text-image similarity, CLIP directional similarity and consistency and LPIPS (vgg, alex); writes
    metrics.json and report.html (definitions: the README, section "Measuring an edit")."""

    run: tyro.conf.Positional[Path]
    """The edit run (ns-train pds, pds-refine, pnr), any level of its output folder, e.g. outputs/bear/pds (newest)."""
    source: Optional[Path] = None
    """The unedited scene's run (newest checkpoint); default: the scene the edit (or what it refines) started from."""
    clip_models: Tuple[str, ...] = DEFAULT_CLIP_MODELS
    """CLIP models: Hugging Face ids or local folders saved by transformers; their mean is reported beside each."""
    lpips_nets: Tuple[LpipsNet, ...] = ("vgg", "alex")
    """LPIPS trunks."""
    camera_path: Optional[Path] = None
    """A nerfstudio camera path (JSON, as the viewer writes for ns-render); default: the training cameras."""
    downscale_factor: float = 1.0
    """Render at the cameras' resolution divided by this."""
    src_prompt: Optional[str] = None
    """Text describing the source scene; default: the edit's --pipeline.src-prompt."""
    tgt_prompt: Optional[str] = None
    """Text describing the edited scene; default: the edit's --pipeline.tgt-prompt."""
    data: Optional[Path] = None
    """The scene's data, if it moved since the edit."""
    output_dir: Optional[Path] = None
    """Where metrics.json, report.html and the renders go; default: <edit run>/evaluation."""
    device: Optional[str] = None
    """Device for rendering and the metric models; default: cuda if available, else cpu."""

    def main(self) -> Dict[str, Any]:
        """Check the input, render, compute the metrics and write them; returns what metrics.json holds."""
        edit = find_run(self.run, is_edit_run, "an edit run (the output folder of ns-train pds, pds-refine or pnr)")
        config = edit.config
        pipeline_config: EditPipelineConfig = config.pipeline
        source_checkpoint, source_via = self._source_checkpoint(pipeline_config)
        src_prompt = pipeline_config.src_prompt if self.src_prompt is None else self.src_prompt
        tgt_prompt = pipeline_config.tgt_prompt if self.tgt_prompt is None else self.tgt_prompt
        self._check(pipeline_config, tgt_prompt)
        camera_path = self._read_camera_path()
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if not src_prompt.strip():
            CONSOLE.log(
                "[yellow]The source prompt is empty: directional similarity measures the change from the empty "
                "text; pass --src-prompt to describe the source scene"
            )
        for net in self.lpips_nets:
            ensure_lpips_weights(net)

        views, src_images, edit_images = self._render(edit, source_checkpoint, camera_path, device)
        output_dir = self.output_dir or edit.run_dir / "evaluation"
        image_paths = _save_images(output_dir, views.names, src_images, edit_images)
        clip, lpips_scores = measure(
            src_images, edit_images, src_prompt, tgt_prompt, self.clip_models, self.lpips_nets, device
        )

        result = {
            "edit_run": str(edit.run_dir),
            "edit_checkpoint": str(edit.checkpoint),
            "method": config.method_name,
            "source_checkpoint": str(source_checkpoint),
            "source_via": [str(p) for p in source_via],
            "src_prompt": src_prompt,
            "tgt_prompt": tgt_prompt,
            "views": {
                "cameras": str(self.camera_path) if self.camera_path else "training",
                "count": len(views.names),
                "names": views.names,
                "source_images": [str(p.relative_to(output_dir)) for p in image_paths[0]],
                "edit_images": [str(p.relative_to(output_dir)) for p in image_paths[1]],
                "height_width": list(src_images[0].shape[:2]),
            },
            "settings": {
                "clip_models": list(self.clip_models),
                "lpips_nets": list(self.lpips_nets),
                "lpips_version": LPIPS_VERSION,
                "downscale_factor": self.downscale_factor,
                "images": "the 8-bit renders as saved; CLIP: the model's own resize, center crop, normalisation; "
                "LPIPS: mapped to [-1, 1]",
                "clip_similarity_scale": "cosine in [-1, 1] (not x100, not clipped)",
                "undefined_cosine": f"with a zero vector (norm <= {ZERO_TOLERANCE}, unit embeddings) the cosine is 0, "
                "counted in undefined_views",
                "neighbours": "consecutive views in the order listed in views.names",
                "device": str(device),
            },
            "metrics": {
                "clip": _clip_json(clip),
                "lpips": {net: _lpips_json(distances) for net, distances in lpips_scores.items()},
            },
        }
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / METRICS_FILE).write_text(json.dumps(result, indent=2), "utf8")
        (output_dir / REPORT_FILE).write_text(_report_html(result), "utf8")
        CONSOLE.print(_console_table(result))
        CONSOLE.log(f"Wrote {output_dir / METRICS_FILE} and {output_dir / REPORT_FILE}")
        return result

    def _render(
        self, edit: Run, source_checkpoint: Path, camera_path: Optional[Dict[str, Any]], device: torch.device
    ) -> Tuple[Views, List[np.ndarray], List[np.ndarray]]:
        """Render the edit (its newest checkpoint), then load the source's weights into the same pipeline and
        render it at the same views. Returns the views and both sets of 8-bit images."""
        pipeline = self._edit_pipeline(edit, device)
        views = (
            camera_path_views(camera_path, device, self.downscale_factor)
            if camera_path is not None
            else training_views(pipeline, self.downscale_factor)
        )
        if not views.cameras:
            raise InputError("no views to render (the camera path is empty)")
        smallest = min(min(int(c.height.item()), int(c.width.item())) for c in views.cameras)
        if self.lpips_nets and smallest < LPIPS_MIN_SIZE:
            raise InputError(
                f"LPIPS needs views of at least {LPIPS_MIN_SIZE} px on each side, these have {smallest} px; "
                "render them larger (a smaller --downscale-factor, a larger camera path resolution)"
            )
        edit_images = render_views(pipeline, views, "edited scene")
        pipeline.load_source(source_checkpoint)
        src_images = render_views(pipeline, views, "source scene")
        return views, src_images, edit_images

    def _source_checkpoint(self, pipeline_config: EditPipelineConfig) -> Tuple[Path, List[Path]]:
        """The unedited scene's checkpoint, and the edit checkpoints passed on the way to it."""
        if self.source is not None:
            run = find_run(self.source, is_source_run, "a source run (ns-train nerfacto or splatfacto)", "--source")
            assert run.checkpoint is not None
            return run.checkpoint, []
        if pipeline_config.source_checkpoint is None:
            raise InputError("the edit names no source checkpoint; pass the source run with --source PATH")
        checkpoint, via = original_source(Path(pipeline_config.source_checkpoint))
        if not checkpoint.is_file():
            raise InputError(
                f"the source checkpoint {checkpoint} does not exist; pass the source run with --source PATH"
            )
        return checkpoint, via

    def _check(self, pipeline_config: EditPipelineConfig, tgt_prompt: str) -> None:
        """Cheap checks before any heavy work; raises InputError."""
        if not tgt_prompt.strip():
            raise InputError('the target prompt is empty: pass --tgt-prompt "a photo of a polar bear"')
        if not self.clip_models:
            raise InputError(f"{CLIP_FLAG}: name at least one CLIP model")
        if self.downscale_factor <= 0:
            raise InputError("--downscale-factor must be positive")
        if self.data is not None:
            pipeline_config.datamanager.data = pipeline_config.datamanager.dataparser.data = self.data
        data = pipeline_config.datamanager.data or pipeline_config.datamanager.dataparser.data
        if data is None or not Path(data).exists():
            raise InputError(
                f"the scene's data {data} does not exist; if it moved, pass its new location with --data PATH"
            )
        if self.device is not None:
            check_device(self.device, "--device")
        for model_id in self.clip_models:
            check_clip_model_available(model_id)

    def _read_camera_path(self) -> Optional[Dict[str, Any]]:
        if self.camera_path is None:
            return None
        if not self.camera_path.is_file():
            raise InputError(f"--camera-path {self.camera_path} does not exist")
        try:
            return json.loads(self.camera_path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"--camera-path {self.camera_path} is not JSON: {error}") from None

    @staticmethod
    def _edit_pipeline(edit: Run, device: torch.device) -> EditPipeline:
        """The edit's pipeline (never loads Stable Diffusion) with the edit's newest checkpoint."""
        pipeline = edit.config.pipeline.setup(device=device, test_mode="inference")
        pipeline.eval()
        state = load_checkpoint(edit.checkpoint)
        pipeline.load_pipeline(state["pipeline"], state["step"])
        CONSOLE.log(f"Loaded the edited scene from {edit.checkpoint}")
        return pipeline


def _save_images(
    output_dir: Path, names: List[str], src: List[np.ndarray], edit: List[np.ndarray]
) -> Tuple[List[Path], List[Path]]:
    saved: Tuple[List[Path], List[Path]] = ([], [])
    for folder, images, paths in (("source", src, saved[0]), ("edit", edit, saved[1])):
        (output_dir / folder).mkdir(parents=True, exist_ok=True)
        for name, image in zip(names, images):
            paths.append(output_dir / folder / f"{name}.png")
            Image.fromarray(image).save(paths[-1])
    return saved


def _clip_json(clip: Dict[str, Dict[str, Cosines]]) -> Dict[str, Any]:
    """Per model every metric's summary; under "mean" each metric's mean over the models (per view too; a
    view undefined for a model counts as 0 there, as in that model's own mean)."""
    out: Dict[str, Any] = {model_id: {k: c.summary() for k, c in metrics.items()} for model_id, metrics in clip.items()}
    mean: Dict[str, Any] = {}
    for key in EDIT_CLIP_METRICS:
        summaries = [out[model_id][key] for model_id in clip]
        values = [s["value"] for s in summaries]
        mean[key] = {
            "value": None if None in values else float(np.mean(values)),
            "per_view": np.mean([s["per_view"] for s in summaries], axis=0).tolist()
            if summaries[0]["per_view"]
            else [],
        }
    out["mean"] = mean
    return out


def _lpips_json(distances: Tensor) -> Dict[str, Any]:
    values = distances.double()
    return {"value": values.mean().item(), "per_view": values.tolist()}


_LABELS = {
    "text_image_similarity": "CLIP text-image similarity",
    "directional_similarity": "CLIP directional similarity",
    "directional_consistency": "CLIP directional consistency",
    "edit_direction_consistency": "CLIP edit-direction consistency",
}


def _rows(result: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the summary table: a column per CLIP model and their mean; LPIPS in the mean column."""

    def fmt(summary: Dict[str, Any]) -> str:
        value = summary["value"]
        text = "n/a" if value is None else f"{value:.4f}"
        return text + (f" ({summary['undefined_views']} undef.)" if summary.get("undefined_views") else "")

    clip = result["metrics"]["clip"]
    models = result["settings"]["clip_models"]
    header = ["metric", *models, "mean"]
    rows = [[label, *(fmt(clip[m][key]) for m in models), fmt(clip["mean"][key])] for key, label in _LABELS.items()]
    for net, summary in result["metrics"]["lpips"].items():
        rows.append([f"LPIPS ({net})", *([""] * len(models)), fmt(summary)])
    return header, rows


def _console_table(result: Dict[str, Any]) -> Table:
    header, rows = _rows(result)
    table = Table(*header, title=f"{result['method']} edit: {result['tgt_prompt']!r}")
    for row in rows:
        table.add_row(*row)
    return table


def _report_html(result: Dict[str, Any]) -> str:
    """A self-contained page (images linked relatively): prompts, the summary table, source | edit per view."""
    e = html.escape
    header, rows = _rows(result)
    table = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    clip_mean = result["metrics"]["clip"]["mean"]
    lpips = result["metrics"]["lpips"]
    views = result["views"]
    cells = []
    for i, name in enumerate(views["names"]):
        scores = [f"CLIP sim {clip_mean['text_image_similarity']['per_view'][i]:.3f}",
                  f"dir. sim {clip_mean['directional_similarity']['per_view'][i]:.3f}"]  # fmt: skip
        scores += [f"LPIPS {net} {s['per_view'][i]:.3f}" for net, s in lpips.items()]
        cells.append(
            f"<figure><img src='{e(views['source_images'][i])}'><img src='{e(views['edit_images'][i])}'>"
            f"<figcaption>{e(name)}<br>{e(', '.join(scores))}</figcaption></figure>"
        )
    settings = json.dumps(result["settings"], indent=2)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Edit evaluation: {e(result["edit_run"])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }} td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.4em; }} img {{ width: 192px; image-rendering: pixelated; }}
figcaption {{ font-size: 0.8em; }}
</style></head><body>
<h1>{e(result["method"])} edit</h1>
<p>Edit run: {e(result["edit_run"])}<br>Source checkpoint: {e(result["source_checkpoint"])}<br>
Source prompt: {e(repr(result["src_prompt"]))}<br>Target prompt: {e(repr(result["tgt_prompt"]))}<br>
Views: {views["count"]} ({e(views["cameras"])}), {views["height_width"][0]}x{views["height_width"][1]} px</p>
<table>{table}</table>
<h2>Source | edit</h2>
{"".join(cells)}
<h2>Settings</h2><pre>{e(settings)}</pre>
</body></html>
"""


def entrypoint() -> None:
    """``pds-eval``."""
    run_command(EvaluateEdit)


if __name__ == "__main__":
    entrypoint()
