"""The source scene kept frozen beside an edit: what pnr perturbs from and revises towards, and what a region holds the
outside of an edited view to."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model
from torch import Tensor

from pds_nerfstudio.scenes.representations import Representation


class FrozenSource:
    """The source scene, frozen: theta_src for the perturbation, the renders the revise steps compare with and those a
    region holds the outside of each edited view to.

    Deliberately not an ``nn.Module`` attribute of the pipeline: it never enters the edit's checkpoints.
    """

    def __init__(self, model: Model, representation: Representation) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.representation = representation
        # Training mode, as the edit model renders while editing: each view with the source's pose
        # refinement and appearance embedding of that view.
        self.model.train()
        self.parameters: Dict[str, Tensor] = {name: p.detach() for name, p in self.model.named_parameters()}
        self._kept: Dict[Tuple[Any, ...], Tensor] = {}

    def render(self, cameras: List[Cameras], views: List[int], chunk_size: int) -> Tensor:
        """The source scene at training ``views`` seen by ``cameras``: [N, 3, H, W] in [0, 1], no graph.

        The views of the last call are kept: a view is edited for several steps in a row.
        """
        background = getattr(self.model, "fixed_background", None)
        kept: Dict[Tuple[Any, ...], Tensor] = {}
        for camera, index in zip(cameras, views):
            pose = tuple(camera.camera_to_worlds.flatten().tolist())  # a new camera of the same view (pnr's orbits)
            key = (index, pose, int(camera.height.item()), int(camera.width.item()), None if background is None else tuple(background.tolist()))
            if key not in self._kept:
                image = self.representation.render_image(self.model, camera, index, chunk_size)
                self._kept[key] = image.permute(2, 0, 1)[None].to(camera.device)
            kept[key] = self._kept[key]
        self._kept = kept
        return torch.cat(list(kept.values()))
