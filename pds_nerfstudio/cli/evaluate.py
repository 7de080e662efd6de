"""``pds-eval``: measure an edit. Renders the source and the edited scene at the same cameras, computes the metrics
of :mod:`pds_nerfstudio.metrics.scores` (definitions there) and writes the report of
:mod:`pds_nerfstudio.metrics.report`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from pds_nerfstudio.common.checkpoints import load_checkpoint
from pds_nerfstudio.common.errors import InputError, run_command
from pds_nerfstudio.integration.pipeline import EditPipeline, EditPipelineConfig, is_edit_run, is_source_run
from pds_nerfstudio.integration.source_run import Run, find_run
from pds_nerfstudio.metrics.clip import CLIP_FLAG, DEFAULT_CLIP_MODELS, check_clip_model_available
from pds_nerfstudio.metrics.report import (
    METRICS_FILE,
    REPORT_FILE,
    _clip_json,
    _console_table,
    _lpips_json,
    _report_html,
    _save_images,
)
from pds_nerfstudio.metrics.scores import ZERO_TOLERANCE, measure
from pds_nerfstudio.metrics.views import Views, camera_path_views, original_source, render_views, training_views
from pds_nerfstudio.priors.loading import check_device
from pds_nerfstudio.priors.perceptual import LPIPS_VERSION, LpipsNet, ensure_lpips_weights

LPIPS_MIN_SIZE = 32
"""Smallest image side both LPIPS trunks accept (AlexNet's strided convolution and pooling need 31 px, VGG16 16 px)."""


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


def entrypoint() -> None:
    """``pds-eval``."""
    run_command(EvaluateEdit)


if __name__ == "__main__":
    entrypoint()
