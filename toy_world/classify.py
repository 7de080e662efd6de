"""Measuring the toy world in an image: which pixels are the object, what colour and shape it is.

The floor and the sky are grey (saturation near 0); the object's colours are saturated. So:

- object pixels: saturation (max - min of RGB) above ``SATURATION``;
- colour: the world colour whose chromaticity (RGB / sum) is nearest to the object pixels' mean chromaticity;
- shape: a ball's silhouette fills its circumscribed disc (area / (pi r_max^2) near 1), a cube's from these views
  far less (a square or hexagon with its corners on the circle: 0.64 to 0.83).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from toy_world.world import COLOURS

SATURATION = 0.1
ROUND = 0.76
"""area / (pi r_max^2) above which a silhouette is a ball."""
MIN_PIXELS = 6


@dataclass(frozen=True)
class Reading:
    """What an image shows: the object's pixel mask, its colour and shape (None when there is no object)."""

    mask: np.ndarray
    colour: Optional[str]
    shape: Optional[str]
    roundness: float


def object_mask(image: np.ndarray) -> np.ndarray:
    """[H, W] bool: the saturated pixels of an [H, W, 3] image in [0, 1]."""
    return (image.max(-1) - image.min(-1)) > SATURATION


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    return rgb / np.clip(rgb.sum(-1, keepdims=True), 1e-6, None)


def colour_of(pixels: np.ndarray) -> str:
    """The world colour nearest to the mean chromaticity of ``pixels`` [N, 3]."""
    mean = chromaticity(pixels).mean(0)
    return min(COLOURS, key=lambda name: float(np.sum((chromaticity(np.array(COLOURS[name])) - mean) ** 2)))


def roundness(mask: np.ndarray) -> float:
    """Silhouette area over the area of the disc through its farthest pixel centre (pixel-size corrected)."""
    ys, xs = np.nonzero(mask)
    centre = np.array([ys.mean(), xs.mean()])
    r_max = np.sqrt(((np.stack([ys, xs], -1) - centre) ** 2).sum(-1)).max() + 0.5
    return float(len(ys) / (np.pi * r_max**2))


def shape_of(mask: np.ndarray) -> Optional[str]:
    """The shape an object mask shows: a ball when its roundness is above :data:`ROUND`, else a cube; None below
    :data:`MIN_PIXELS`."""
    if mask.sum() < MIN_PIXELS:
        return None
    return "ball" if roundness(mask) > ROUND else "cube"


def read(image: np.ndarray) -> Reading:
    """Classify an [H, W, 3] image in [0, 1] (float) or [0, 255] (uint8)."""
    image = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    mask = object_mask(image)
    shape = shape_of(mask)
    if shape is None:
        return Reading(mask, None, None, 0.0)
    return Reading(mask, colour_of(image[mask]), shape, roundness(mask))
