"""Perturb-and-Revise (Hong et al., CVPR 2025) on a nerfstudio scene, built on the PDS editing step.

The phases are values of the step (:mod:`pnr_nerfstudio.schedules`):

1. eta selection (only with ``eta auto``): K editing steps from the source; their guidance losses give
   eta (Alg. 2). These steps are then thrown away.
2. perturbation, at the first editing step: the field and proposal networks become
   (1 - eta) theta_src + eta theta_0 (Alg. 1), theta_0 a fresh initialisation of the same model config;
   the optimizers' state starts fresh.
3. editing with the t ratio range annealed from (0.75, 0.75) to (0.02, 0.40).
4. revise: the guidance gradient plus the identity-preserving L1 and LPIPS terms against the source
   scene's render of the same view, with weights decaying to 0 (:mod:`pnr_nerfstudio.ipg`).

What a resumed run needs lives in buffers of the pipeline, which nerfstudio's checkpoints hold: eta,
whether the field was perturbed, and the eta-selection losses recorded so far. The frozen source
field (theta_src and the IPG renders) and LPIPS stay outside the module tree, so they never enter a
checkpoint, and ``ns-export`` or ``ns-viewer`` of a pnr run need neither.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.model_components.losses import interlevel_loss
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags, merge_typed
from pds_nerfstudio.integration.source_run import Run, checkpoint_step
from pds_nerfstudio.methods.orbits import ORBIT_SEED_BIT, OrbitStep, orbit_metrics
from pds_nerfstudio.methods.pds import PDSPipeline, PDSPipelineConfig
from pds_nerfstudio.parallel import collectives
from pds_nerfstudio.priors.multiview import camera_vectors
from pds_nerfstudio.priors.multiview_guidance import MultiViewGuidance
from pds_nerfstudio.scenes.frozen_source import FrozenSource
from pds_nerfstudio.scenes.models import EditNerfactoModelConfig
from pds_nerfstudio.scenes.orbit import OrbitGroup
from pds_nerfstudio.scenes.rendering import guidance_camera, seeded, view_rays
from pds_nerfstudio.scenes.representations import Nerfacto, rebind_optimizers
from pnr_nerfstudio.ipg import IdentityPreservingLoss, IPGConfig
from pnr_nerfstudio.objects import RELEASED_GUIDANCE_SCALE, RELEASED_RENDER_RESOLUTION, released_nerfacto_optimizers
from pnr_nerfstudio.perturbation import (
    PerturbationConfig,
    edited_parameters,
    eta_from_loss_change,
    loss_change,
    perturbed_values,
    selection_loss,
)
from pnr_nerfstudio.schedules import Phase, PhasePlan, TimestepAnnealingConfig

REVISE_TERMS = ("guidance_loss", "ipg_l1_loss", "ipg_lpips_loss", "region_hold_loss")
"""The terms whose pull on the rendered pixels a revise step weighs against each other (:func:`revise_pulls`)."""

IDENTITY_TERMS = ("ipg_l1_loss", "ipg_lpips_loss")
"""The identity-preserving terms, whose summed pull is set against the guidance's."""


def revise_pulls(render: Tensor, loss_dict: Dict[str, Tensor]) -> Dict[str, float]:
    """The norm of the gradient each revise term gives the step's rendered pixels (``revise_pull_<term>``), that of the
    identity terms together (``revise_pull_identity``) and its cosine with the guidance's (``revise_pull_cosine``; -1:
    the identity terms pull straight against the edit): whether the identity terms, at their weights, outweigh the
    guidance (and undo the edit) or the reverse. Logged every --pipeline.steps-per-log-image steps of the revise phase
    (one extra backward pass per term through the encoder, LPIPS or the hold, none through the scene)."""
    if not render.requires_grad:
        return {}
    grads: Dict[str, Tensor] = {}
    for name in (name for name in REVISE_TERMS if name in loss_dict):
        (grad,) = torch.autograd.grad(loss_dict[name], render, retain_graph=True, allow_unused=True)
        grads[name] = torch.zeros_like(render) if grad is None else grad
    pulls = {f"revise_pull_{name.removesuffix('_loss')}": float(grad.norm()) for name, grad in grads.items()}
    identity = [grads[name] for name in IDENTITY_TERMS if name in grads]
    if identity and "guidance_loss" in grads:
        summed, guidance = torch.stack(identity).sum(0).flatten(), grads["guidance_loss"].flatten()
        pulls["revise_pull_identity"] = float(summed.norm())
        pulls["revise_pull_cosine"] = float(F.cosine_similarity(summed, guidance, dim=0))
    return pulls


@dataclass
class PnRPipelineConfig(PDSPipelineConfig):
    """Perturb-and-Revise: perturb the source field, edit it with annealed timesteps, revise it with IPG."""

    _target: Type = field(default_factory=lambda: PnRPipeline)
    protocol: Literal["auto", "objects", "real-scenes"] = "auto"
    """The paper's two settings (App. E); auto: the paper's own for the prior given, objects with a multi-view prior
    (MVDream's format), real-scenes with a single-view Stable Diffusion. objects (the released code, with a multi-view
    prior: orbit views round the object, the x0-reconstruction objective at scale 50, :mod:`pnr_nerfstudio.objects`):
    eta auto from 50 selection steps, t annealed from 0.75 to (0.02, 0.40) over 1500 edit steps, 1000 revise steps, a
    fresh Adam at a constant learning rate, 64 px renders below step 800; with a single-view prior it guides 4 training
    views a step with PDS instead (ours, not the release's). real-scenes (nerfstudio scenes): PDS with a fixed eta 0.6,
    the PDS t ratio range 0.02-0.98 without annealing, no eta selection, no revise steps, 15000 edit steps (half of
    pds's 30000), PDS's learning-rate schedule from the perturbation, full-size renders. Flags typed beside it win."""
    eta_selection_steps: int = 50
    """K: editing steps from the source whose guidance losses choose eta; then discarded (only with eta auto)."""
    edit_steps: int = 1500
    """Editing steps from the perturbed field, with annealed timesteps (released code: 1500)."""
    revise_steps: int = 1000
    """Revise steps: editing plus the identity-preserving gradient (released code: 1000); 0: none."""
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    """Perturbation strength eta and its automatic selection."""
    annealing: TimestepAnnealingConfig = field(default_factory=TimestepAnnealingConfig)
    """Timestep annealing of the editing and revise steps."""
    ipg: IPGConfig = field(default_factory=IPGConfig)
    """Identity-preserving gradient of the revise steps."""
    interlevel_num_rays: int = 4096
    """nerfacto: rays of the edited view rendered each step for the proposal (interlevel) loss, so the proposal networks
    follow the new geometry; 0: off."""
    learning_rate_schedule: Literal["constant", "scheduled"] = "constant"
    """After the perturbation: constant at the --optimizers.* rates, as the released objects code edits (its optimiser
    has no schedule); scheduled: the --optimizers.* schedules (nerfacto: 1000-step warmup, decay) from their step 0
    at the perturbation, PDS's update rule (the real-scenes protocol). The eta-selection steps always run at the
    constant rate."""
    optimizer_state: Literal["source", "fresh"] = "fresh"
    """fresh: Adam starts at step 0 for the eta-selection steps, as the released code builds a new optimiser (and
    again at the perturbation, always); source: the selection steps continue the source run's Adam state."""
    optimizer_state_at_perturbation: Literal["fresh", "kept"] = "fresh"
    """fresh: Adam's moments and step counts start again at the perturbation; kept: the eta-selection steps' state
    goes on (the released objects code perturbs the field in place under the same optimiser; the default with a
    multi-view prior). A splatfacto tensor whose rows changed (culled while eta was selected) starts fresh either way."""
    coarse_resolution: int = 64
    """For the first --pipeline.coarse-steps steps of the run (eta selection included), render at this short side and
    upsample to --pipeline.render-resolution for the guidance (released object configs: 64 px below global step 800);
    0: off (the real-scenes protocol)."""
    coarse_steps: int = 800
    """Steps, counted from the run's step 0, rendered at --pipeline.coarse-resolution."""
    views_per_step: int = 4
    """Training views each step guides, on each device (released objects code: 4; the real-scenes protocol: 1, as PDS;
    with a multi-view prior, untyped: one group of its views, 4 for MVDream).
    The guidance gradient is the mean over the views (the released 0.5 * sum / N), the eta-selection loss their mean,
    and the revise LPIPS term their sum, as released; with K devices, over all N*K views."""

    def with_protocol(self, typed: TypedFlags) -> "PnRPipelineConfig":
        """This config with the values of its protocol (auto resolved by the prior), except for the flags typed
        (``typed``, relative to it)."""
        multiview = self.multiview_prior() is not None
        if self.protocol == "auto":
            return dataclasses.replace(self, protocol="objects" if multiview else "real-scenes").with_protocol(typed)
        if self.protocol == "objects":
            if not multiview:
                return self
            released = dataclasses.replace(
                self,
                guidance=dataclasses.replace(self.guidance, guidance_scale=RELEASED_GUIDANCE_SCALE),
                render_resolution=RELEASED_RENDER_RESOLUTION,
                optimizer_state_at_perturbation="kept",
            )
            return merge_typed(self, released, typed)
        real_scenes = dataclasses.replace(
            self,
            perturbation=dataclasses.replace(self.perturbation, eta=0.6),
            edit_steps=15000,
            revise_steps=0,
            coarse_resolution=0,
            annealing=dataclasses.replace(self.annealing, enabled=False),
            learning_rate_schedule="scheduled",
            views_per_step=1,
        )
        return merge_typed(self, real_scenes, typed)

    @property
    def phases(self) -> PhasePlan:
        """The step counts of the phases; no eta-selection steps when eta is given."""
        selection = self.eta_selection_steps if self.perturbation.eta == "auto" else 0
        return PhasePlan(selection, self.edit_steps, self.revise_steps)

    def check(self, scene_device: str) -> None:
        phase_steps = {"edit-steps": self.edit_steps}
        if self.perturbation.eta == "auto":
            phase_steps["eta-selection-steps"] = self.eta_selection_steps
        for flag, steps in phase_steps.items():
            if steps <= 0:
                raise InputError(f"--pipeline.{flag} {steps}: need a positive number of steps")
        for flag, value in (("revise-steps", self.revise_steps), ("interlevel-num-rays", self.interlevel_num_rays),
                            ("coarse-resolution", self.coarse_resolution), ("coarse-steps", self.coarse_steps)):  # fmt: skip
            if value < 0:
                raise InputError(f"--pipeline.{flag} {value}: need 0 (none) or more")
        self.perturbation.check(self.eta_selection_steps)
        self.annealing.check()
        self.ipg.check()
        if self.multiview_prior() is not None and self.protocol == "real-scenes":
            raise InputError(
                f"--pipeline.protocol {self.protocol} guides the captured views with a single-view Stable Diffusion; "
                "a multi-view prior guides orbit views round the object: use --pipeline.protocol objects"
            )
        super().check(scene_device)

    @property
    def ratio_control(self) -> Tuple[str, str]:
        """The viewer's two sliders set the range the timestep annealing ends at (or, without annealing, the t range)."""
        return ("t ratio end", "annealing.end") if self.annealing.enabled else super().ratio_control

    def check_flags(self, typed: TypedFlags) -> None:
        super().check_flags(typed)
        if self.annealing.enabled and "guidance.t_ratio_range" in typed:
            raise InputError(
                "pnr anneals t: set --pipeline.annealing.start and --pipeline.annealing.end, "
                "not --pipeline.guidance.t-ratio-range (or turn annealing off: --pipeline.annealing.enabled False)"
            )

    @property
    def released_objects_setting(self) -> bool:
        """Whether this edit is the released objects code's setting: the objects protocol with a multi-view prior."""
        return self.protocol == "objects" and self.multiview_prior() is not None

    def with_source(self, run: Run, typed: TypedFlags) -> "PnRPipelineConfig":
        """As for every edit; in the released objects setting a nerfacto field's hash grid is its own optimizer group,
        for the released rates (unless ``--pipeline.model.grid-param-group`` is typed)."""
        resolved = super().with_source(run, typed)
        if self.released_objects_setting and isinstance(resolved.model, EditNerfactoModelConfig) and "model.grid_param_group" not in typed:
            resolved = dataclasses.replace(resolved, model=dataclasses.replace(resolved.model, grid_param_group=True))
        return resolved

    def default_optimizers(self) -> Dict[str, Dict[str, Any]]:
        """The released AdamW groups for a nerfacto field in the released objects setting
        (:func:`pnr_nerfstudio.objects.released_nerfacto_optimizers`); otherwise the scene's own."""
        if self.released_objects_setting and getattr(self.model, "grid_param_group", False):
            return released_nerfacto_optimizers()
        return super().default_optimizers()

    def resumed_max_num_iterations(self, run: Run) -> Optional[int]:
        """The phases' total, when the run's total was its phases' (the default) and edit or revise steps change now."""
        started: PnRPipelineConfig = run.config.pipeline
        if run.config.max_num_iterations == started.phases.total_steps:
            return self.phases.total_steps
        return run.config.max_num_iterations

    def resumed_from(self, run: Run, typed: TypedFlags) -> "PnRPipelineConfig":
        merged = super().resumed_from(run, typed)
        started = run.config.pipeline
        # What eta comes from: a resumed run must keep it, or the losses recorded so far mean something else.
        kept = {
            "--pipeline.perturbation.eta": lambda c: c.perturbation.eta,
            "--pipeline.eta-selection-steps": lambda c: c.eta_selection_steps,
            "--pipeline.perturbation.eta-max": lambda c: c.perturbation.eta_max,
            "--pipeline.perturbation.d-min": lambda c: c.perturbation.d_min,
            "--pipeline.perturbation.loss-window": lambda c: c.perturbation.loss_window,
            "--pipeline.perturbation.seed": lambda c: c.perturbation.seed,
        }
        changed = [f"{flag} {value(started)}" for flag, value in kept.items() if value(merged) != value(started)]
        if changed:
            raise InputError(
                f"{run.describe()} started with {', '.join(changed)}, which a resumed run keeps (they decide eta and "
                "theta_0); resume without changing them, or start a new edit from the source run"
            )
        perturbed_at = merged.phases.start(Phase.EDIT)
        if merged.region.given and not started.region.given and run.checkpoint is not None and checkpoint_step(run.checkpoint) >= perturbed_at:
            raise InputError(
                f"{run.describe()} perturbed the whole scene at step {perturbed_at}, without a region; a region given now "
                "would keep its outside perturbed: start a new pnr edit from the source run with --pipeline.region.*"
            )
        return merged


class PnRPipeline(PDSPipeline):
    """The PDS editing step, run through the phases of Perturb-and-Revise."""

    config: PnRPipelineConfig
    source: Optional[FrozenSource] = None
    """The frozen source scene; training only."""

    def __init__(self, config: PnRPipelineConfig, device: str, test_mode="val", *args: Any, **kwargs: Any) -> None:
        super().__init__(config, device, test_mode, *args, **kwargs)
        # Resume state, saved in every checkpoint (non-model keys of a pipeline load non-strictly, so
        # source checkpoints without them load as well).
        self.register_buffer("eta", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("perturbed", torch.tensor(False))
        self.register_buffer("eta_selection_losses", torch.full((config.phases.eta_selection_steps,), float("nan")))
        self.ipg: Optional[IdentityPreservingLoss] = None
        self.perturbed_gaussians: Optional[Tensor] = None
        """splatfacto with a region: the Gaussians the perturbation moved (those inside the region)."""
        self._optimizers: Optional[Optimizers] = None
        self._announced: Optional[Phase] = None
        if test_mode == "val" and config.revise_steps > 0:  # LPIPS only where a phase uses it
            self.ipg = config.ipg.setup(device=device)
        if test_mode == "val" and config.protocol == "objects" and not self.guides_orbits:
            CONSOLE.log(
                "PnR: the objects protocol with a single-view prior guides training views with PDS; the release runs "
                "it with a multi-view prior (MVDream's format) round the object. For a nerfstudio scene the paper's "
                "setting is --pipeline.protocol real-scenes (the default with a single-view prior)"
            )

    def load_source(self, checkpoint: Path) -> None:
        """Load the source field and keep a frozen copy of it (training only: evaluation never loads the source)."""
        super().load_source(checkpoint)
        self.source = self.frozen_source()  # the one the region's hold term compares with

    # ----------------------------------------------------------------------------------------------
    # Phases
    # ----------------------------------------------------------------------------------------------

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        self._optimizers = training_callback_attributes.optimizers
        if self._optimizers is not None:
            self.follow_the_phases(self._optimizers)
        callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self.begin_step))
        return callbacks

    def begin_step(self, step: int) -> None:
        """Before each training step: announce a new phase, and perturb the field at the first editing step."""
        phase = self.config.phases.phase(step)
        if phase is not self._announced:
            self.announce(step, phase)
        if phase is not Phase.ETA_SELECTION and not bool(self.perturbed):
            self.share_controls()  # with several devices, every rank perturbs inside rank 0's viewer box
            self.perturb(self.choose_eta())

    def follow_the_phases(self, optimizers: Optimizers) -> None:
        """Make every learning-rate schedule a value of the step that follows the phases: the configured (constant)
        rate while eta is selected, as the released code's optimiser steps; after the perturbation, that constant
        rate again (``learning_rate_schedule constant``, the released objects code) or the configured schedule
        (warmup and decay) from its step 0 (``scheduled``, PDS's rule: the real-scenes protocol).

        The schedulers' own step counts are the training steps, so a resumed run continues the same values, and
        nerfstudio's ``learning_rate/<group>`` log shows the rate its next step uses, as for any method.
        """
        edit_start = self.config.phases.start(Phase.EDIT)
        constant = self.config.learning_rate_schedule == "constant"

        def phased(schedule):
            return lambda step: 1.0 if constant or step < edit_start else schedule(step - edit_start)

        for scheduler in optimizers.schedulers.values():
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise TypeError(f"pnr follows its phases with LambdaLR schedules (nerfstudio's); got {type(scheduler).__name__}")
            scheduler.lr_lambdas = [phased(schedule) for schedule in scheduler.lr_lambdas]
            for group, base, schedule in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * schedule(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]  # what get_last_lr() reports

    def announce(self, step: int, phase: Phase) -> None:
        """Say on the console which phase this step starts (the viewer's status line shows it at every step)."""
        plan = self.config.phases
        if self._announced is None and step > 0:
            CONSOLE.log(f"PnR: resumed at step {step}, in phase {plan.describe(phase)}")
            if bool(self.perturbed):
                CONSOLE.log(
                    f"PnR: eta = {float(self.eta):.4f} was chosen and the field perturbed before the run stopped; "
                    "not perturbing again"
                )
            elif phase is Phase.ETA_SELECTION:
                recorded = int(torch.isfinite(self.eta_selection_losses).sum())
                total = plan.eta_selection_steps
                CONSOLE.log(f"PnR: {recorded} of {total} eta-selection losses recorded before the run stopped")
        else:
            CONSOLE.log(f"PnR phase {int(phase) + 1}/3: {plan.describe(phase)}")
        self._announced = phase

    def choose_eta(self) -> float:
        """eta as given, or chosen from the recorded eta-selection losses (Alg. 2)."""
        perturbation = self.config.perturbation
        if perturbation.eta != "auto":
            return float(perturbation.eta)
        losses = self.eta_selection_losses.tolist()
        if not torch.isfinite(self.eta_selection_losses).all():
            raise RuntimeError(
                f"eta selection: losses of some of the {len(losses)} selection steps are missing: {losses}"
            )
        delta = loss_change(losses, perturbation.loss_window)
        eta = eta_from_loss_change(delta, perturbation.eta_max, perturbation.d_min)
        CONSOLE.log(
            f"PnR eta selection: loss change dL = {delta:.6g} over {len(losses)} steps (mean of the last "
            f"{perturbation.loss_window} minus the first {perturbation.loss_window}) -> eta = {eta:.4f}"
        )
        return eta

    @torch.no_grad()
    def perturb(self, eta: float) -> None:
        """theta <- (1 - eta) theta_src + eta theta_0 for the edited parameters (Alg. 1): nerfacto's field and
        proposal networks, or every Gaussian's attributes (see :meth:`Splatfacto.interpolate`).

        Starts from theta_src, so whatever the eta-selection steps did (to the field, or the Gaussians they
        culled) is discarded; the optimizers' state (Adam's moments and step counts) starts fresh.
        """
        if self.source is None:
            raise RuntimeError("the pnr pipeline was built without its source checkpoint; it cannot perturb the scene")
        names = list(edited_parameters(self.model))  # the edit model's trained groups (the frozen copy trains none)
        fresh = self.fresh_initialisation()
        values = perturbed_values(names, self.source.parameters, fresh, eta, self.representation.interpolate)
        where = ""
        if self.region is not None and self.representation.name == "splatfacto":
            values = self.keep_outside_region(values)
            where = f" inside the region ({int(self.perturbed_gaussians.sum())} of {len(self.perturbed_gaussians)} Gaussians)"
        elif self.region is not None:
            where = " (the whole field: nerfacto's hash grid is shared in space; the region's hold term restores the outside)"
        self.representation.assign(self.model, values)
        statistics = getattr(self.model, "strategy_state", {})
        for key in ("grad2d", "count", "radii"):  # densification's screen-space statistics, sized for the rows it had
            if statistics.get(key) is not None:
                statistics[key] = None  # gsplat starts them again at the next step, for the source's rows
        kept = self.config.optimizer_state_at_perturbation == "kept"
        if self._optimizers is not None:
            optimizers = self._optimizers.optimizers
            rebind_optimizers(optimizers, self.get_param_groups())
            for optimizer in optimizers.values():
                if not kept:
                    optimizer.state.clear()  # Adam's moments and step counts start again for every parameter
                for param in [param for param in optimizer.state if optimizer.state[param]["exp_avg"].shape != param.shape]:
                    del optimizer.state[param]  # rows culled while eta was selected: this tensor starts fresh
        self.eta.fill_(eta)
        self.perturbed.fill_(True)
        CONSOLE.log(
            f"PnR: perturbed {len(names)} {self.representation.name} tensors to (1 - eta) theta_src + eta theta_0 "
            f"with eta = {eta:.4f}{where}; optimizer state {'kept' if kept else 'reset'}"
        )

    def keep_outside_region(self, values: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """splatfacto with a region: the perturbed values of the Gaussians inside it (by the source's means, which the
        perturbation keeps; with masks, only those some training view sees, since no view's guidance or hold reaches
        the others), the source's own values of every other Gaussian."""
        assert self.source is not None and self.region is not None
        inside = self.region.contains(self.source.parameters["gauss_params.means"], seen_by_one=True)
        self.perturbed_gaussians = inside
        kept = {}
        for name, value in values.items():
            rows = inside.view(-1, *[1] * (value.dim() - 1)).to(value.device)
            kept[name] = torch.where(rows, value, self.source.parameters[name].to(value))
        return kept

    def fresh_initialisation(self) -> Dict[str, Tensor]:
        """theta_0: a fresh initialisation of the edited scene, seeded with ``perturbation.seed``."""
        assert self.source is not None
        with seeded(self.config.perturbation.seed, self.device):
            return self.representation.fresh_parameters(self.config.model, self, self.source.parameters)

    # ----------------------------------------------------------------------------------------------
    # One step
    # ----------------------------------------------------------------------------------------------

    def guidance_loss(self, step: int, views: List[int], render: Tensor, **guidance_kwargs):
        """The distillation loss in the released code's units: the surrogate summed over each view's latent
        (gradient grad / N for N views) instead of averaged (grad / (N * elements)), the scale the IPG weights are
        set for."""
        loss, output, metrics = super().guidance_loss(step, views, render, **guidance_kwargs)
        return loss * output.grad[0].numel(), output, metrics

    def selection_views(self) -> List[int]:
        """The views of the eta-selection steps, in order: ``loss_window`` steps' worth of views (all devices'),
        cycled, so that the first and the last window of losses (Alg. 2) are taken on the same views and their
        difference measures descent, not a change of view. Drawn once from ``perturbation.seed``; a resumed run draws
        the same."""
        count, window = self.datamanager.num_train_views, self.config.perturbation.loss_window
        order = random.Random(self.config.perturbation.seed).sample(range(count), count)
        return [order[i % count] for i in range(window * self.views_in_step)]

    def step_views(self, step: int) -> List[int]:
        """This device's training views at ``step``: cycled through :meth:`selection_views` while eta is selected."""
        if self.config.phases.phase(step) is Phase.ETA_SELECTION:
            views, total = self.selection_views(), self.views_in_step
            return self.device_views([views[(step * total + j) % len(views)] for j in range(total)])
        return super().step_views(step)

    def get_train_loss_dict(self, step: int):
        self.share_controls()
        if self.source is not None and (self.region_source is not None or self.config.phases.phase(step) is Phase.REVISE):
            # the render and the source's render it is compared with (revise, the region's hold), over one background
            with self.representation.same_background(self.model, self.source.model):
                return self.editing_step(step)
        return self.editing_step(step)

    def editing_step(self, step: int):
        """One step of the current phase: the guidance loss, plus the revise losses in the revise phase."""
        plan = self.config.phases
        phase = plan.phase(step)
        if self.guides_orbits:
            views, cameras, groups = self.orbit_views(step)
        else:
            views, groups = self.step_views(step), []
            cameras = [self.guidance_camera(index) for index in views]
        coarse = 0 < self.config.coarse_resolution < self.config.render_resolution and step < self.config.coarse_steps
        render_cameras = cameras
        if coarse:
            originals = cameras if self.guides_orbits else [self.datamanager.train_camera(index) for index in views]
            render_cameras = [guidance_camera(camera, self.config.coarse_resolution) for camera in originals]
        loss_dict: Dict[str, Tensor] = {}
        # Before the guidance render: the proposal networks take their gradient on the first forward of a step.
        if self.config.interlevel_num_rays > 0 and isinstance(self.representation, Nerfacto):
            loss_dict["interlevel_loss"] = self.proposal_loss(render_cameras, views)
        render = self.guidance_views(step, views, render_cameras)
        rendered = render  # as the scene rendered it (before any upsampling): what the revise pulls are read on
        guided, region_losses = self.limit_to_region(views, render_cameras, render)  # at the render's own resolution
        if coarse:  # the coarse views, upsampled to the guidance resolution
            size = (int(cameras[0].height), int(cameras[0].width))
            render = F.interpolate(render, size=size, mode="bilinear", align_corners=False)
            guided = F.interpolate(guided, size=size, mode="bilinear", align_corners=False)
        scheduled = self.config.annealing.at(plan, step, end=self.controls.ratio_range)
        t_range = scheduled or self.controls.ratio_range
        if self.guides_orbits:
            guidance, latent_numel, selection, metrics = self.orbit_guidance_loss(step, groups, guided, t_range)
        else:
            guidance, output, metrics = self.guidance_loss(step, views, guided, **({"t_ratio_range": scheduled} if scheduled else {}))
            latent_numel, selection = output.grad[0].numel(), selection_loss(output.x0, output.x0_hat)
        loss_dict["guidance_loss"] = guidance
        # the hold term in the units of this guidance loss (summed over each view's latent), so that a hold weight
        # keeps the balance it has in a pds edit
        loss_dict.update({name: value * latent_numel for name, value in region_losses.items()})
        if self.region_masks_in_use is not None:
            metrics["region_share"] = self.region_masks_in_use.mean()
        metrics["phase"] = int(phase)
        metrics["render_short_side"] = int(min(render_cameras[0].height.item(), render_cameras[0].width.item()))
        if self._optimizers is not None:  # the rates this step's update uses
            for group, optimizer in self._optimizers.optimizers.items():
                metrics[f"learning_rate_{group}"] = optimizer.param_groups[0]["lr"]
        if phase is Phase.ETA_SELECTION:
            # the mean over the step's views on every device (each device's mean, all devices guiding as many)
            value = collectives.all_reduce_sum(torch.tensor([selection], dtype=torch.float64)).item() / self.world_size
            if not math.isfinite(value):
                raise InputError(
                    f"eta selection: the loss of step {step} is {value} (the render or the guidance gave non-finite values); "
                    "pass a fixed --pipeline.perturbation.eta (real scenes: 0.6) or a lower --pipeline.guidance.guidance-scale"
                )
            self.eta_selection_losses[step] = value
            metrics["eta_selection_loss"] = value
        else:
            metrics["eta"] = float(self.eta)
        if phase is Phase.REVISE:
            loss_dict.update(self.revise_losses(step, views, cameras, render, metrics))
            if step % self.config.steps_per_log_image == 0:
                metrics.update(revise_pulls(rendered, loss_dict))
        status: Dict[str, Any] = {"phase": phase.label}
        if "eta" in metrics:
            status["eta"] = metrics["eta"]
        self.report(step, {**status, "t ratio": "{:.2f} to {:.2f}".format(*t_range), "views": " ".join(map(str, views))})
        return {"rgb": render}, loss_dict, metrics

    # ----------------------------------------------------------------------------------------------
    # The objects protocol with a multi-view prior (pnr_nerfstudio.objects)
    # ----------------------------------------------------------------------------------------------

    def orbit_seed(self, step: int) -> int:
        """The seed of this device's orbit groups at ``step``: the step's own, except while eta is selected, when the
        groups cycle through ``loss_window`` steps' worth drawn from ``perturbation.seed`` (as the training views do
        there, :meth:`selection_views`), so that Alg. 2's first and last windows of losses are taken on the same views
        and their difference measures descent, not a change of view (the release draws new views at every step)."""
        if self.config.phases.phase(step) is Phase.ETA_SELECTION:
            cycled = self.config.perturbation.seed * 1_000_003 + step % self.config.perturbation.loss_window
            return (cycled * 4096 + self.rank * self.config.views_per_step) % 2**62 ^ ORBIT_SEED_BIT
        return super().orbit_seed(step)

    def orbit_guidance_loss(
        self, step: int, groups: List[OrbitGroup], render: Tensor, t_ratio_range: Tuple[float, float]
    ) -> Tuple[Tensor, int, float, Dict[str, Any]]:
        """The released objective of the step's orbit views ``render`` [N, 3, H, W]: the loss to descend, the elements
        of a view's latent, Alg. 2's loss in the released units (the descended objective's value, scaled per element to
        a 4x32x32 latent) and diagnostics. What the step gave the prior is kept in :attr:`orbit_step_in_use`."""
        guidance: MultiViewGuidance = self.guidance  # type: ignore[assignment]
        used = self.use_values(step, tgt_prompt=self.controls.tgt_prompt, guidance_scale=self.controls.guidance_scale)
        generators = self.view_generators(step)
        latents = guidance.encode_images(render, generators)
        cameras = camera_vectors(torch.cat([group.object_c2w for group in groups]))
        output = guidance(
            latents, used["tgt_prompt"], cameras, t_ratio_range=t_ratio_range, generator=generators,
            guidance_scale=used["guidance_scale"],
        )  # fmt: skip
        self.orbit_step_in_use = OrbitStep(groups, cameras, latents.detach(), output)
        if step % self.config.steps_per_log_image == 0:
            row = torch.cat(list(render.detach().clamp(0, 1)), dim=2).permute(1, 2, 0).cpu()
            writer.put_image(name="edit/orbit views", image=row, step=step)
        metrics = {
            "guidance_t": output.t.float().mean(),
            "guidance_scale": used["guidance_scale"],
            "t_ratio_min": t_ratio_range[0],
            "t_ratio_max": t_ratio_range[1],
            **orbit_metrics(groups),
        }
        loss = self.config.guidance_loss_mult * output.loss.to(self.device)
        return loss, latents[0].numel(), selection_loss(latents, output.reconstruction.x0), metrics

    def proposal_loss(self, cameras: List[Cameras], views: List[int]) -> Tensor:
        """nerfacto's interlevel loss on random rays of the views (``interlevel_num_rays`` in all, an equal share from
        each view): it trains the proposal networks, which the rendered colours do not reach."""
        per_view = max(1, self.config.interlevel_num_rays // len(views))
        losses = []
        for camera, index in zip(cameras, views):
            rays = view_rays(camera, index)
            chosen = torch.randperm(len(rays), device=rays.origins.device)[:per_view]
            outputs = self.model(rays[chosen])
            losses.append(interlevel_loss(outputs["weights_list"], outputs["ray_samples_list"]))
        return self.model.config.interlevel_loss_mult * torch.stack(losses).mean()

    def revise_losses(
        self, step: int, views: List[int], cameras: List[Cameras], render: Tensor, metrics: Dict[str, Any]
    ) -> Dict[str, Tensor]:
        """The identity-preserving terms: L1 and LPIPS to the source scene's renders of the same views, weighted."""
        plan = self.config.phases
        l1_mult, lpips_mult = self.config.ipg.weights(plan.step_in_phase(step), plan.revise_steps)
        metrics.update({"ipg_l1_mult": l1_mult, "ipg_lpips_mult": lpips_mult})
        if l1_mult == 0 and lpips_mult == 0:
            return {}
        assert self.source is not None and self.ipg is not None, "revise steps run in training only"
        source = self.source.render(cameras, views, self.config.ray_chunk_size)
        terms = self.ipg(render, source, views_in_step=self.views_in_step)
        metrics.update({"ipg_l1": terms["l1"].detach(), "ipg_lpips": terms["lpips"].detach()})
        return {"ipg_l1_loss": l1_mult * terms["l1"], "ipg_lpips_loss": lpips_mult * terms["lpips"]}
