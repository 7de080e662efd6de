"""The region in nerfstudio's web viewer: the render with the region marked (the "region" output type, for a box or
masks), and for a box a gizmo that moves and turns it, its size in the capture's units, and a checkbox that shows it
over the render. The edit uses the box as the viewer leaves it from its next step on; the box is kept in the run's
checkpoints, so a resumed run continues with it (unless ``--pipeline.region.box`` is typed again)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerVec3
from torch import Tensor, nn

from pds_nerfstudio.regions.region import Region
from pds_nerfstudio.scenes.box import Box

BOX_COLOUR = (255, 150, 30)
REGION_OUTPUT = "region"
"""The output type (nerfstudio's viewer lists it beside rgb, depth, ...) that shows the region over the render."""


class RegionOverlay:
    """The render with the region marked: tinted in the box's colour, the rest dimmed. Marked are the pixels whose ray
    meets the region as the edit's steps take it now: the box (as the viewer left it), the masks' visual hull within
    the scene's box. In a training view, these are the pixels a step edits.

    Args:
        region: the edit's region.
        bounds: the scene's box (nerfstudio's scene box, in the scene's frame).
    """

    def __init__(self, region: Region, bounds: Box) -> None:
        self.region = region
        self.bounds = bounds
        self.shown: Callable[[], bool] = lambda: True
        """Whether the output is looked at: in a viewer, whether its output type is the one shown (masks cost seconds a
        frame at 256 px); otherwise the output is the render itself, so that the type stays listed."""

    def inside(self, camera: Cameras, outputs: Dict[str, Tensor]) -> Tensor:
        """[H, W, 1] bool: the pixels of ``camera``'s render ``outputs`` in the region."""
        rgb = outputs["rgb"]
        inside = torch.ones(rgb.shape[:-1], dtype=torch.bool)
        camera = camera.to("cpu")
        if self.region.box is not None:
            inside &= self.region.box.pixels(camera)
        if self.region.masks is not None:
            inside &= self.region.masks_hit_by(camera, self.bounds)
        return inside.to(rgb.device)[..., None]

    def __call__(self, camera: Cameras, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        rgb = outputs["rgb"]
        if not self.shown():
            return {REGION_OUTPUT: rgb}
        colour = torch.tensor(BOX_COLOUR, dtype=rgb.dtype, device=rgb.device) / 255
        return {REGION_OUTPUT: torch.where(self.inside(camera, outputs), 0.5 * rgb + 0.5 * colour, 0.5 * rgb)}


def box_state(box: Box) -> Dict[str, List[float]]:
    """A box as plain numbers (checkpoints, comparisons)."""
    return {"centre": box.centre.tolist(), "size": box.size.tolist(), "rotation": box.rotation.flatten().tolist()}


def box_from_state(state: Dict[str, List[float]]) -> Box:
    return Box(torch.tensor(state["centre"]), torch.tensor(state["size"]), torch.tensor(state["rotation"]).view(3, 3))


class RegionBoxControls(nn.Module):
    """Viewer controls of a region's box (nerfstudio shows the checkbox and the size under "Custom Elements"; the gizmo is
    in the 3D view once :meth:`install` has the viewer's server).

    Args:
        region: the edit's region (its box in the scene's frame); the controls replace ``region.box``.
        scale: the dataparser's scale (scene units per capture unit), for the size shown in the capture's units.
        typed_now: whether ``--pipeline.region.box`` was typed on this run's command line (it then wins on resume).
    """

    def __init__(self, region: Region, scale: float, typed_now: bool) -> None:
        super().__init__()
        assert region.box is not None
        self.region = [region]  # a list: not a submodule
        self.scale = float(scale)
        self._configured = box_state(region.box)
        self._typed_now = typed_now
        self._gizmo: Optional[Any] = None
        self._mesh: Optional[Any] = None
        self.show = ViewerCheckbox("Show region box", True, cb_hook=lambda element: self._show(bool(element.value)))
        size = tuple(float(s) / self.scale for s in region.box.size.tolist())
        self.size = ViewerVec3("Region box size", size, step=0.01, cb_hook=lambda element: self.resize(element.value))  # type: ignore[arg-type]

    @property
    def box(self) -> Box:
        box = self.region[0].box
        assert box is not None
        return box

    def install(self, server: Any) -> None:
        """Put the gizmo and the box (its child, so they move together) in the viewer's 3D scene."""
        import viser.transforms as tf

        box = self.box
        self._gizmo = server.scene.add_transform_controls(
            "/edit_region", scale=float(box.size.max()) * VISER_NERFSTUDIO_SCALE_RATIO,
            position=tuple(box.centre.numpy() * VISER_NERFSTUDIO_SCALE_RATIO),
            wxyz=tuple(tf.SO3.from_matrix(box.rotation.double().numpy()).wxyz),
        )  # fmt: skip
        self._add_mesh(server)
        self._gizmo.on_update(lambda _: self.moved(np.asarray(self._gizmo.position), np.asarray(self._gizmo.wxyz)))

    def _add_mesh(self, server: Any) -> None:
        self._mesh = server.scene.add_box(
            "/edit_region/box", color=BOX_COLOUR, dimensions=tuple(self.box.size.numpy() * VISER_NERFSTUDIO_SCALE_RATIO),
            visible=bool(self.show.value),
        )  # fmt: skip
        self._server = server

    def _show(self, visible: bool) -> None:
        if self._mesh is not None:
            self._mesh.visible = visible

    def moved(self, position: np.ndarray, wxyz: np.ndarray) -> None:
        """The gizmo's pose (the viewer's frame) as the box's centre and rotation in the scene's frame."""
        import viser.transforms as tf

        centre = torch.tensor(position, dtype=torch.float32) / VISER_NERFSTUDIO_SCALE_RATIO
        rotation = torch.tensor(tf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix(), dtype=torch.float32)
        self._replace(Box(centre, self.box.size, rotation), "moved")

    def resize(self, size_in_capture_units) -> None:
        size = torch.tensor([max(float(s), 1e-6) for s in size_in_capture_units]) * self.scale
        self._replace(Box(self.box.centre, size, self.box.rotation), "resized")
        if self._mesh is not None:
            self._mesh.remove()
            self._add_mesh(self._server)

    def _replace(self, box: Box, how: str) -> None:
        self.region[0].box = box
        CONSOLE.log(f"Region box {how} in the viewer (scene frame): centre {[round(v, 3) for v in box.centre.tolist()]}, size {[round(v, 3) for v in box.size.tolist()]}")

    def values(self) -> Dict[str, List[float]]:
        return box_state(self.box)

    def take(self, state: Dict[str, List[float]]) -> None:
        """Use another process's box (rank 0's, whose viewer a user changed)."""
        if state != self.values():
            self.region[0].box = box_from_state(state)

    def get_extra_state(self) -> Dict[str, Any]:
        return {"box": self.values(), "configured": self._configured}

    def set_extra_state(self, state: Optional[Dict[str, Any]]) -> None:
        """Resume: the box as the viewer left it, unless --pipeline.region.box is typed now."""
        if not state or self._typed_now or state["box"] == state["configured"]:
            return
        self.region[0].box = box_from_state(state["box"])
        self.size.value = tuple(s / self.scale for s in state["box"]["size"])
