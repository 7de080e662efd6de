"""What differs between editing a nerfacto field and editing splatfacto's Gaussians, behind one interface.

The editing pipelines ask the :class:`Representation` of their model config to build the edit model's config
from the source run's, to render a view (with or without gradient), for the default optimizers, and (pnr) for
a fresh initialisation theta_0 and the interpolation between two parameter sets. Two steps differ in kind
and check the representation's type where they happen: pds-refine's reconstruction batch (rays or whole
views) and step count, and pnr's proposal loss (nerfacto only).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar, Dict, Iterator, Mapping, Optional, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.models.nerfacto import NerfactoModelConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from torch import Tensor, nn

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags, merge_typed
from pds_nerfstudio.scenes.models import EditSplatfactoModelConfig
from pds_nerfstudio.scenes.rendering import RenderMode, render_view, render_view_image


class Representation:
    """One kind of scene an edit can start from."""

    name: ClassVar[str]
    source_config: ClassVar[Type[ModelConfig]]
    """The model config of the source runs it edits (subclasses included: nerfacto-big, splatfacto-big, ...)."""
    reported_group: ClassVar[str]
    """The optimizer group whose learning rate the metrics report."""
    region_hold_weight: ClassVar[float]
    """The default weight of a region's hold term (``--pipeline.region.hold-weight``), measured in docs/regions.md."""

    def edit_model_config(self, user: Any, typed: TypedFlags, source: ModelConfig) -> ModelConfig:
        """The edit model's config: the source run's, with the flags the user typed (``typed``, relative to the
        pipeline config ``user``) winning. Raises InputError on flags of the other representation."""
        raise NotImplementedError

    def optimizers(self) -> Dict[str, Dict[str, Any]]:
        """The edit's default optimizers, one entry per parameter group of the edit model."""
        raise NotImplementedError

    def datamanager_settings(self, source: Any) -> Dict[str, Any]:
        """Settings of the edit's datamanager that come from the source run's datamanager config ``source``."""
        return {}

    def render(self, model: Model, camera: Cameras, index: int, mode: RenderMode, chunk_size: int) -> Tensor:
        """Training view ``index`` seen by ``camera``, differentiable: [1, 3, H, W]."""
        raise NotImplementedError

    def render_image(self, model: Model, camera: Cameras, index: int, chunk_size: int) -> Tensor:
        """The same without a graph: [H, W, 3] in [0, 1] on the CPU."""
        raise NotImplementedError

    def interpolate(self, name: str, source: Tensor, fresh: Tensor, eta: float) -> Tensor:
        """(1 - eta) theta_src + eta theta_0 for parameter ``name`` (Alg. 1 of Perturb-and-Revise)."""
        return (1 - eta) * source + eta * fresh

    def fresh_parameters(self, model_config: ModelConfig, pipeline: Any, source: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """theta_0: a fresh initialisation of the edit model (call under a seed)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def same_background(self, *models: Model) -> Iterator[None]:
        """Within this, ``models`` render over one background (renders that are compared pixel by pixel)."""
        yield

    @torch.no_grad()
    def assign(self, model: Model, values: Mapping[str, Tensor]) -> None:
        """Set the model's parameters named in ``values`` to those values."""
        for name, parameter in model.named_parameters():
            if name in values:
                parameter.copy_(values[name].to(parameter))


def new_model_parameters(model_config: ModelConfig, pipeline: Any, **kwargs: Any) -> Dict[str, Tensor]:
    """The parameters of a new model of ``model_config`` for the pipeline's scene, as nerfstudio initialises them."""
    dataset = pipeline.datamanager.train_dataset
    model = model_config.setup(
        scene_box=dataset.scene_box, num_train_data=len(dataset), metadata=dataset.metadata, device=pipeline.device,
        grad_scaler=None, **kwargs,
    )  # fmt: skip
    return {name: p.detach() for name, p in model.named_parameters()}


def _refuse_flags_of(typed: TypedFlags, section: str, kind: str, source: str, own: str) -> None:
    """InputError if flags of ``section`` (``kind``'s settings) were typed for a ``source`` run, whose are ``own``."""
    flags = typed.typed_under(section)
    if flags:
        raise InputError(
            f"{', '.join(flags)} set{'s' if len(flags) == 1 else ''} {kind} settings, but the source is a {source} run: "
            f"use --pipeline.{own}.*"
        )


class Nerfacto(Representation):
    name = "nerfacto"
    source_config = NerfactoModelConfig
    reported_group = "fields"
    region_hold_weight = 1.0

    def edit_model_config(self, user: Any, typed: TypedFlags, source: ModelConfig) -> ModelConfig:
        _refuse_flags_of(typed, "splat_model", "splatfacto", "nerfacto", "model")
        return merge_typed(user.model, source, typed.under("model"))

    def optimizers(self) -> Dict[str, Dict[str, Any]]:
        """Adam on the field and proposal networks, as the official PDS release edits nerfacto."""
        return {
            group: {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, warmup_steps=1000),
            }
            for group in ("proposal_networks", "fields")
        }

    def render(self, model: Model, camera: Cameras, index: int, mode: RenderMode, chunk_size: int) -> Tensor:
        return render_view(model, camera, index, mode, chunk_size)

    def render_image(self, model: Model, camera: Cameras, index: int, chunk_size: int) -> Tensor:
        return render_view_image(model, camera, index, chunk_size)

    def fresh_parameters(self, model_config: ModelConfig, pipeline: Any, source: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """A new model of the same config: what nerfstudio initialises (the released code: a new field instance)."""
        return new_model_parameters(model_config, pipeline)


class Splatfacto(Representation):
    name = "splatfacto"
    source_config = SplatfactoModelConfig
    reported_group = "means"
    region_hold_weight = 10.0

    def edit_model_config(self, user: Any, typed: TypedFlags, source: ModelConfig) -> ModelConfig:
        _refuse_flags_of(typed, "model", "nerfacto", "splatfacto", "splat-model")
        if not isinstance(source, EditSplatfactoModelConfig):  # a splatfacto run: the edit sets its own values of these
            edit = EditSplatfactoModelConfig()
            source = dataclasses.replace(source, **{name: getattr(edit, name) for name in edit.EDIT_SETTINGS})
        return merge_typed(user.splat_model, source, typed.under("splat_model"))

    def datamanager_settings(self, source: Any) -> Dict[str, Any]:
        """splatfacto trained on undistorted images with rewritten intrinsics (its full-image datamanager): the edit
        renders those cameras and compares with those images."""
        return {"images": "undistorted", "cache_images_type": getattr(source, "cache_images_type", "float32")}

    def optimizers(self) -> Dict[str, Dict[str, Any]]:
        """Adam (eps 1e-15) per Gaussian attribute, as the official PDS splat edit (pds_config.py: pds_splat)."""
        rates = {"means": 1.6e-4, "features_dc": 2.5e-3, "features_rest": 1.25e-4, "opacities": 0.05, "scales": 5e-3, "quats": 1e-3}
        return {
            name: {
                "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000) if name == "means" else None,
            }
            for name, lr in rates.items()
        }

    @staticmethod
    def _view_camera(camera: Cameras, index: int) -> Cameras:
        camera = camera[0:1]
        camera.metadata = {**(camera.metadata or {}), "cam_idx": index}  # the source's pose refinement of the view
        return camera

    def render(self, model: Model, camera: Cameras, index: int, mode: RenderMode, chunk_size: int) -> Tensor:
        """splatfacto's own render of the whole view, as the official splat edit takes it (``get_outputs``)."""
        return model.get_outputs(self._view_camera(camera, index))["rgb"].permute(2, 0, 1)[None]

    @torch.no_grad()
    def render_image(self, model: Model, camera: Cameras, index: int, chunk_size: int) -> Tensor:
        """Rendered in evaluation mode: over splatfacto's display background (or the step's shared one) instead of a
        random colour, and without densification bookkeeping. A model in training mode renders training view ``index``
        as its training renders are made (one rule for results, refine's first images and pnr's revise target): with
        the source's pose refinement and, for a source trained with one, bilateral grid of that view, as nerfacto
        renders with the view's appearance embedding."""
        camera = self._view_camera(camera, index)
        training = model.training
        if training:
            camera.camera_to_worlds = model.camera_optimizer.apply_to_camera(camera)  # type: ignore[union-attr]
        model.eval()
        try:
            rgb = model.get_outputs(camera)["rgb"]
            if training and model.config.use_bilateral_grid:  # splatfacto applies it to training renders only
                rgb = model._apply_bilateral_grid(rgb[None], index, *rgb.shape[:2])[0]  # type: ignore[operator]
            return rgb.clamp(0, 1).cpu()
        finally:
            model.train(training)

    def interpolate(self, name: str, source: Tensor, fresh: Tensor, eta: float) -> Tensor:
        """Linear in splatfacto's parameters (log-scales, logit opacities, SH coefficients); means kept (theta_0
        keeps them); rotations along the great circle between the two normalised quaternions (slerp)."""
        if name.endswith("quats"):
            return slerp(F.normalize(source, dim=-1), F.normalize(fresh, dim=-1), eta)
        return super().interpolate(name, source, fresh, eta)

    def fresh_parameters(self, model_config: ModelConfig, pipeline: Any, source: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """theta_0 for these Gaussians: splatfacto's own initialisation of Gaussians at the source's means, without
        seed colours (scales log of the mean distance to the 3 nearest neighbours, random rotations, opacity 0.1,
        random DC colours, zero higher SH bands)."""
        means = source["gauss_params.means"].detach().cpu()
        config = dataclasses.replace(model_config, random_init=False)
        return new_model_parameters(config, pipeline, seed_points=(means, torch.zeros(0, 3)))

    @contextlib.contextmanager
    def same_background(self, *models: Model) -> Iterator[None]:
        """One random colour for all of them (splatfacto draws one per render while training)."""
        background = torch.rand(3)
        for model in models:
            model.fixed_background = background  # type: ignore[assignment]
        try:
            yield
        finally:
            for model in models:
                model.fixed_background = None  # type: ignore[assignment]

    @torch.no_grad()
    def assign(self, model: Model, values: Mapping[str, Tensor]) -> None:
        """New Gaussian parameters (their number may differ from the model's: culling); the optimizers follow
        with :func:`rebind_optimizers`."""
        for group in list(model.gauss_params):  # type: ignore[union-attr]
            name = f"gauss_params.{group}"
            if name in values:
                model.gauss_params[group] = nn.Parameter(values[name].to(model.device).clone())  # type: ignore[index]


def slerp(q0: Tensor, q1: Tensor, t: float) -> Tensor:
    """Spherical interpolation between unit quaternions [N, 4] along the shorter arc (q and -q are one rotation)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    angle = torch.acos(dot)
    sin = torch.sin(angle)
    close = sin < 1e-6
    w0 = torch.where(close, torch.full_like(sin, 1 - t), torch.sin((1 - t) * angle) / torch.where(close, torch.ones_like(sin), sin))
    w1 = torch.where(close, torch.full_like(sin, t), torch.sin(t * angle) / torch.where(close, torch.ones_like(sin), sin))
    return F.normalize(w0 * q0 + w1 * q1, dim=-1)


REPRESENTATIONS = (Nerfacto(), Splatfacto())


def representation_of(model_config: ModelConfig) -> Optional[Representation]:
    """The representation of a source (or edit) run's model config; None for a model no edit supports."""
    return next((r for r in REPRESENTATIONS if isinstance(model_config, r.source_config)), None)


def supported_sources() -> str:
    return " or ".join(f"{r.name} (ns-train {r.name})" for r in REPRESENTATIONS)


def rebind_optimizers(optimizers: Mapping[str, torch.optim.Optimizer], param_groups: Mapping[str, Any]) -> None:
    """Point each optimizer at the model's current parameters of its group, keeping the state it has for them.

    splatfacto's ``load_state_dict`` (nerfstudio >= 1.1) replaces every Gaussian tensor by a new one, after
    the trainer built its optimizers from the old ones: without this, Adam would step tensors the model no
    longer renders with, and the edit would have no effect (Instruct-GS2GS #21, #22, #24).
    """
    for name, optimizer in optimizers.items():
        if name not in param_groups:
            continue
        (group,) = optimizer.param_groups
        current = list(param_groups[name])
        for old, new in zip(group["params"], current):
            if old is not new and old in optimizer.state:
                optimizer.state[new] = optimizer.state.pop(old)
        group["params"] = current
