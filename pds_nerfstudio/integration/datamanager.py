"""Training views for editing: whole frozen source images, their cameras and cached VAE latents."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
import tyro
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager
from torch import Tensor


@dataclass
class EditDataManagerConfig(VanillaDataManagerConfig):
    """The source scene's data, served as whole views for editing."""

    _target: Type = field(default_factory=lambda: EditDataManager)
    change_view_every: int = 10
    """Number of steps a training view is edited before another one is drawn (official: 10)."""
    images: tyro.conf.Suppress[Literal["as-captured", "undistorted"]] = "as-captured"
    """as-captured: the photos and intrinsics as the dataparser gives them (nerfacto's rays model the lens distortion);
    undistorted: as nerfstudio's full-image datamanager serves them to splatfacto, which trained on them (images
    undistorted by OpenCV, fx, fy, cx, cy, width and height rewritten). Set from the source run."""
    cache_images_type: tyro.conf.Suppress[Literal["uint8", "float32"]] = "float32"
    """With undistorted images: the pixel type they are undistorted in (the source's full-image datamanager's)."""


class EditDataManager(VanillaDataManager):
    """nerfstudio's VanillaDataManager plus whole training views for editing.

    Its ray batches (``next_train``) stay as they are, so ``ns-export`` works on edited runs. The
    source images are only ever read from the dataset: each call returns a new tensor, and no
    image file is written.
    """

    config: EditDataManagerConfig

    def __init__(self, *args, **kwargs) -> None:
        self._undistorted: Optional[List[Tensor]] = None  # the source views, undistorted
        self._undistorted_train: List[Tensor] = []  # their training copies, which a refinement replaces
        super().__init__(*args, **kwargs)
        self._source_latents: Dict[Tuple[int, int, int], Tensor] = {}

    def setup_train(self) -> None:
        super().setup_train()
        # Training rays are drawn from one in-memory batch of every training image (a copy of the files'
        # pixels); a refinement replaces images in it, never in the dataset or on disk.
        self._train_batch = next(self.iter_train_image_dataloader)
        self.iter_train_image_dataloader = itertools.repeat(self._train_batch)
        if self.config.images == "undistorted":
            self._undistort_train_views()

    def _undistort_train_views(self) -> None:
        """The training views exactly as splatfacto trained on them: nerfstudio's full-image datamanager's own
        undistortion (``FullImageDatamanager._load_images``), which also rewrites the training cameras' intrinsics
        and sizes. The images are kept in float32 in [0, 1], as splatfacto compares with them."""
        cached = FullImageDatamanager._load_images(self, "train", cache_images_device="gpu")  # type: ignore[arg-type]
        self._undistorted = []
        for data in cached:
            image = data["image"]
            image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            self._undistorted.append(image.to(self.device))
        self._undistorted_train = [image.clone() for image in self._undistorted]

    def _batch_position(self, index: int) -> int:
        (position,) = (self._train_batch["image_idx"] == index).nonzero()[:, 0].tolist()
        return position

    def train_image(self, index: int) -> Tensor:
        """The current training image [H, W, 3] of view ``index`` (what the model's losses compare with)."""
        if self._undistorted is not None:
            return self._undistorted_train[index]
        return self._train_batch["image"][self._batch_position(index)]

    def replace_train_image(self, index: int, image: Tensor) -> None:
        """Replace the in-memory training image of view ``index`` with ``image`` [H, W, 3] in [0, 1]."""
        target = self.train_image(index)
        target.copy_(image.to(target)[..., : target.shape[-1]])

    @property
    def num_train_views(self) -> int:
        return len(self.train_dataset)

    def edit_views(self, step: int, count: int = 1) -> List[int]:
        """Indices of the ``count`` different training views edited at ``step``: new random views every
        ``change_view_every`` steps. The first is the one view a step edits by default; the others are drawn after it
        from the same generator.

        Drawn from the step alone, so a resumed run edits the same sequence of views.
        """
        if not 1 <= count <= self.num_train_views:
            raise ValueError(f"{count} different views of {self.num_train_views}")
        rng = random.Random(step // max(1, self.config.change_view_every))
        first = rng.randrange(self.num_train_views)
        others = rng.sample([index for index in range(self.num_train_views) if index != first], count - 1)
        return [first, *others]

    def next_train_view(self, step: int) -> Tuple[Cameras, Dict[str, Tensor]]:
        """A whole training view and its current image, for models trained on whole views (splatfacto), as
        nerfstudio's full-image datamanager serves them: every view once per epoch, in a random order. Drawn from
        the step alone, so a resumed run trains on the same sequence."""
        epoch, position = divmod(step, self.num_train_views)
        index = random.Random(epoch).sample(range(self.num_train_views), self.num_train_views)[position]
        camera = self.train_camera(index)
        camera.metadata = {**(camera.metadata or {}), "cam_idx": index}
        return camera, {"image": self.train_image(index), "image_idx": index}

    def train_camera(self, index: int) -> Cameras:
        """The training camera of view ``index`` at the data's resolution, on the scene's device."""
        return self.train_dataset.cameras[index : index + 1].to(self.device)

    def source_image(self, index: int, size: Tuple[int, int]) -> Tensor:
        """Source image of view ``index`` as [1, 3, H, W] in [0, 1], bilinearly resized to ``size``."""
        if self._undistorted is not None:
            image = self._undistorted[index]
        else:
            image = self.train_dataset.get_image_float32(index)
        if image.shape[-1] == 4:  # composite RGBA captures over white
            image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:])
        image = image.permute(2, 0, 1)[None]
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        return image.to(self.device)

    @torch.no_grad()
    def source_latent(self, index: int, size: Tuple[int, int], encode: Callable[..., Tensor]) -> Tensor:
        """VAE latent of the source image of view ``index`` at ``size``: encoded once (``encode(images, generator)``,
        the posterior's sample drawn from a generator seeded with the view's index, so every device and every resumed
        run has the same), kept on the CPU."""
        key = (index, *size)
        if key not in self._source_latents:
            generator = torch.Generator().manual_seed(index)
            self._source_latents[key] = encode(self.source_image(index, size), generator).cpu()
        return self._source_latents[key].to(self.device)
