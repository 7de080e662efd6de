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

from typing import Any, Dict, NamedTuple, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from pds_nerfstudio.metrics.clip import ClipEmbedder
from pds_nerfstudio.priors.perceptual import LpipsNet, load_lpips

ZERO_TOLERANCE = 1e-6
"""Norm below which a difference of unit CLIP embeddings counts as the zero vector."""
EDIT_CLIP_METRICS = (
    "text_image_similarity",
    "directional_similarity",
    "directional_consistency",
    "edit_direction_consistency",
)
"""The CLIP metrics, in the order of the module docstring."""


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
# Every metric of two sets of renders (the models: metrics.clip, priors.perceptual; never random weights)
# --------------------------------------------------------------------------------------------------


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
