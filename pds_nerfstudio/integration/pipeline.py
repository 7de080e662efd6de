"""Editing pipelines: a source run's scene (nerfacto field or splatfacto Gaussians), edited with Stable Diffusion guidance.

``EditPipeline`` holds what every editing method shares: adopting the source run named by
``--load-dir``, the frozen source views, the lazily loaded guidance model, and the renders of every
training view written at the end. ``PDSPipeline`` adds the score-distillation step (PDS by default).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import torch
import tyro
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import colormaps, writer
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import track
from torch import Tensor

from pds_nerfstudio.common.checkpoints import allow_nerfstudio_checkpoints, load_checkpoint
from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags, merge_typed
from pds_nerfstudio.integration import outputs
from pds_nerfstudio.integration.datamanager import EditDataManager, EditDataManagerConfig
from pds_nerfstudio.integration.region_viewer import REGION_OUTPUT, RegionBoxControls, RegionOverlay
from pds_nerfstudio.integration.source_run import Run
from pds_nerfstudio.integration.viewer_controls import EditControls
from pds_nerfstudio.parallel import collectives
from pds_nerfstudio.priors.guidance import GuidanceConfig, StableDiffusionGuidance
from pds_nerfstudio.regions.region import Region, RegionConfig
from pds_nerfstudio.scenes.box import Box
from pds_nerfstudio.scenes.frozen_source import FrozenSource
from pds_nerfstudio.scenes.models import EditNerfactoModelConfig, EditSplatfactoModelConfig
from pds_nerfstudio.scenes.rendering import RenderMode, guidance_camera, seeded
from pds_nerfstudio.scenes.representations import (
    Representation,
    rebind_optimizers,
    representation_of,
    supported_sources,
)

RENDERS_DIR = "renders"
RENDER_SEED_OFFSET = 1 << 62
"""Added to a view's seed for its render's samples, so that they are not the same stream as its noises."""


@dataclass
class EditPipelineConfig(VanillaPipelineConfig):
    """What every editing method shares: the source run, the prompts and the guidance model.

    The ``--load-dir`` hooks. :meth:`EditTrainerConfig.resolve_source <pds_nerfstudio.integration.trainer.
    EditTrainerConfig.resolve_source>` (``ns-train`` calls it from ``set_timestamp``, before anything heavy) completes
    this config from the run that ``--load-dir`` names, calling, in this order:

    1. :meth:`accepts_source` on each saved run found (:attr:`source_description` names what it looks for in errors);
       a run of the edit's own method is resumed instead.
    2. A new edit: :meth:`with_source` takes the source's data, dataparser, model architecture and checkpoint, then
       :meth:`default_max_num_iterations`. A resumed edit: :meth:`resumed_from` takes the run's own config back, then
       :meth:`resumed_max_num_iterations`.
    3. :meth:`with_typed_controls`: which of the viewer's values were typed now (they win over the viewer on resume).
    4. :meth:`check_flags`: the flags typed, against the resolved config.
    5. :meth:`check` and :meth:`check_parallel`: cheap checks of the resolved config (device, views, prompts).

    ``typed`` is what was typed under ``--pipeline`` (:class:`~pds_nerfstudio.common.typed_flags.TypedFlags`, read from
    the command line): a typed value wins over the source's and the resumed run's, also when it repeats the default.
    A method overrides the hooks it needs and calls ``super()`` (``pds-refine``: :meth:`with_source`; ``pnr``:
    :meth:`check_flags`, :meth:`resumed_from`, and ``with_protocol`` before all of these). Each hook raises
    :class:`~pds_nerfstudio.common.errors.InputError` with a one-line message on bad input.
    """

    _target: Type = field(default_factory=lambda: EditPipeline)
    datamanager: EditDataManagerConfig = field(default_factory=EditDataManagerConfig)
    """The source scene's data; its dataparser and data path come from the source run."""
    model: EditNerfactoModelConfig = field(default_factory=EditNerfactoModelConfig)
    """The edited scene. From a nerfacto source: its architecture (hash sizes, samples, ...) comes from the source run's
    config, and these flags override it. From a splatfacto source it becomes the splat-model settings below."""
    splat_model: EditSplatfactoModelConfig = field(default_factory=EditSplatfactoModelConfig)
    """The edited Gaussians, when the source is a splatfacto run: the source's settings, with the edit's own defaults
    below (full resolution, all SH bands, culling without densification); these flags override them."""
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    """The Stable Diffusion guidance."""
    region: RegionConfig = RegionConfig()
    """Where the edit may change the scene (a box, masks); everywhere when neither is given. (A plain default: runs
    saved before regions load without the field.)"""
    source_checkpoint: Optional[Path] = None
    """Checkpoint of the source run; filled in from --load-dir."""
    src_prompt: str = ""
    """Text describing the source scene, e.g. 'a photo of a bear' (may be empty)."""
    tgt_prompt: str = ""
    """Text describing the edited scene, e.g. 'a photo of a polar bear' (required)."""
    render_resolution: int = 512
    """Short side, in pixels, of the views rendered for guidance (official: 512)."""
    render_mode: RenderMode = "chunked"
    """nerfacto: chunked keeps render memory independent of the view size; full-graph: one autograd graph per view.
    (splatfacto renders whole views.)"""
    ray_chunk_size: int = 4096
    """nerfacto: rays rendered at once in chunked mode."""
    views_per_step: int = 1
    """Training views each step guides, on each device: drawn like the first (each held for change-view-every steps,
    all different), rendered one at a time, their latents guided in one batched UNet call. The gradient is the mean
    over the views (each weighs 1/N: the released PnR code's 0.5 * sum / N reduction; the PDS release guides one), so
    a step moves the scene as far as one view would, on less noise. With K devices each takes its own N views and the
    gradients are averaged: the update of one device guiding N*K views. (official pds: 1)"""
    steps_per_log_image: int = 200
    """Steps between images sent to the writer (source | current render | gradient magnitude)."""
    num_compare_views: int = 4
    """Views in the source | edited grid saved at the end (renders/compare.png)."""
    result_views: int = 16
    """Training views rendered into renders/ at the end (evenly spaced along the turntable); 0: every view."""
    result_resolution: int = 256
    """Short side of the renders saved at the end, at most the data's; 0: the data's resolution."""
    optimizer_state: Literal["source", "fresh"] = "source"
    """source: Adam continues with the source run's moments and step counts where its parameter groups match
    the edit's, as in the official release (which starts through --load-dir); fresh (or a source trained with
    an appearance embedding, which the edit freezes): Adam starts at step 0. Learning-rate schedules restart."""

    typed_controls: tyro.conf.Suppress[Tuple[str, ...]] = ()
    """The viewer-controlled values (tgt_prompt, guidance_scale, ratio_range, region_box) typed on the command line that started or
    resumed this run; filled in from it. On resume they win over what the viewer changed."""

    source_description: ClassVar[str] = f"a {supported_sources()} run"
    """What --load-dir must name, for error messages."""

    @property
    def ratio_control(self) -> Tuple[str, str]:
        """What the viewer's two range sliders are called, and the config field they start from."""
        return "t ratio", "guidance.t_ratio_range"

    def with_typed_controls(self, typed: TypedFlags) -> "EditPipelineConfig":
        """This config, recording which of the viewer's values were typed now (``typed``, relative to it)."""
        paths = {
            "tgt_prompt": "tgt_prompt", "guidance_scale": "guidance.guidance_scale", "ratio_range": self.ratio_control[1],
            "region_box": "region.box",
        }  # fmt: skip
        return dataclasses.replace(self, typed_controls=tuple(name for name, path in paths.items() if path in typed))

    def accepts_source(self, config: TrainerConfig) -> bool:
        """Whether a run with this saved config can be the source of an edit."""
        return is_source_run(config)

    def with_source(self, run: Run, typed: TypedFlags) -> "EditPipelineConfig":
        """This config completed from a source run: its data, dataparser, model architecture and checkpoint.

        Model flags the user typed (``typed``, relative to this config) win over the source's values.
        """
        source = run.config.pipeline
        data = self.datamanager.data or source.datamanager.data or source.datamanager.dataparser.data
        dataparser = copy.deepcopy(source.datamanager.dataparser)
        dataparser.data = data
        representation = self.source_representation(source.model)
        datamanager = dataclasses.replace(
            self.datamanager, data=data, dataparser=dataparser, **representation.datamanager_settings(source.datamanager)
        )
        model = representation.edit_model_config(self, typed, source.model)
        if self.region.box is not None and self.region.freeze_outside and isinstance(model, EditNerfactoModelConfig):
            model = dataclasses.replace(model, source_outside_box=True)  # nerfacto's field outside the box: the source's
        return dataclasses.replace(self, datamanager=datamanager, model=model, source_checkpoint=run.checkpoint)

    @staticmethod
    def source_representation(model: Any) -> Representation:
        representation = representation_of(model)
        if representation is None:
            raise InputError(f"cannot edit a {type(model).__name__} scene; edits start from a {supported_sources()} run")
        return representation

    @property
    def representation(self) -> Representation:
        """What the edited scene is (nerfacto or splatfacto), from the resolved model config."""
        return self.source_representation(self.model)

    def default_optimizers(self) -> Dict[str, Dict[str, Any]]:
        """The optimizer groups a new edit of the resolved scene starts with, before ``--optimizers.*`` flags."""
        return self.representation.optimizers()

    def resumed_from(self, run: Run, typed: TypedFlags) -> "EditPipelineConfig":
        """The config of an edit run being resumed, except for the flags the user typed now (``typed``, relative to
        this config)."""
        merged = merge_typed(self, run.config.pipeline, typed)
        merged.model = self.source_representation(run.config.pipeline.model).edit_model_config(self, typed, run.config.pipeline.model)
        if self.datamanager.data is not None:  # --data given now: the data moved
            merged.datamanager.data = merged.datamanager.dataparser.data = self.datamanager.data
        return merged

    def check_flags(self, typed: TypedFlags) -> None:
        """Checks of the flags typed (relative to this config) against the resolved config; raises InputError."""

    def resumed_max_num_iterations(self, run: Run) -> Optional[int]:
        """The total number of steps of a resumed run when --max-num-iterations is not typed: the run's."""
        return run.config.max_num_iterations

    def default_max_num_iterations(self, method_default: Optional[int]) -> Optional[int]:
        """The edit's number of steps when --max-num-iterations is not given (a method may differ per representation)."""
        return method_default

    def check(self, scene_device: str) -> None:
        """Cheap checks of the resolved config, before any heavy work; raises InputError."""
        if not self.tgt_prompt.strip():
            raise InputError('the target prompt is empty: pass --pipeline.tgt-prompt "a photo of a polar bear" (what the edit should show)')
        data = self.datamanager.data
        if data is None or not Path(data).exists():
            raise InputError(f"the source run's data {data} does not exist; if it moved, pass its new location with --data PATH")
        if self.render_resolution <= 0 or self.ray_chunk_size <= 0:
            raise InputError("--pipeline.render-resolution and --pipeline.ray-chunk-size must be positive")
        if self.views_per_step <= 0:
            raise InputError(f"--pipeline.views-per-step {self.views_per_step}: need 1 or more views a step (official pds: 1)")
        if self.datamanager.change_view_every <= 0:
            raise InputError(
                f"--pipeline.datamanager.change-view-every {self.datamanager.change_view_every}: need a positive "
                "number of steps (official: 10)"
            )
        if self.result_views < 0 or self.result_resolution < 0:
            raise InputError("--pipeline.result-views and --pipeline.result-resolution must be 0 (all, full size) or more")
        self.guidance_config().check(scene_device)
        if self.region.given:
            self.check_region()

    def guidance_config(self) -> Any:
        """The config of the guidance the edit's steps use (``--pipeline.guidance``; pnr builds a multi-view prior's from
        it)."""
        return self.guidance

    def check_region(self) -> None:
        """A region's one-line errors, from the dataparser's outputs (the capture's cameras and images) alone."""
        outputs = self.datamanager.dataparser.setup().get_dataparser_outputs(split="train")
        self.region.check(outputs.image_filenames, outputs.cameras, outputs.dataparser_transform, outputs.dataparser_scale)

    def guides_training_views(self) -> bool:
        """Whether a step's views are the capture's training views (with a multi-view prior they are orbit views drawn
        round the object, as many as asked)."""
        return True

    def check_parallel(self, devices: int) -> None:
        """What several views a step or several devices (``devices`` processes) need, before anything heavy; raises
        InputError: no more views a step than the scene has training views (the dataparser alone counts them), and
        no splatfacto densification on several devices (its screen-space statistics are each device's own, so the
        devices' Gaussians would part)."""
        if devices > 1 and self.guidance.device:
            raise InputError(
                f"--pipeline.guidance.device {self.guidance.device} with {devices} devices: each process's diffusion model "
                "lives on that process's own GPU; leave --pipeline.guidance.device unset"
            )
        if devices > 1 and getattr(self.model, "densification", "cull") != "cull":
            raise InputError(
                f"--pipeline.splat-model.densification {self.model.densification} splits Gaussians by each device's own "
                "screen-space gradients, so the devices' scenes would differ; edit on several devices with the "
                "default cull (the official splat edit's), or on one device"
            )
        wanted = self.views_per_step * devices
        if wanted == 1 or not self.guides_training_views():
            return
        available = len(self.datamanager.dataparser.setup().get_dataparser_outputs(split="train").image_filenames)
        if wanted > available:
            on_devices = f" on each of {devices} devices" if devices > 1 else ""
            raise InputError(
                f"--pipeline.views-per-step {self.views_per_step}{on_devices} asks for {wanted} different views a step; "
                f"the scene has {available} training views"
            )


def is_edit_run(config: TrainerConfig) -> bool:
    """An edit (pds, pds-refine, pnr, ...): its pipeline is an editing pipeline."""
    return isinstance(config.pipeline, EditPipelineConfig)


def is_source_run(config: TrainerConfig) -> bool:
    """An unedited scene that edits start from: a nerfacto or splatfacto run that is not itself an edit."""
    return representation_of(config.pipeline.model) is not None and not is_edit_run(config)


def _state_fits(optimizer: torch.optim.Optimizer, saved: Optional[Dict[str, Any]]) -> bool:
    """Whether a saved optimizer state dict holds state for exactly ``optimizer``'s parameters, in order."""
    if not saved or len(saved["param_groups"]) != len(optimizer.param_groups):
        return False
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in saved["param_groups"] for i in group["params"]]
    if len(saved_ids) != len(params):
        return False
    for position, param in zip(saved_ids, params):
        moment = saved["state"].get(position, {}).get("exp_avg")
        if moment is None or moment.shape != param.shape:
            return False
    return True


class EditPipeline(VanillaPipeline):
    """The source run's scene, ready to edit: source field loaded, source views frozen, guidance on demand."""

    config: EditPipelineConfig
    datamanager: EditDataManager

    def __init__(
        self,
        config: EditPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[Any] = None,
    ) -> None:
        # Every way a run is opened (training, resume, ns-export/render/viewer) builds this pipeline first.
        allow_nerfstudio_checkpoints()
        # No DistributedDataParallel wrapper (world size 1 below): the edit renders through the model directly, so
        # DDP would not see the forward; the trainer's optimizers average the gradients over the ranks instead.
        super().__init__(config, device, test_mode, 1, local_rank, grad_scaler)
        self.world_size, self.rank = collectives.world_size(), collectives.rank()
        if self.world_size > 1 and torch.device(device).type == "cuda":
            torch.cuda.set_device(torch.device(device))  # NCCL's object collectives use the current device
        self.noise_seed = 42
        """Seeds every view's noise with the step (the trainer sets it to --machine.seed)."""
        self.representation: Representation = config.representation
        self.guidance: StableDiffusionGuidance = config.guidance_config().setup(device=device)
        range_name, ratio_path = config.ratio_control
        ratio_range = operator.attrgetter(ratio_path)(config)
        self.controls = EditControls(
            config.tgt_prompt, config.guidance.guidance_scale, range_name, ratio_range, on_pause=self._pause_editing,
            typed_now=config.typed_controls,
        )
        self._trainer: Optional[Any] = None
        self._source_optimizers: Optional[Dict[str, Any]] = None
        self._values_in_use: Optional[Dict[str, Any]] = None
        self.method_name = "edit"
        self.region: Optional[Region] = None
        self.region_controls: Optional[RegionBoxControls] = None
        """The region's box in the viewer (a gizmo, its size, a checkbox); kept in checkpoints."""
        self.region_source: Optional[FrozenSource] = None
        """The source scene, frozen, that the region's hold term compares each edited view with."""
        self.region_masks_in_use: Optional[Tensor] = None
        """The [N, 1, H, W] masks the last step applied to its views' gradient (read back by tests)."""
        self.movable_gaussians: Optional[Tensor] = None
        """splatfacto with a region: which Gaussians the last step let its optimizers move."""
        # Training ("val") starts from the source field; evaluation and export load the edit's own checkpoint.
        if test_mode == "val" and config.source_checkpoint is not None:
            self.load_source(config.source_checkpoint)
            if config.region.given:
                self.setup_region()

    @property
    def views_in_step(self) -> int:
        """Views a step guides on all devices together."""
        return self.config.views_per_step * self.world_size

    def device_views(self, views: List[int]) -> List[int]:
        """This device's share of a step's views (all devices' views, in order)."""
        count = self.config.views_per_step
        return views[self.rank * count : (self.rank + 1) * count]

    def step_views(self, step: int) -> List[int]:
        """The training views this device guides at ``step``."""
        return self.device_views(self.datamanager.edit_views(step, self.views_in_step))

    def view_seeds(self, step: int) -> List[int]:
        """A seed for each of this device's views at ``step``, from the step and the view's place among the step's views
        on all devices: what a view draws (its render's samples, its timestep and noises) does not depend on how the
        views are spread over devices or batched, and a resumed run draws what the stopped one would have."""
        first = self.rank * self.config.views_per_step
        return [((self.noise_seed * 1_000_003 + step) * 4096 + first + j) % 2**62 for j in range(self.config.views_per_step)]

    def view_generators(self, step: int) -> List[torch.Generator]:
        """One random generator for each of this device's views at ``step`` (timesteps, noises): see :meth:`view_seeds`."""
        return [torch.Generator().manual_seed(seed) for seed in self.view_seeds(step)]

    def share_controls(self) -> None:
        """With several devices: every rank takes rank 0's viewer values (only rank 0 serves the viewer)."""
        if self.world_size > 1:
            self.controls.take(collectives.broadcast(self.controls.values()))
            if self.region_controls is not None:
                self.region_controls.take(collectives.broadcast(self.region_controls.values()))

    def _pause_editing(self, paused: bool) -> None:
        if self._trainer is not None:
            self._trainer.training_state = "paused" if paused else "training"
            CONSOLE.log("Editing paused in the viewer" if paused else "Editing resumed in the viewer")

    def use_values(self, step: int, **values: Any) -> Dict[str, Any]:
        """Record the values this step hands to the guidance and return them; each time they change (the
        first step, a viewer change, a resume) they are printed on one console line."""
        if values != self._values_in_use:
            text = ", ".join(f"{name.replace('_', ' ')} {value!r}" for name, value in values.items())
            CONSOLE.print(f"Step {step} uses: {text}", soft_wrap=True, highlight=False, markup=False)
            self._values_in_use = values
        return values

    def continue_source_optimizers(self, optimizers: Optimizers) -> None:
        """Give the edit's Adam the source run's moments and step counts, where its parameter groups match."""
        saved = self._source_optimizers or {}
        unmatched = [name for name, optimizer in optimizers.optimizers.items() if not _state_fits(optimizer, saved.get(name))]
        if unmatched:
            CONSOLE.log(
                f"Adam starts fresh: the source's optimizer state does not fit the edit's parameter groups {unmatched} "
                "(a source trained with an appearance embedding, which the edit freezes, has other parameters)"
            )
            return
        for name, optimizer in optimizers.optimizers.items():
            # The source's moments and step counts; the edit's own hyperparameters (learning rate, eps).
            optimizer.load_state_dict({"state": saved[name]["state"], "param_groups": optimizer.state_dict()["param_groups"]})
        steps = [int(state["step"]) for opt in optimizers.optimizers.values() for state in opt.state.values() if "step" in state]
        CONSOLE.log(f"Adam continues from the source run's state (its step count {max(steps, default=0)})")

    def report(self, step: int, metrics: Dict[str, Any]) -> None:
        """Show the step's diagnostics in the viewer's status line."""
        def fmt(value: Any) -> str:
            value = value.item() if isinstance(value, Tensor) else value
            return f"{value:.4g}" if isinstance(value, float) else str(value)

        details = " | ".join(f"{name.removeprefix('guidance_')} {fmt(value)}" for name, value in metrics.items())
        self.controls.show_status(f"{self.method_name} | step {step} | {details}")

    def load_source(self, checkpoint: Path) -> None:
        """Load the source run's field (all model weights) from its checkpoint.

        Only the model: nothing else of the source's pipeline state (another edit's viewer controls, a
        refinement's images) reaches a new edit.
        """
        saved = load_checkpoint(checkpoint)
        if self.config.optimizer_state == "source":
            self._source_optimizers = saved.get("optimizers")
        state = {key: value for key, value in saved["pipeline"].items() if key.startswith("_model.")}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise InputError(
                f"the source checkpoint {checkpoint} does not fit the model config (were model flags changed?): "
                f"{str(error).splitlines()[0]}"
            ) from None
        CONSOLE.log(f"Loaded the source scene from {checkpoint}")

    holds_outside: ClassVar[bool] = False
    """Whether the method's steps hold the outside of the region to the source's render (:meth:`limit_to_region`)."""

    def setup_region(self) -> None:
        """The region in the scene's frame, and (for the hold term) a frozen copy of the source scene."""
        outputs = self.datamanager.train_dataparser_outputs
        self.region = self.config.region.setup(
            outputs.image_filenames, self.datamanager.train_dataset.cameras, outputs.dataparser_transform, outputs.dataparser_scale
        )
        weight = self.config.region.hold_weight
        self.region_hold_weight = self.representation.region_hold_weight if weight is None else weight
        """The hold term's weight: the one typed, or the representation's default."""
        if self.holds_outside and self.region_hold_weight > 0:
            self.region_source = self.frozen_source()
        if self.freezes_gaussians:
            self.model.strategy.movable = self.region.contains  # type: ignore[union-attr]
        self.take_region()
        aabb = self.datamanager.train_dataset.scene_box.aabb
        bounds = Box((aabb[0] + aabb[1]) / 2, aabb[1] - aabb[0], torch.eye(3))
        self.model.viewer_outputs = RegionOverlay(self.region, bounds)  # type: ignore[assignment]
        if self.region.box is not None:
            typed = "region_box" in self.config.typed_controls
            self.region_controls = RegionBoxControls(self.region, outputs.dataparser_scale, typed_now=typed)
        parts = [name for name, value in (("a box", self.region.box), ("masks", self.region.masks)) if value is not None]
        CONSOLE.log(f"Editing inside the region of {' and '.join(parts)}")

    def frozen_source(self) -> FrozenSource:
        """A frozen copy of the source scene as loaded (a method that keeps one already returns its own)."""
        return FrozenSource(self.model, self.representation)

    @property
    def freezes_gaussians(self) -> bool:
        """Whether only the Gaussians inside the region move (splatfacto with a region and freeze-outside)."""
        return self.region is not None and self.config.region.freeze_outside and self.representation.name == "splatfacto"

    @property
    def keeps_source_outside_box(self) -> bool:
        """Whether nerfacto's field outside the region's box is the source's (``EditNerfactoModelConfig.source_outside_box``)."""
        return self.region is not None and self.region.box is not None and getattr(self.model.config, "source_outside_box", False)

    def take_region(self) -> None:
        """What the region lets this step move, from its box and masks now (the viewer may move the box): the
        Gaussians inside it, when it freezes the others; the box outside which nerfacto's field is the source's."""
        if self.freezes_gaussians:
            assert self.region is not None
            self.movable_gaussians = self.region.contains(self.model.means.detach())  # type: ignore[union-attr]
        if self.keeps_source_outside_box:
            assert self.region is not None and self.region.box is not None
            self.model.keep_outside(self.region.box)  # type: ignore[operator]

    def freeze_outside_region(self, optimizers: Dict[str, torch.optim.Optimizer]) -> None:
        """Before each step of every Gaussian optimizer, the rows of Gaussians outside the region get a zero gradient
        and a zero first moment, so Adam leaves them exactly as they are (its update is the first moment over the
        second's root); which Gaussians are inside is taken once a step (:meth:`take_region`)."""
        groups = set(self.model.gauss_params)  # type: ignore[union-attr]

        def hold_rows(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if self.movable_gaussians is None:
                return
            outside = ~self.movable_gaussians
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param.shape[0] != outside.shape[0]:
                        continue
                    if param.grad is not None:
                        param.grad[outside] = 0
                    moment = optimizer.state.get(param, {}).get("exp_avg")
                    if moment is not None:
                        moment[outside] = 0

        for name, optimizer in optimizers.items():
            if name in groups:
                optimizer.register_step_pre_hook(hold_rows)

    def region_background(self) -> contextlib.AbstractContextManager:
        """Within this, the edited scene and the source copy render over one background (splatfacto draws a random one
        per training render), so that the hold term compares like with like."""
        if self.region_source is None:
            return contextlib.nullcontext()
        return self.representation.same_background(self.model, self.region_source.model)

    def limit_to_region(self, views: List[int], cameras: List[Cameras], render: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """A step's views ``render`` [N, 3, H, W] limited to the region: the render the guidance takes (equal to
        ``render``, its gradient masked to the region's pixels of each view) and the hold term outside the region
        (against the source copy's render of the same views), with its own unmasked gradient. Without a region:
        ``render`` and no term."""
        if self.region is None:
            return render, {}
        masks = self.region.view_masks(views, cameras).to(render)
        self.region_masks_in_use = masks
        self.take_region()
        guided = render
        if self.config.region.gradient:
            guided = render * masks + (render * (1 - masks)).detach()  # the same values; the gradient only inside
        if self.region_source is None:
            return guided, {}
        source = self.region_source.render(cameras, views, self.config.ray_chunk_size).to(render)
        hold = ((1 - masks) * (render - source).pow(2)).mean()
        return guided, {"region_hold_loss": self.region_hold_weight * hold}

    def guidance_camera(self, index: int) -> Cameras:
        """Training view ``index``'s camera at the guidance resolution."""
        return guidance_camera(self.datamanager.train_camera(index), self.config.render_resolution)

    def guidance_view(self, index: int, camera: Optional[Cameras] = None) -> Tensor:
        """Render training view ``index`` for guidance, differentiably: [1, 3, H, W] in [0, 1]."""
        camera = camera if camera is not None else self.guidance_camera(index)
        return self.representation.render(self.model, camera, index, self.config.render_mode, self.config.ray_chunk_size)

    def guidance_views(self, step: int, views: List[int], cameras: Optional[List[Cameras]] = None) -> Tensor:
        """Render this device's training ``views`` of ``step`` for guidance, one at a time (chunked rendering keeps no
        view's graph, except a view of a single chunk, rendered in one pass), each with its own random samples
        (:meth:`view_seeds`): [N, 3, H, W] in [0, 1]."""
        cameras = cameras if cameras is not None else [self.guidance_camera(index) for index in views]
        renders = []
        for index, camera, seed in zip(views, cameras, self.view_seeds(step)):
            with seeded(seed + RENDER_SEED_OFFSET, self.device):
                renders.append(self.guidance_view(index, camera))
        return torch.cat(renders)

    def view_image(self, camera: Cameras, index: int) -> Tensor:
        """Training view ``index`` of the current scene seen by ``camera``, no graph: [H, W, 3] on the CPU."""
        return self.representation.render_image(self.model, camera, index, self.config.ray_chunk_size)

    def training_view_image(self, index: int) -> Tensor:
        """Training view ``index`` of the current scene at the data's resolution, no graph: [H, W, 3] on the CPU."""
        return self.view_image(self.datamanager.train_camera(index), index)

    def log_edit_image(self, step: int, index: int, render: Tensor, grad: Tensor) -> None:
        """Send source | current render | gradient magnitude of view ``index`` to the writer (tensorboard, wandb, ...)."""
        source = self.datamanager.source_image(index, tuple(render.shape[-2:]))
        magnitude = grad.detach().float().norm(dim=1, keepdim=True)
        magnitude = magnitude / magnitude.max().clamp(min=1e-12)
        magnitude = torch.nn.functional.interpolate(magnitude, size=render.shape[-2:], mode="nearest")
        heat = colormaps.apply_colormap(magnitude[0].permute(1, 2, 0).cpu(), colormaps.ColormapOptions("viridis"))
        row = torch.cat([source[0].permute(1, 2, 0).cpu(), render[0].detach().permute(1, 2, 0).clamp(0, 1).cpu(), heat], 1)
        writer.put_image(name="edit/source|render|gradient", image=row, step=step)

    def result_camera(self, index: int) -> Cameras:
        """Training view ``index``'s camera at the resolution of the results (never above the data's)."""
        camera = self.datamanager.train_camera(index)
        short_side = int(min(camera.height.item(), camera.width.item()))
        if self.config.result_resolution == 0 or self.config.result_resolution >= short_side:
            return camera
        return guidance_camera(camera, self.config.result_resolution)

    @torch.no_grad()
    def save_results(self, output_dir: Path) -> List[Path]:
        """Render ``result_views`` training views (every one with 0), evenly spaced along the turntable order,
        at ``result_resolution`` into ``output_dir``, with a source | edited grid of a few of them
        (compare.png) and a turntable (turntable.gif). Returns the paths of the renders."""
        output_dir.mkdir(parents=True, exist_ok=True)
        filenames = self.datamanager.train_dataset.image_filenames
        order = outputs.turntable_order(self.datamanager.train_dataset.cameras.camera_to_worlds[:, :3, 3])
        if self.config.result_views:
            order = [order[i] for i in outputs.evenly_spaced(len(order), self.config.result_views)]
        renders, paths = [], []
        for index in track(order, description=f"Rendering {len(order)} views of the result", transient=True):
            image = self.view_image(self.result_camera(index), index)
            paths.append(output_dir / f"{Path(filenames[index]).stem}.png")
            outputs.to_pil(image).save(paths[-1])
            renders.append(image)
        shown = outputs.evenly_spaced(len(renders), self.config.num_compare_views)
        sources = [self.datamanager.source_image(order[i], tuple(renders[i].shape[:2]))[0].permute(1, 2, 0) for i in shown]
        outputs.compare_grid(sources, [renders[i] for i in shown]).save(output_dir / outputs.COMPARE_NAME)
        outputs.write_turntable(renders, output_dir / outputs.TURNTABLE_NAME)
        return paths

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        if trainer is not None:
            # A resumed splatfacto edit: loading the checkpoint replaced the Gaussian tensors the optimizers were built on.
            rebind_optimizers(training_callback_attributes.optimizers.optimizers, self.model.get_param_groups())
            if self.freezes_gaussians:
                self.freeze_outside_region(training_callback_attributes.optimizers.optimizers)
            viewer = getattr(trainer, "viewer_state", None)
            server = getattr(viewer, "viser_server", None)
            if self.region_controls is not None and server is not None:
                self.region_controls.install(server)
            if isinstance(self.model.viewer_outputs, RegionOverlay) and server is not None:
                self.model.viewer_outputs.shown = lambda: viewer.control_panel.output_render == REGION_OUTPUT
            self._trainer = trainer
            self.method_name = trainer.config.method_name
            if trainer.config.load_dir is None and self.config.optimizer_state == "source":  # a new edit
                self.continue_source_optimizers(training_callback_attributes.optimizers)
            self._source_optimizers = None  # used (or, on resume, not needed): do not hold twice the field's size

            def save_final_renders(step: int) -> None:
                if self.rank != 0:  # one set of outputs: rank 0's
                    return
                paths = self.save_results(trainer.base_dir / RENDERS_DIR)
                CONSOLE.log(
                    f"Saved renders of {len(paths)} of the {self.datamanager.num_train_views} training views, {outputs.COMPARE_NAME} and "
                    f"{outputs.TURNTABLE_NAME} to {trainer.base_dir / RENDERS_DIR}"
                )

            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], save_final_renders))
        return callbacks


