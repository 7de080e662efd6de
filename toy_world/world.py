"""The toy world: one object (a ball or a cube, in one of four colours; scenes may hold several) on a grey floor under
a light sky, seen by cameras on a ring around it, ray-cast analytically with numpy; and the captions that describe each image.

    caption(colour, shape) = "a photo of a {colour} {shape} on a grey floor"

Everything is a function of its arguments and a seed: the same call renders the same image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.9, 0.8, 0.1),
}
"""Albedo of each object colour (saturated, so the classifier tells them from the grey floor and the sky)."""
SHAPES = ("ball", "cube")
FLOOR_Z = -0.35
FLOOR_ALBEDO = np.array([0.55, 0.55, 0.55])
SKY_LOW, SKY_HIGH = np.array([0.86, 0.86, 0.84]), np.array([0.72, 0.74, 0.78])
LIGHT = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])
OBJECT_SIZE = 0.35
"""Ball radius and cube half-edge at scale 1."""


DARK = "dark"
"""The word a prior trained with dark objects (``train_prior --dark-share``) puts before their colour: "a photo of a
dark red ball on a grey floor"."""
DARK_ALBEDO = (0.3, 0.6)
"""The range of the factor on a dark object's albedo (:func:`training_images`): darker than any lit face of the
world's own objects, as dark as the edits that end short of their target's brightness (docs/outcome_matrix.md)."""


def caption(colour: str, shape: str) -> str:
    """The caption of an object; ``colour`` may be a dark one (:func:`dark`)."""
    return f"a photo of a {colour} {shape} on a grey floor"


def dark(colour: str) -> str:
    """The name of ``colour`` darkened: "dark red"."""
    return f"{DARK} {colour}"


def all_captions(with_dark: bool = False) -> List[str]:
    """The world's 8 captions, then (``with_dark``) the 8 of its dark objects."""
    shades = [dark(colour) for colour in COLOURS] if with_dark else []
    return [caption(colour, shape) for colours in (list(COLOURS), shades) for shape in SHAPES for colour in colours]


CAPTION_WORDS = ("a", "photo", "of", "on", "grey", "floor", *COLOURS, *SHAPES)
"""Every word of the world's captions (the tokenizer gives each its own token); a prior trained with dark objects
adds :data:`DARK`."""


@dataclass(frozen=True)
class Thing:
    """The object in the scene: its colour, shape, centre on the floor, size and (cube) turn about the vertical."""

    colour: str
    shape: str
    centre: Tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    turn: float = 0.0
    albedo: float = 1.0
    """Factor on the colour's albedo (below 1: a dark object, :data:`DARK_ALBEDO`)."""

    @property
    def size(self) -> float:
        return OBJECT_SIZE * self.scale


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """4x4 camera-to-world in nerfstudio's (OpenGL) convention: x right, y up, the camera looks along -z."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(right, forward), -forward, eye
    return c2w


def ring_camera(azimuth: float, elevation: float = np.deg2rad(30.0), radius: float = 3.0) -> np.ndarray:
    """A camera on the ring around the origin, looking at it."""
    eye = radius * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return look_at(eye)


def focal_for(size: int, fov_degrees: float = 45.0) -> float:
    return 0.5 * size / np.tan(0.5 * np.deg2rad(fov_degrees))


def _rays(c2w: np.ndarray, focal: float, size: int) -> Tuple[np.ndarray, np.ndarray]:
    pixel = np.arange(size) + 0.5
    u, v = np.meshgrid(pixel, pixel, indexing="xy")
    directions = np.stack([(u - size / 2) / focal, -(v - size / 2) / focal, -np.ones_like(u)], axis=-1) @ c2w[:3, :3].T
    return c2w[:3, 3], directions / np.linalg.norm(directions, axis=-1, keepdims=True)


def _hit_ball(origin, directions, thing: Thing):
    centre = np.array([*thing.centre, FLOOR_Z + thing.size])
    oc = origin - centre
    b = directions @ oc
    disc = b * b - (oc @ oc - thing.size**2)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    hit = (disc > 0) & (t > 0)
    normals = (origin + t[..., None] * directions - centre) / thing.size
    return np.where(hit, t, np.inf), normals


def _hit_cube(origin, directions, thing: Thing):
    """Slab test in the cube's frame (turned by ``turn`` about z, resting on the floor)."""
    c, s = np.cos(thing.turn), np.sin(thing.turn)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # cube frame -> world
    centre = np.array([*thing.centre, FLOOR_Z + thing.size])
    o, d = (origin - centre) @ rotation, directions @ rotation
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-thing.size - o) / d, (thing.size - o) / d
    t_near, t_far = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    hit = (t_near <= t_far) & (t_near > 0)
    axis = np.argmax(np.minimum(t1, t2), axis=-1)  # the slab entered last is the face hit
    sign = -np.sign(np.take_along_axis(d, axis[..., None], -1))[..., 0]
    normals = np.eye(3)[axis] * sign[..., None]
    return np.where(hit, t_near, np.inf), normals @ rotation.T


Scene = Union[Thing, Sequence[Thing]]
"""What :func:`render` and :func:`write_scene` draw: one thing or several on the floor."""


def render(scene: Scene, c2w: np.ndarray, size: int, focal: float = 0.0) -> np.ndarray:
    """The image [size, size, 3] in [0, 1] of the scene (one thing or several) on the floor seen by ``c2w`` (focal:
    45 degrees by default)."""
    return _cast(scene, c2w, size, focal)[0]


def _cast(scene: Scene, c2w: np.ndarray, size: int, focal: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`render`'s image and each pixel's surface point [size, size, 3] in world coordinates (nan where the ray
    meets neither the floor nor a thing)."""
    things = (scene,) if isinstance(scene, Thing) else tuple(scene)
    origin, directions = _rays(c2w, focal or focal_for(size), size)
    height = np.clip(directions[..., 2:3] * 0.5 + 0.5, 0.0, 1.0)
    image = (1 - height) * SKY_LOW + height * SKY_HIGH
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = (FLOOR_Z - origin[2]) / directions[..., 2]
    floor = np.isfinite(t_floor) & (t_floor > 0)
    points = origin + t_floor[..., None] * directions
    fade = np.exp(-0.08 * np.linalg.norm(points[..., :2], axis=-1))[..., None]
    floor_colour = FLOOR_ALBEDO * (0.55 + 0.45 * LIGHT[2]) * fade + image * (1 - fade)
    image = np.where(floor[..., None], floor_colour, image)
    depth = np.where(floor, t_floor, np.inf)
    for thing in things:
        t_object, normals = (_hit_ball if thing.shape == "ball" else _hit_cube)(origin, directions, thing)
        hit = np.isfinite(t_object) & (t_object < depth)
        shade = 0.3 + 0.7 * np.clip(normals @ LIGHT, 0.0, 1.0)
        image = np.where(hit[..., None], np.array(COLOURS[thing.colour]) * thing.albedo * shade[..., None], image)
        depth = np.where(hit, t_object, depth)
    surface = origin + np.where(np.isfinite(depth), depth, np.nan)[..., None] * directions
    return np.clip(image, 0.0, 1.0), surface


def thing_masks(scene: Scene, c2w: np.ndarray, size: int, focal: float = 0.0) -> List[np.ndarray]:
    """For each thing of the scene, the pixels [size, size] bool where it is the nearest surface seen by ``c2w``: each
    object's own mask (the classifier reads every saturated pixel as one object)."""
    things = (scene,) if isinstance(scene, Thing) else tuple(scene)
    origin, directions = _rays(c2w, focal or focal_for(size), size)
    hits = [(_hit_ball if thing.shape == "ball" else _hit_cube)(origin, directions, thing)[0] for thing in things]
    nearest = np.argmin(np.stack(hits), axis=0)
    return [(nearest == i) & np.isfinite(t) for i, t in enumerate(hits)]


def random_view(rng: np.random.Generator, colour: str, shape: str, size: int, albedo: float = 1.0) -> np.ndarray:
    """One training image of the world: the object placed, sized and turned a little at random, its albedo times
    ``albedo``, seen from a random point of the ring (the cameras of the world's scenes), the elevation and distance
    jittered."""
    placement = tuple(rng.uniform(-0.15, 0.15, 2)), float(rng.uniform(0.8, 1.2)), float(rng.uniform(0, np.pi / 2))
    thing = Thing(colour, shape, *placement, albedo=albedo)
    c2w = ring_camera(rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(20.0, 40.0)), rng.uniform(2.6, 3.4))
    return render(thing, c2w, size)


def training_images(count: int, size: int, seed: int, dark_share: float = 0.0) -> Iterator[Tuple[np.ndarray, str, str]]:
    """``count`` (image, colour, shape) of random views, every colour and shape equally often; ``dark_share`` of them
    (drawn at random) with the albedo darkened by a factor drawn from :data:`DARK_ALBEDO` and the colour named dark
    ("dark red"). With no dark share the draws are those of the priors trained before it."""
    rng = np.random.default_rng(seed)
    pairs: Sequence[Tuple[str, str]] = [(colour, shape) for shape in SHAPES for colour in COLOURS]
    for index in range(count):
        colour, shape = pairs[index % len(pairs)]
        if dark_share > 0 and rng.random() < dark_share:
            albedo = float(rng.uniform(*DARK_ALBEDO))
            yield random_view(rng, colour, shape, size, albedo), dark(colour), shape
        else:
            yield random_view(rng, colour, shape, size), colour, shape


def dome_cameras(azimuths: int, elevations_degrees: Sequence[float], radii: Sequence[float]) -> List[np.ndarray]:
    """Cameras looking at the origin from ``azimuths`` evenly spaced directions at each elevation and distance: a
    capture that sees the object from the orbit cameras' heights and distances, not only from the ring."""
    return [
        ring_camera(2 * np.pi * (i + 0.5 * ring) / azimuths, np.deg2rad(elevation), radius)
        for ring, (elevation, radius) in enumerate((e, r) for e in elevations_degrees for r in radii)
        for i in range(azimuths)
    ]


def write_scene(
    path: Path, scene: Scene, num_views: int = 10, size: int = 32, k1: float = 0.0, sparse_points: int = 0,
    cameras: Optional[Sequence[np.ndarray]] = None,
) -> Path:
    """Render the scene (one thing or several) from ``num_views`` cameras evenly spaced on the ring (radius 3, 30
    degrees up), or from ``cameras`` (camera-to-world matrices, e.g. :func:`dome_cameras`) when given, and write them
    as a nerfstudio dataset (``transforms.json`` + PNGs, pinhole ``OPENCV`` intrinsics).

    ``sparse_points`` above 0 also writes ``sparse_pc.ply`` (named by ``ply_file_path``, as ns-process-data writes
    the COLMAP points of a real capture): that many surface points seen by the views' pixels, within
    :data:`SPARSE_POINT_RADIUS` of the scene's centre, each with its pixel's colour. splatfacto starts its Gaussians
    there (nerfacto does not read them); without them it scatters random Gaussians, which in a few hundred steps
    learn the floor but not the ball.

    ``k1`` declares a radial distortion coefficient, as ns-process-data writes for real captures; the images stay the
    pinhole renders (enough to check that an edit serves the images and cameras nerfstudio derives from them).
    nerfstudio's parser holds out ``num_views - ceil(0.9 * num_views)`` views for eval, so ``num_views`` must be at
    least 10 for both splits to be non-empty.
    """
    from PIL import Image

    poses = [ring_camera(2 * np.pi * i / num_views) for i in range(num_views)] if cameras is None else list(cameras)
    if len(poses) < 10:
        raise ValueError(f"num_views must be at least 10 (the default split needs an eval view), got {len(poses)}")
    path = Path(path)
    (path / "images").mkdir(parents=True, exist_ok=True)
    focal = focal_for(size)
    frames, seen = [], []
    for i, c2w in enumerate(poses):
        file_path = f"images/frame_{i + 1:05d}.png"
        image, surface = _cast(scene, c2w, size, focal)
        Image.fromarray((image * 255).round().astype(np.uint8)).save(path / file_path)
        frames.append({"file_path": file_path, "transform_matrix": c2w.tolist()})
        seen.append((surface.reshape(-1, 3), image.reshape(-1, 3)))
    transforms = {
        "camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size,
        "k1": k1, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames,
    }  # fmt: skip
    if sparse_points > 0:
        transforms["ply_file_path"] = "sparse_pc.ply"
        _write_ply(path / "sparse_pc.ply", *_sample_points(seen, sparse_points))
    (path / "transforms.json").write_text(json.dumps(transforms, indent=2))
    return path


SPARSE_POINT_RADIUS = 3.0
"""How far from the scene's centre :func:`write_scene`'s sparse points lie (the cameras' ring radius)."""


def _sample_points(seen: Sequence[Tuple[np.ndarray, np.ndarray]], count: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` of the views' (surface point, colour) pairs within :data:`SPARSE_POINT_RADIUS`, drawn with ``seed``."""
    points, colours = (np.concatenate(parts) for parts in zip(*seen))
    near = np.flatnonzero(np.linalg.norm(points, axis=-1) < SPARSE_POINT_RADIUS)  # nan (no surface) is never near
    chosen = np.random.default_rng(seed).choice(near, size=min(count, len(near)), replace=False)
    return points[chosen], colours[chosen]


def _write_ply(path: Path, points: np.ndarray, colours: np.ndarray) -> None:
    """An ASCII PLY of coloured points (x y z as floats, red green blue as 0-255), as open3d and nerfstudio read it."""
    header = ["ply", "format ascii 1.0", f"element vertex {len(points)}", "property float x", "property float y",
              "property float z", "property uchar red", "property uchar green", "property uchar blue", "end_header"]  # fmt: skip
    rgb = (np.clip(colours, 0, 1) * 255).round().astype(int)
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(points, rgb)]
    path.write_text("\n".join(header + rows) + "\n")
