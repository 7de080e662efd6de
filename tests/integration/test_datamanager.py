"""The edit's training views: for splatfacto sources, exactly the undistorted images and cameras splatfacto trained on."""

from __future__ import annotations

import torch
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from pds_nerfstudio.integration.datamanager import EditDataManagerConfig
from pds_nerfstudio.scenes.representations import Splatfacto
from toy_world.runs import make_synthetic_scene

INTRINSICS = ("fx", "fy", "cx", "cy", "width", "height")


def test_a_splat_edit_serves_the_undistorted_views_and_cameras_splatfacto_trained_on(tmp_path):
    scene = make_synthetic_scene(tmp_path / "distorted", k1=-0.15)
    splatfacto = FullImageDatamanagerConfig(dataparser=NerfstudioDataParserConfig(data=scene), cache_images_type="uint8")
    trained = splatfacto.setup(device="cpu")
    trained_images = [data["image"].float() / 255.0 for data in trained.cached_train]  # what splatfacto compares with
    settings = Splatfacto().datamanager_settings(splatfacto)
    assert settings == {"images": "undistorted", "cache_images_type": "uint8"}
    edit = EditDataManagerConfig(dataparser=NerfstudioDataParserConfig(data=scene), **settings).setup(device="cpu")
    as_captured = EditDataManagerConfig(dataparser=NerfstudioDataParserConfig(data=scene)).setup(device="cpu")
    assert edit.num_train_views == len(trained_images) == 9
    for index, image in enumerate(trained_images):
        camera, trained_camera = edit.train_camera(index), trained.train_dataset.cameras[index : index + 1]
        for name in INTRINSICS:
            assert torch.equal(getattr(camera, name), getattr(trained_camera, name)), (index, name)
        assert torch.equal(edit.train_image(index), image)
        assert torch.equal(edit.source_image(index, tuple(image.shape[:2]))[0].permute(1, 2, 0), image)
        # the raw photo and its original intrinsics are what the edit used before: not splatfacto's
        assert not torch.equal(as_captured.train_camera(index).fx, camera.fx)
        assert as_captured.train_image(index).shape != image.shape or not torch.equal(as_captured.train_image(index), image)
    # a refinement replaces the training image, never the source view
    edit.replace_train_image(0, torch.zeros_like(trained_images[0]))
    assert edit.train_image(0).abs().sum() == 0 and torch.equal(edit.source_image(0, tuple(trained_images[0].shape[:2]))[0].permute(1, 2, 0), trained_images[0])
