"""The views an edit is measured at: the training cameras or a nerfstudio camera path, rendered from a pipeline;
and the source run an edit (or what it refines) started from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Tuple

import numpy as np
import torch
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.integration.pipeline import EditPipeline, is_edit_run
from pds_nerfstudio.integration.source_run import CONFIG_NAME, read_run


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
