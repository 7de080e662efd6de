"""Results people can look at: renders of every training view, a source | edited grid, a turntable GIF."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

COMPARE_NAME = "compare.png"
TURNTABLE_NAME = "turntable.gif"


def to_pil(image: Tensor) -> Image.Image:
    """[H, W, 3] float image in [0, 1] as an 8-bit PIL image."""
    return Image.fromarray((image.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


COMPARE_MIN_SIDE = 128
"""Views smaller than this (short side, px) are enlarged in compare.png, pixels kept square, so they can be seen."""


def compare_scale(height: int, width: int) -> int:
    """The whole-number factor compare.png enlarges a view of ``height`` x ``width`` by (1 from 128 px up)."""
    return max(1, -(-COMPARE_MIN_SIDE // min(height, width)))


def compare_grid(sources: Sequence[Tensor], edits: Sequence[Tensor]) -> Image.Image:
    """One row per view: source | edited, each [H, W, 3] in [0, 1], enlarged by :func:`compare_scale`
    (nearest neighbour: a 32 px render shows as 128 px of 4 x 4 blocks, not as a blur)."""
    rows = [torch.cat([source.cpu(), edit.cpu()], dim=1) for source, edit in zip(sources, edits)]
    width = max(row.shape[1] for row in rows)
    rows = [torch.nn.functional.pad(row, (0, 0, 0, width - row.shape[1])) for row in rows]
    grid = to_pil(torch.cat(rows, dim=0))
    scale = compare_scale(*sources[0].shape[:2])
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST) if scale > 1 else grid


def turntable_order(camera_positions: Tensor) -> List[int]:
    """Order of views along the training cameras: by azimuth around their centre (nerfstudio's z is up)."""
    offsets = camera_positions - camera_positions.mean(dim=0)
    return torch.argsort(torch.atan2(offsets[:, 1], offsets[:, 0])).tolist()


def write_turntable(frames: Sequence[Tensor], path: Path, max_side: int = 256, frame_ms: int = 120) -> Path:
    """An endlessly looping GIF of ``frames`` ([H, W, 3] in [0, 1]), scaled down to at most ``max_side`` px."""
    images = [to_pil(frame) for frame in frames]
    scale = min(1.0, max_side / max(images[0].size))
    if scale < 1.0:
        size = (round(images[0].width * scale), round(images[0].height * scale))
        images = [image.resize(size, Image.Resampling.LANCZOS) for image in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return path


def evenly_spaced(count: int, num: int) -> List[int]:
    """``num`` indices spread over ``range(count)`` (all of them when ``count <= num``)."""
    if count <= num:
        return list(range(count))
    return sorted({round(i * (count - 1) / (num - 1)) for i in range(num)}) if num > 1 else [0]
