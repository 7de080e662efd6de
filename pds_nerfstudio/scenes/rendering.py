"""Differentiable rendering of whole views, with peak memory that does not grow with the image.

``full-graph`` renders the view in one pass and keeps its autograd graph alive: memory grows with
the number of pixels (what the official PDS release and Instruct-NeRF2NeRF do).

``chunked`` renders the view in ray chunks without a graph. When the loss is backpropagated, the
gradient arrives at the rendered image (through the VAE encoder and whatever else used the image);
then each chunk is rendered again, with a graph, and its slice of the image gradient is
backpropagated into the field before the next chunk. Both passes draw exactly the same samples (same
random seeds, same proposal-sampler state), so the parameter gradient equals the one-graph gradient.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Literal, Optional, Sequence, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model
from torch import Tensor
from torch.nn import Parameter

RenderMode = Literal["chunked", "full-graph"]


def guidance_camera(camera: Cameras, short_side: int) -> Cameras:
    """A copy of a one-camera ``camera`` rescaled so that the short side of its image is ``short_side`` pixels."""
    scaled = camera[0:1]  # a new Cameras object: rescaling reassigns its fields and leaves ``camera`` as it was
    current = int(min(scaled.height.item(), scaled.width.item()))
    if current != short_side:
        scaled.rescale_output_resolution(short_side / current, scale_rounding_mode="round")
    return scaled


def view_rays(camera: Cameras, camera_index: int) -> RayBundle:
    """All rays of a one-camera view, flattened in row-major order, tagged with the training view's index
    (the source's pose refinement and appearance embedding of that view apply)."""
    rays = camera.generate_rays(camera_indices=0, keep_shape=True).flatten()
    rays.camera_indices = torch.full_like(rays.camera_indices, camera_index)
    return rays


def _chunks(num_rays: int, chunk_size: int) -> List[Tuple[int, int]]:
    return [(start, min(start + chunk_size, num_rays)) for start in range(0, num_rays, chunk_size)]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's random state seeded with ``seed`` (on ``device`` too, if CUDA), leaving the caller's
    random state untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class _SamplerState:
    """The one piece of state nerfacto's proposal sampler changes while rendering (its update counter).

    Every chunk of both passes starts from the same counter, as the single pass of a one-graph render
    does, so that every chunk takes the same (with or without graph) route through the proposal networks.
    """

    def __init__(self, model: Model) -> None:
        self.sampler = getattr(model, "proposal_sampler", None)
        self.before = self._get()
        self.after = self.before

    def _get(self) -> Optional[int]:
        return getattr(self.sampler, "_steps_since_update", None)

    def _set(self, value: Optional[int]) -> None:
        if value is not None:
            self.sampler._steps_since_update = value  # type: ignore[union-attr]

    @contextlib.contextmanager
    def chunk(self) -> Iterator[None]:
        self._set(self.before)
        yield
        self.after = self._get()

    def finish(self) -> None:
        self._set(self.after)


def _render_rgb(model: Model, rays: RayBundle) -> Tensor:
    return model(rays)["rgb"]


class _ChunkedRender(torch.autograd.Function):
    """rgb = render(params); forward without a graph, backward by re-rendering chunk by chunk."""

    @staticmethod
    def forward(ctx, renderer: "ChunkedRenderer", *params: Parameter) -> Tensor:  # type: ignore[override]
        ctx.renderer = renderer
        with torch.no_grad():
            return renderer.render_chunks()

    @staticmethod
    def backward(ctx, grad_rgb: Tensor):  # type: ignore[override]
        renderer: ChunkedRenderer = ctx.renderer
        grads = renderer.backward_chunks(grad_rgb)
        return (None, *grads)


class ChunkedRenderer:
    """Renders one view's rays in chunks; see the module docstring."""

    def __init__(self, model: Model, rays: RayBundle, chunk_size: int) -> None:
        self.model = model
        self.rays = rays
        self.chunks = _chunks(len(rays), chunk_size)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = rays.origins.device
        self.seeds = torch.randint(0, 2**62, (len(self.chunks),)).tolist()
        self.sampler_state = _SamplerState(model)

    def _render_chunk(self, i: int) -> Tensor:
        start, end = self.chunks[i]
        with seeded(self.seeds[i], self.device), self.sampler_state.chunk():
            return _render_rgb(self.model, self.rays[start:end])

    def render_chunks(self) -> Tensor:
        rgb = torch.cat([self._render_chunk(i) for i in range(len(self.chunks))])
        self.sampler_state.finish()
        return rgb

    def backward_chunks(self, grad_rgb: Tensor) -> Sequence[Optional[Tensor]]:
        total: List[Optional[Tensor]] = [None] * len(self.params)
        for i, (start, end) in enumerate(self.chunks):
            with torch.enable_grad():
                rgb = self._render_chunk(i)
                grads = torch.autograd.grad(rgb, self.params, grad_rgb[start:end], allow_unused=True)
            for k, grad in enumerate(grads):
                if grad is not None:
                    total[k] = grad if total[k] is None else total[k] + grad
        self.sampler_state.finish()
        return total

    def render(self) -> Tensor:
        return _ChunkedRender.apply(self, *self.params)


def render_view(
    model: Model, camera: Cameras, camera_index: int, mode: RenderMode = "chunked", chunk_size: int = 4096
) -> Tensor:
    """Render a one-camera view as an image [1, 3, H, W] that is differentiable wrt the model's parameters.

    Args:
        camera_index: index of the training view, for the source's per-view pose and appearance.
        mode: ``chunked`` (memory independent of the image size) or ``full-graph`` (one graph for the view).
        chunk_size: rays per chunk in ``chunked`` mode.
    """
    height, width = int(camera.height.item()), int(camera.width.item())
    rays = view_rays(camera, camera_index)
    if mode == "full-graph" or (mode == "chunked" and len(rays) <= chunk_size):  # one chunk: one pass suffices
        rgb = _render_rgb(model, rays)
    elif mode == "chunked":
        rgb = ChunkedRenderer(model, rays, chunk_size).render()
    else:
        raise ValueError(f"Unknown render mode {mode!r}; choose one of: chunked, full-graph.")
    return rgb.view(height, width, 3).permute(2, 0, 1)[None]


@torch.no_grad()
def render_view_image(model: Model, camera: Cameras, camera_index: int, chunk_size: int = 4096) -> Tensor:
    """Render a view without any graph, as an image [H, W, 3] in [0, 1] on the CPU."""
    rays = view_rays(camera, camera_index)
    rgb = torch.cat([_render_rgb(model, rays[start:end]) for start, end in _chunks(len(rays), chunk_size)])
    return rgb.view(int(camera.height.item()), int(camera.width.item()), 3).clamp(0, 1).cpu()
