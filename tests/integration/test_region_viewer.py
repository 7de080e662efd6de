"""The region's box in the viewer: a viser server of its own, the gizmo moved by the message a browser sends when the
user drags it, the box the next step uses read back from the region, and the box kept in the checkpoint's state."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch

from pds_nerfstudio.integration.region_viewer import RegionBoxControls
from pds_nerfstudio.regions.region import Region, RegionConfig
from pds_nerfstudio.scenes.box import Box


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def region_with_box(flag=(0.2, 0.0, 0.1, 0.4, 0.4, 0.4), scale: float = 0.5) -> Region:
    transform = torch.eye(4)[:3]
    box = Box.from_flag(flag).in_scene_frame(transform, scale)
    return Region(RegionConfig(box=tuple(flag)), box, None, cameras=None)  # type: ignore[arg-type]


@pytest.fixture
def server():
    import viser

    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    yield server
    server.stop()


def test_dragging_the_gizmo_moves_and_turns_the_box_the_next_step_uses(server):
    from viser._messages import TransformControlsUpdateMessage

    region = region_with_box()
    controls = RegionBoxControls(region, scale=0.5, typed_now=False)
    controls.install(server)
    # the gizmo starts at the box, in the viewer's frame (nerfstudio's scene x 10)
    assert np.allclose(controls._gizmo.position, [1.0, 0.0, 0.5])
    turn = (math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4))  # 90 degrees about z, wxyz
    server.scene._handle_transform_controls_updates(0, TransformControlsUpdateMessage("/edit_region", turn, (3.0, -1.0, 0.5)))
    assert torch.allclose(region.box.centre, torch.tensor([0.3, -0.1, 0.05]))
    assert torch.allclose(region.box.rotation @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    assert torch.allclose(region.box.size, torch.tensor([0.2, 0.2, 0.2]))
    assert region.contains(torch.tensor([[0.3, -0.1, 0.05], [0.1, 0.0, 0.05]])).tolist() == [True, False]
    # the size, typed in the capture's units, becomes the scene's
    controls.size.value = (1.0, 0.4, 0.4)
    controls.resize(controls.size.value)
    assert torch.allclose(region.box.size, torch.tensor([0.5, 0.2, 0.2]))
    controls.show.value = False
    controls._show(False)
    assert controls._mesh.visible is False


def test_the_moved_box_is_kept_on_resume_unless_typed_again():
    region = region_with_box()
    controls = RegionBoxControls(region, scale=0.5, typed_now=False)
    controls.moved(np.array([3.0, -1.0, 0.5]), np.array([1.0, 0.0, 0.0, 0.0]))
    saved = controls.get_extra_state()

    resumed = region_with_box()
    RegionBoxControls(resumed, scale=0.5, typed_now=False).set_extra_state(saved)
    assert torch.allclose(resumed.box.centre, torch.tensor([0.3, -0.1, 0.05]))

    typed = region_with_box()
    RegionBoxControls(typed, scale=0.5, typed_now=True).set_extra_state(saved)
    assert torch.allclose(typed.box.centre, torch.tensor([0.1, 0.0, 0.05]))
