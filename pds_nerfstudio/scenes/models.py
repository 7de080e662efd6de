"""The two edit targets, side by side: nerfacto's field and splatfacto's Gaussians, each as the source run
left it, with the camera poses and per-image appearance frozen."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Literal, Optional, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig
from torch import Tensor
from torch.nn import Parameter

from pds_nerfstudio.scenes.box import Box
from pds_nerfstudio.scenes.splat_cpu import splatfacto_on_cpu
from pds_nerfstudio.scenes.strategies import CullingStrategy, RestartedDensification

ViewerOutputs = Callable[[Cameras, Dict[str, Tensor]], Dict[str, Tensor]]
"""Outputs an edit adds to those of a render for the viewer (its "Output type" list), from the camera and the render."""


class ShowsEditOutputs:
    """An edit model whose renders for a camera (the viewer's, evaluation's) carry the outputs ``viewer_outputs`` adds."""

    viewer_outputs: Optional[ViewerOutputs] = None

    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        outputs = super().get_outputs_for_camera(camera, obb_box=obb_box)  # type: ignore[misc]
        if self.viewer_outputs is not None:
            with torch.no_grad():
                outputs.update(self.viewer_outputs(camera, outputs))
        return outputs


@dataclass
class EditNerfactoModelConfig(NerfactoModelConfig):
    """nerfacto, built from the source run's model config; only its field and proposal networks are edited."""

    _target: Type = field(default_factory=lambda: EditNerfactoModel)
    grid_param_group: bool = False
    """True: the field's hash grid is an optimizer group of its own, ``field_grid``, beside ``fields`` (its MLPs), so
    that the two can have their own rates (pnr's objects protocol with a multi-view prior: the released 0.01 and 0.001).
    tiny-cuda-nn's fused network holds the grid and the MLP in one tensor, which then goes with the grid."""
    source_outside_box: bool = False
    """True (set by an edit with a region box, ``--pipeline.region.freeze-outside``): outside the box the field is the
    source's, a frozen copy kept in the model and its checkpoints, so that the edit changes nothing there (the
    counterpart of splatfacto's frozen Gaussians: the hash grid is shared by all of space, and an edit of the inside
    would otherwise move the outside too). Renders for export and the viewer take the same composite."""


class EditNerfactoModel(ShowsEditOutputs, NerfactoModel):
    """nerfacto whose camera pose refinements and appearance embeddings stay as the source learned them.

    Poses must stay fixed while editing (the official release removes the camera optimizer), and a
    source trained with an appearance embedding renders each view with its own, unchanged embedding.
    """

    config: EditNerfactoModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self.camera_optimizer.requires_grad_(False)
        if self.field.embedding_appearance is not None:
            self.field.embedding_appearance.requires_grad_(False)
        # The source finished annealing its proposal weights; an edit samples with them as they are.
        self.proposal_sampler.set_anneal(1.0)
        if self.config.source_outside_box:
            self.source_field = copy.deepcopy(self.field).requires_grad_(False)
            self.source_proposal_networks = copy.deepcopy(self.proposal_networks).requires_grad_(False)
            self.register_buffer("kept_box", torch.zeros(15))
            """The box (scene frame: centre, size, rotation's 9 entries row by row) outside which the source renders."""
            self._register_load_state_dict_pre_hook(self._source_from_edited)
            # nerfacto's get_outputs calls ``self.field.forward`` directly (no module hooks run): the composite
            # takes the instance's ``forward``; the proposal sampler calls the functions of ``density_fns``
            self.field.forward = self._field_with_source_outside  # type: ignore[method-assign]
            # (partials of bound methods: a deep copy of the model, as FrozenSource makes, gets its own)
            edited = {id(network): i for i, network in enumerate(self.proposal_networks)}
            self.density_fns = [
                functools.partial(self._density_with_source_outside, edited[id(fn.__self__)]) for fn in self.density_fns  # type: ignore[attr-defined]
            ]

    def keep_outside(self, box: Box) -> None:
        """Render the source's field outside ``box`` (scene frame) from now on (the viewer may move the box)."""
        self.kept_box.copy_(torch.cat([box.centre, box.size, box.rotation.flatten()]).to(self.kept_box))

    def _kept_box(self) -> Box:
        values = self.kept_box
        return Box(values[:3], values[3:6], values[6:].reshape(3, 3))

    def _field_with_source_outside(self, ray_samples: RaySamples, compute_normals: bool = False) -> Dict:
        """The field's outputs for each sample whose interval along its ray meets the kept box, the source field's (no
        gradient) for the others.

        By interval, not by the sample's midpoint: a sample stands for its whole interval, and where the samples are
        few the interval that holds a surface inside the box can have its midpoint outside it (the toy world's tiny
        nerfacto, 8 samples a ray: no midpoint of any ray fell inside a box round its ball, and the edit changed
        nothing). A ray that misses the box still takes every sample from the source, and the edited field is evaluated
        only on the rays that meet it (most of a view's when the box is small: their forward and backward passes are
        the edit's cost)."""
        frustums = ray_samples.frustums
        near, far = self._kept_box().span(frustums.origins, frustums.directions)
        inside = (frustums.starts[..., 0] <= far) & (frustums.ends[..., 0] >= near) & (far >= near)
        with torch.no_grad():
            outputs = type(self.source_field).forward(self.source_field, ray_samples, compute_normals=compute_normals)
        rays = _rays_to_edit(inside)
        edited = type(self.field).forward(self.field, ray_samples[rays], compute_normals=compute_normals)
        for head, values in edited.items():
            outputs[head] = _compose(outputs[head], rays, inside[rays], values)
        return outputs

    def _density_with_source_outside(self, index: int, positions: Tensor, times: Optional[Tensor] = None) -> Tensor:
        """Proposal network ``index``'s density where a position lies inside the kept box, its source copy's elsewhere:
        rays that miss the box are sampled exactly as the source samples them."""
        with torch.no_grad():
            density = self.source_proposal_networks[index].density_fn(positions, times)
        inside = self._kept_box().contains(positions)
        rays = _rays_to_edit(inside)
        edited = self.proposal_networks[index].density_fn(positions[rays], None if times is None else times[rays])
        return _compose(density, rays, inside[rays], edited)

    def _source_from_edited(self, state_dict: Dict, prefix: str, *args) -> None:
        """A source run's checkpoint has no source copies: they are its field and proposal networks."""
        for part in ("field.", "proposal_networks."):
            for key in [key for key in state_dict if key.startswith(prefix + part)]:
                state_dict.setdefault(prefix + "source_" + key[len(prefix):], state_dict[key])
        state_dict.setdefault(prefix + "kept_box", self.kept_box)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """nerfacto's callbacks less the proposal-weight annealing, which would restart sampling from uniform
        at step 0 of every edit; the proposal networks' update schedule stays."""
        callbacks = super().get_training_callbacks(training_callback_attributes)
        return [callback for callback in callbacks if callback.func == self.proposal_sampler.step_cb]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        trained = [p for p in self.field.parameters() if p.requires_grad]
        groups = {"proposal_networks": list(self.proposal_networks.parameters()), "fields": trained}
        if self.config.grid_param_group:
            grid = {id(p) for module in self.field.modules() if holds_hash_grid(module) for p in module.parameters()}
            groups["fields"] = [p for p in trained if id(p) not in grid]
            groups["field_grid"] = [p for p in trained if id(p) in grid]
        return groups


def _rays_to_edit(inside: Tensor) -> Tensor:
    """[R] bool: the rays with a sample ``inside`` [R, S] the box, where the edited field is evaluated; the first ray
    when none is, so that a batch that misses the box still has a graph through the edited field (its gradient
    zero), as a step's loss needs."""
    rays = inside.reshape(len(inside), -1).any(-1)
    if not rays.any():
        rays[:1] = True
    return rays


def _compose(source: Tensor, rays: Tensor, inside: Tensor, edited: Tensor) -> Tensor:
    """``source`` [R, S, C] with the samples ``inside`` [R', S] of the rays ``rays`` [R] (bool) taken from ``edited``
    [R', S, C], the field's outputs on those rays only."""
    composite = source.clone()
    composite[rays] = torch.where(inside[..., None], edited, source[rays])
    return composite


def holds_hash_grid(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a hash grid encoding, or tiny-cuda-nn's network fused with one (one tensor for both)."""
    return isinstance(module, HashEncoding) or type(module).__name__ == "NetworkWithInputEncoding"


@dataclass
class EditSplatfactoModelConfig(SplatfactoModelConfig):
    """splatfacto, built from the source run's model config; only its Gaussians are edited.

    Settings that differ from splatfacto's for an edit, whatever the source used (the official release's):"""

    _target: Type = field(default_factory=lambda: EditSplatfactoModel)
    num_downscales: int = 0
    """Views at full resolution from the first step (official: 0; splatfacto starts at 1/4)."""
    densification: Literal["cull", "splatfacto"] = "cull"
    """cull: no splitting, duplication or opacity reset; culling every --refine-every steps (the official release,
    whose edit steps continue past the source's stop-split-at). splatfacto: splatfacto's own schedule restarted at the
    edit's step 0: splitting, duplication and culling every --refine-every steps from --warmup-length until
    --stop-split-at, and every --reset-alpha-every x --refine-every steps (3000) an opacity reset to twice
    --cull-alpha-thresh; not at step 0, where it would reset the finished source scene."""
    full_sh_degree: bool = True
    """Render with all --sh-degree bands from the first step (the source finished splatfacto's schedule); False: the
    degree restarts at 0 and grows every --sh-degree-interval steps."""

    cull_alpha_thresh: float = 0.1
    """Gaussians with a lower opacity are culled (official edit: 0.1, whatever the source used; splatfacto-big: 0.005)."""
    cull_scale_thresh: float = 0.5
    """Gaussians whose largest scale exceeds this (x scene scale) are culled (official edit: 0.5)."""

    EDIT_SETTINGS = ("num_downscales", "cull_alpha_thresh", "cull_scale_thresh")
    """Fields of splatfacto's config that an edit sets itself instead of taking the source run's value."""


class EditSplatfactoModel(ShowsEditOutputs, SplatfactoModel):
    """splatfacto whose camera pose refinements and bilateral grids stay as the source learned them.

    Runs on a CPU too (tests, CI): there splatfacto's own code runs with a torch rasteriser of gsplat's math
    (:mod:`pds_nerfstudio.scenes.splat_cpu`).
    """

    config: EditSplatfactoModelConfig

    def populate_modules(self) -> None:
        with self._cpu_if_no_cuda(torch.cuda.is_available()):
            super().populate_modules()
        self.camera_optimizer.requires_grad_(False)
        if self.config.use_bilateral_grid:
            self.bil_grids.requires_grad_(False)
        if self.config.densification == "cull":
            self.strategy = CullingStrategy(self.config.cull_alpha_thresh, self.config.cull_scale_thresh, self.config.refine_every)
        else:  # splatfacto's own strategy and settings, without the reset at step 0
            self.strategy = RestartedDensification(**{f.name: getattr(self.strategy, f.name) for f in dataclasses.fields(self.strategy)})
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}  # the trainer's, from the first step on
        self.fixed_background: Optional[Tensor] = None
        self._edit_step: Optional[int] = None

    @staticmethod
    def _cpu_if_no_cuda(has_cuda: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if has_cuda else splatfacto_on_cpu()

    @contextlib.contextmanager
    def _sh_degree_step(self) -> Iterator[None]:
        """splatfacto picks the SH degree from ``self.step``; with ``full_sh_degree`` it sees a step past its schedule
        while it renders (nerfstudio renders for the viewer and trains under one lock, so no other render sees it)."""
        step = self.step
        if self.config.full_sh_degree:
            self.step = max(step, self.config.sh_degree * self.config.sh_degree_interval)
        self._edit_step = step
        try:
            yield
        finally:
            self.step, self._edit_step = step, None

    def get_outputs(self, camera):  # type: ignore[override]
        with self._cpu_if_no_cuda(self.device.type == "cuda"), self._sh_degree_step():
            return super().get_outputs(camera)

    def _get_downscale_factor(self) -> int:
        """splatfacto's, on the edit's own step (the render's raised step is for the SH degree only), so a render and
        the image it is compared with (get_loss_dict) are downscaled alike."""
        raised = self.step
        self.step = self._edit_step if self._edit_step is not None else raised
        try:
            return super()._get_downscale_factor()
        finally:
            self.step = raised

    def _get_background_color(self) -> Tensor:
        """splatfacto's (random while training), unless a step fixed one for the renders it compares."""
        if self.fixed_background is not None:
            return self.fixed_background.to(self.device)
        return super()._get_background_color()

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return self.get_gaussian_param_groups()
