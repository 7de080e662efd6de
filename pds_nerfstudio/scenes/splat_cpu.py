"""Gaussian splatting on a CPU: gsplat's rasterisation math in plain torch, for machines without CUDA.

gsplat 1.4 (which nerfstudio 1.1.5 pins) rasterises with CUDA kernels only, and splatfacto's
``get_outputs`` moves the intrinsics to CUDA. So that splatfacto runs (tests, CI, a laptop) can be
trained, edited and rendered without a GPU, :func:`splatfacto_on_cpu` runs splatfacto's own code with
:func:`rasterize_on_cpu` in place of ``gsplat.rendering.rasterization``. It is used only where the
model is not on CUDA; with a GPU, gsplat's kernels render as usual.

The math is gsplat's, step by step (``classic`` and ``antialiased`` modes, pinhole cameras, unpacked):

1. project: gsplat's own torch reference (``_quat_scale_to_covar_preci``, ``_fully_fused_projection``):
   EWA projection of each 3D covariance, plus ``eps2d`` (0.3 px) of screen-space blur; radius
   ceil(3 sqrt(largest eigenvalue)); Gaussians behind the near plane or off screen get radius 0.
2. colours: gsplat's torch spherical harmonics of the view direction (mean - camera centre), + 0.5, >= 0.
3. tiles: as gsplat's tile intersection, a Gaussian reaches only the pixels of the 16x16 tiles its
   radius box overlaps.
4. composite, front to back by depth, per pixel (pixel centres at +0.5):
   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with the conic (a, b, c), alpha = min(0.999, o exp(-sigma));
   a Gaussian with sigma < 0 or alpha < 1/255 is skipped; compositing stops before the Gaussian that
   would bring the transmittance T to 1e-4 or below; colour = sum alpha T c, alpha_px = 1 - T.

Every pixel is evaluated against every Gaussian (in chunks of pixels, recomputed in the backward pass),
so it is meant for small views and few Gaussians: tests and CPU benchmarks, not 512 px scenes.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Dict, Iterator, Optional, Tuple

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from torch import Tensor
from torch.utils.checkpoint import checkpoint

TILE_SIZE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4


class _AbsGradSink:
    """Where the backward pass adds one camera's absgrad: rows ``rows`` of ``buffer`` [N, 2]. Not a tensor argument,
    so that the checkpointed compositing does not see its in-place update as a change of its inputs."""

    def __init__(self, buffer: Tensor, rows: Tensor) -> None:
        self.buffer, self.rows = buffer, rows


class _AbsGrad(torch.autograd.Function):
    """The identity on the per-pixel offsets [P, N, 2] (mean - pixel centre); its backward also adds the absolute
    values of each pixel's gradient, summed over the pixels, into the sink: gsplat's absgrad (the densification
    signal of splatfacto's default ``use_absgrad``), where a plain gradient sums before taking the abs."""

    @staticmethod
    def forward(ctx, delta: Tensor, sink: _AbsGradSink) -> Tensor:  # type: ignore[override]
        ctx.sink = sink
        return delta.view_as(delta)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        sink = ctx.sink
        sink.buffer.index_add_(0, sink.rows, grad.abs().sum(0).to(sink.buffer))
        return grad, None


def _composite_pixels(
    pixels: Tensor, tiles: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor,
    tile_min: Tensor, tile_max: Tensor, absgrad: Optional[_AbsGradSink] = None,
) -> Tuple[Tensor, Tensor]:
    """Colours [P, D] and alphas [P, 1] of pixel centres ``pixels`` [P, 2] (in tiles ``tiles`` [P, 2]) over the
    Gaussians, which are sorted front to back; with ``absgrad``, the backward fills it (see :class:`_AbsGrad`)."""
    delta = means2d[None] - pixels[:, None]  # [P, N, 2], as gsplat: mean - pixel centre
    if absgrad is not None:
        delta = _AbsGrad.apply(delta, absgrad)
    a, b, c = conics.unbind(-1)
    sigma = 0.5 * (a * delta[..., 0] ** 2 + c * delta[..., 1] ** 2) + b * delta[..., 0] * delta[..., 1]
    alpha = (opacities[None] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    in_tile = ((tiles[:, None] >= tile_min[None]) & (tiles[:, None] < tile_max[None])).all(-1)  # [P, N]
    alpha = torch.where(in_tile & (sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    after = torch.cumprod(1 - alpha, dim=1)  # transmittance after each Gaussian
    before = torch.cat([torch.ones_like(after[:, :1]), after[:, :-1]], dim=1)
    weights = alpha * before * (after > TRANSMITTANCE_MIN)  # compositing stops before T would drop to 1e-4
    return weights @ colors, weights.sum(dim=1, keepdim=True)


def rasterize_on_cpu(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = False,
    backgrounds: Optional[Tensor] = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
    pixel_chunk: int = 4096,
    **_: object,
) -> Tuple[Tensor, Tensor, Dict[str, object]]:
    """The subset of ``gsplat.rendering.rasterization`` that splatfacto uses, differentiable with torch's autograd.

    Takes and returns what gsplat does: renders [C, H, W, D] (D = 3, or 4 with ``RGB+ED``), alphas
    [C, H, W, 1] and the info dict that gsplat's densification strategies read (``means2d``, ``radii``, ...);
    with ``absgrad``, ``means2d.absgrad`` is filled by the backward pass, as gsplat's kernels fill it.
    Options only for speed (``sparse_grad``, ``radius_clip``, ...) are accepted and ignored.
    """
    if packed or render_mode not in ("RGB", "RGB+ED") or rasterize_mode not in ("classic", "antialiased"):
        raise NotImplementedError(f"CPU rasterisation: packed={packed}, render_mode={render_mode}, {rasterize_mode}")
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    num_cameras = viewmats.shape[0]
    opacities = opacities.repeat(num_cameras, 1)
    if compensations is not None:
        opacities = opacities * compensations
    if sh_degree is None:
        colors = colors.expand(num_cameras, *colors.shape) if colors.dim() == 2 else colors
    else:
        centres = torch.inverse(viewmats)[:, None, :3, 3]
        shs = colors.expand(num_cameras, *colors.shape) if colors.dim() == 3 else colors
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, means[None] - centres, shs) + 0.5, 0.0)
    if render_mode == "RGB+ED":
        colors = torch.cat([colors, depths[..., None]], dim=-1)

    ys, xs = torch.meshgrid(torch.arange(height, device=means.device), torch.arange(width, device=means.device), indexing="ij")
    pixel_index = torch.stack([xs, ys], -1).reshape(-1, 2)
    pixel_centres = pixel_index.to(means.dtype) + 0.5
    pixel_tiles = torch.div(pixel_index, TILE_SIZE, rounding_mode="floor")
    tile_counts = torch.tensor([math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)], device=means.device)
    first_tile = torch.zeros(2, device=means.device)
    absgrads = torch.zeros_like(means2d, requires_grad=False) if absgrad else None
    renders, alphas = [], []
    for cam in range(num_cameras):
        visible = torch.nonzero(radii[cam] > 0)[:, 0]
        order = visible[torch.argsort(depths[cam, visible])]  # front to back
        radius = radii[cam, order, None].to(means.dtype)
        centre = means2d[cam, order].detach() / TILE_SIZE
        tile_min = torch.minimum(torch.maximum(torch.floor(centre - radius / TILE_SIZE), first_tile), tile_counts)
        tile_max = torch.minimum(torch.maximum(torch.ceil(centre + radius / TILE_SIZE), first_tile), tile_counts)
        gaussians = (means2d[cam, order], conics[cam, order], opacities[cam, order], colors[cam, order], tile_min, tile_max,
                     None if absgrads is None else _AbsGradSink(absgrads[cam], order))  # fmt: skip
        chunks = [
            checkpoint(_composite_pixels, pixel_centres[start : start + pixel_chunk], pixel_tiles[start : start + pixel_chunk],
                       *gaussians, use_reentrant=False)  # fmt: skip
            for start in range(0, len(pixel_centres), pixel_chunk)
        ]
        renders.append(torch.cat([chunk[0] for chunk in chunks]).view(height, width, -1))
        alphas.append(torch.cat([chunk[1] for chunk in chunks]).view(height, width, 1))
    render, alpha = torch.stack(renders), torch.stack(alphas)
    if render_mode == "RGB+ED":  # expected depth: accumulated depth over accumulated alpha
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    if backgrounds is not None:
        render = render + backgrounds[:, None, None, :] * (1 - alpha)
    if absgrads is not None:
        means2d.absgrad = absgrads  # type: ignore[attr-defined]  # gsplat's attribute, read by its strategies
    info = {
        "camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d, "depths": depths,
        "conics": conics, "opacities": opacities, "width": width, "height": height, "n_cameras": num_cameras,
        "tile_size": TILE_SIZE,
    }  # fmt: skip
    return render, alpha, info


_patch_lock = threading.Lock()
_patch_depth = 0
_saved: Dict[str, object] = {}


@contextlib.contextmanager
def splatfacto_on_cpu() -> Iterator[None]:
    """Run nerfstudio's splatfacto code on a CPU: its rasteriser is :func:`rasterize_on_cpu`, and its
    ``.cuda()`` calls (the intrinsics, seed colours) leave tensors where they are.

    Only for machines or models without CUDA; re-entrant and safe across threads (training and the viewer).
    """
    global _patch_depth
    import nerfstudio.models.splatfacto as splatfacto

    with _patch_lock:
        if _patch_depth == 0:
            _saved["rasterization"] = splatfacto.rasterization
            _saved["cuda"] = torch.Tensor.cuda
            splatfacto.rasterization = rasterize_on_cpu
            torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                splatfacto.rasterization = _saved.pop("rasterization")
                torch.Tensor.cuda = _saved.pop("cuda")  # type: ignore[method-assign]
