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

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.model_components.losses import interlevel_loss
from nerfstudio.models.base_model import Model
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from pds_nerfstudio.errors import InputError
from pds_nerfstudio.guidance import GuidanceConfig
from pds_nerfstudio.pipeline import PDSPipeline, PDSPipelineConfig
from pds_nerfstudio.rendering import render_view_image, seeded, view_rays
from pds_nerfstudio.source_run import Run
from pnr_nerfstudio.ipg import IdentityPreservingLoss, IPGConfig
from pnr_nerfstudio.perturbation import (
    PerturbationConfig,
    edited_parameters,
    eta_from_loss_change,
    loss_change,
    perturb_parameters,
    selection_loss,
)
from pnr_nerfstudio.schedules import Phase, PhasePlan, TimestepAnnealingConfig


@dataclass
class PnRPipelineConfig(PDSPipelineConfig):
    """Perturb-and-Revise: perturb the source field, edit it with annealed timesteps, revise it with IPG."""

    _target: Type = field(default_factory=lambda: PnRPipeline)
    eta_selection_steps: int = 50
    """K: editing steps from the source whose guidance losses choose eta; then discarded (only with eta auto)."""
    edit_steps: int = 1500
    """Editing steps from the perturbed field, with annealed timesteps (released code: 1500)."""
    revise_steps: int = 1000
    """Revise steps: editing plus the identity-preserving gradient (released code: 1000)."""
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    """Perturbation strength eta and its automatic selection."""
    annealing: TimestepAnnealingConfig = field(default_factory=TimestepAnnealingConfig)
    """Timestep annealing of the editing and revise steps."""
    ipg: IPGConfig = field(default_factory=IPGConfig)
    """Identity-preserving gradient of the revise steps."""
    interlevel_num_rays: int = 4096
    """Rays of the edited view rendered each step for nerfacto's proposal (interlevel) loss, so the proposal networks follow the new geometry; 0: off."""

    @property
    def phases(self) -> PhasePlan:
        """The step counts of the phases; no eta-selection steps when eta is given."""
        selection = self.eta_selection_steps if self.perturbation.eta == "auto" else 0
        return PhasePlan(selection, self.edit_steps, self.revise_steps)

    def check(self, scene_device: str) -> None:
        phase_steps = {
            "eta-selection-steps": self.eta_selection_steps,
            "edit-steps": self.edit_steps,
            "revise-steps": self.revise_steps,
        }
        for flag, steps in phase_steps.items():
            if steps <= 0:
                raise InputError(f"--pipeline.{flag} {steps}: need a positive number of steps")
        if self.interlevel_num_rays < 0:
            raise InputError(f"--pipeline.interlevel-num-rays {self.interlevel_num_rays}: need 0 (off) or more")
        if tuple(self.guidance.t_ratio_range) != tuple(GuidanceConfig().t_ratio_range):
            raise InputError(
                "pnr anneals t: set --pipeline.annealing.start and --pipeline.annealing.end, "
                "not --pipeline.guidance.t-ratio-range"
            )
        self.perturbation.check(self.eta_selection_steps)
        self.annealing.check()
        self.ipg.check()
        super().check(scene_device)

    def resumed_from(self, run: Run, default: "PnRPipelineConfig") -> "PnRPipelineConfig":
        merged = super().resumed_from(run, default)
        started = run.config.pipeline
        if (merged.perturbation.eta, merged.eta_selection_steps) != (
            started.perturbation.eta,
            started.eta_selection_steps,
        ):
            raise InputError(
                f"{run.describe()} started with --pipeline.perturbation.eta {started.perturbation.eta} and "
                f"--pipeline.eta-selection-steps {started.eta_selection_steps}, which a resumed run keeps; "
                "resume without changing them, or start a new edit from the source run"
            )
        return merged


class FrozenSource:
    """The source scene, frozen: theta_src for the perturbation and the renders the revise steps compare with.

    Deliberately not an ``nn.Module`` attribute of the pipeline: it never enters the edit's checkpoints.
    """

    def __init__(self, model: Model) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        # Training mode, as the edit model renders while editing: each view with the source's pose
        # refinement and appearance embedding of that view.
        self.model.train()
        self.parameters: Dict[str, Tensor] = {name: p.detach() for name, p in self.model.named_parameters()}
        self._last: Optional[Tuple[Tuple[int, int, int], Tensor]] = None

    def render(self, camera: Cameras, index: int, chunk_size: int) -> Tensor:
        """The source scene at training view ``index`` seen by ``camera``: [1, 3, H, W] in [0, 1], no graph.

        The last view rendered is kept: a view is edited for several steps in a row.
        """
        key = (index, int(camera.height.item()), int(camera.width.item()))
        if self._last is None or self._last[0] != key:
            image = render_view_image(self.model, camera, index, chunk_size)
            self._last = (key, image.permute(2, 0, 1)[None].to(camera.device))
        return self._last[1]


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
        self._optimizers: Optional[Optimizers] = None
        self._announced: Optional[Phase] = None
        if test_mode == "val":
            self.ipg = config.ipg.setup(device=device)

    def ratio_control(self) -> Tuple[str, Tuple[float, float]]:
        """The viewer's two sliders set the range the timestep annealing ends at."""
        return "t ratio end", self.config.annealing.end

    def load_source(self, checkpoint: Path) -> None:
        """Load the source field and keep a frozen copy of it (training only: evaluation never loads the source)."""
        super().load_source(checkpoint)
        self.source = FrozenSource(self.model)

    # ----------------------------------------------------------------------------------------------
    # Phases
    # ----------------------------------------------------------------------------------------------

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        self._optimizers = training_callback_attributes.optimizers
        callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self.begin_step))
        return callbacks

    def begin_step(self, step: int) -> None:
        """Before each training step: announce a new phase, and perturb the field at the first editing step."""
        phase = self.config.phases.phase(step)
        if phase is not self._announced:
            self.announce(step, phase)
        if phase is not Phase.ETA_SELECTION and not bool(self.perturbed):
            self.perturb(self.choose_eta())

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
        """theta <- (1 - eta) theta_src + eta theta_0 for the field and proposal networks (Alg. 1).

        Starts from theta_src, so whatever the eta-selection steps did to the field is discarded; the
        optimizers' state (Adam's moments and step counts) starts fresh.
        """
        if self.source is None:
            raise RuntimeError("the pnr pipeline was built without its source checkpoint; it cannot perturb the field")
        parameters = edited_parameters(self.model)
        perturb_parameters(parameters, self.source.parameters, self.fresh_initialisation(), eta)
        if self._optimizers is not None:
            for optimizer in self._optimizers.optimizers.values():
                optimizer.state.clear()  # Adam's moments and step counts start again for every parameter
        self.eta.fill_(eta)
        self.perturbed.fill_(True)
        CONSOLE.log(
            f"PnR: perturbed {len(parameters)} field and proposal-network tensors to (1 - eta) theta_src + eta theta_0 "
            f"with eta = {eta:.4f}; optimizer state reset"
        )

    def fresh_initialisation(self) -> Dict[str, Tensor]:
        """theta_0: the parameters of a new model of the same config, seeded with ``perturbation.seed``."""
        dataset = self.datamanager.train_dataset
        with seeded(self.config.perturbation.seed, self.device):
            model = self.config.model.setup(
                scene_box=dataset.scene_box,
                num_train_data=len(dataset),
                metadata=dataset.metadata,
                device=self.device,
                grad_scaler=None,
            )
        return {name: p.detach() for name, p in model.named_parameters()}

    # ----------------------------------------------------------------------------------------------
    # One step
    # ----------------------------------------------------------------------------------------------

    def guidance_loss(self, step: int, index: int, render: Tensor, **guidance_kwargs):
        """The distillation loss in the released code's units: the surrogate summed over the latent
        (gradient grad / B) instead of averaged (grad / numel), the scale the IPG weights are set for."""
        loss, output, metrics = super().guidance_loss(step, index, render, **guidance_kwargs)
        return loss * output.grad.numel(), output, metrics

    def get_train_loss_dict(self, step: int):
        plan = self.config.phases
        phase = plan.phase(step)
        index = self.datamanager.edit_view(step)
        camera = self.guidance_camera(index)
        loss_dict: Dict[str, Tensor] = {}
        # Before the guidance render: the proposal networks take their gradient on the first forward of a step.
        if self.config.interlevel_num_rays > 0:
            loss_dict["interlevel_loss"] = self.proposal_loss(camera, index)
        render = self.guidance_view(index, camera)
        t_range = self.config.annealing.at(plan, step, end=self.controls.ratio_range)
        guidance, output, metrics = self.guidance_loss(step, index, render, t_ratio_range=t_range)
        loss_dict["guidance_loss"] = guidance
        metrics.update({"phase": int(phase), "t_ratio_min": t_range[0], "t_ratio_max": t_range[1]})
        if phase is Phase.ETA_SELECTION:
            value = selection_loss(output.grad)
            self.eta_selection_losses[step] = value
            metrics["eta_selection_loss"] = value
        else:
            metrics["eta"] = float(self.eta)
        if phase is Phase.REVISE:
            loss_dict.update(self.revise_losses(step, index, camera, render, metrics))
        status: Dict[str, Any] = {"phase": phase.label}
        if "eta" in metrics:
            status["eta"] = metrics["eta"]
        self.report(step, {**status, "t ratio": "{:.2f} to {:.2f}".format(*t_range), "view": index})
        return {"rgb": render}, loss_dict, metrics

    def proposal_loss(self, camera: Cameras, index: int) -> Tensor:
        """nerfacto's interlevel loss on a random subset of the view's rays: it trains the proposal networks,
        which the rendered colours do not reach."""
        rays = view_rays(camera, index)
        chosen = torch.randperm(len(rays), device=rays.origins.device)[: self.config.interlevel_num_rays]
        outputs = self.model(rays[chosen])
        return self.model.config.interlevel_loss_mult * interlevel_loss(
            outputs["weights_list"], outputs["ray_samples_list"]
        )

    def revise_losses(
        self, step: int, index: int, camera: Cameras, render: Tensor, metrics: Dict[str, Any]
    ) -> Dict[str, Tensor]:
        """The identity-preserving terms: L1 and LPIPS to the source scene's render of the same view, weighted."""
        plan = self.config.phases
        l1_mult, lpips_mult = self.config.ipg.weights(plan.step_in_phase(step), plan.revise_steps)
        metrics.update({"ipg_l1_mult": l1_mult, "ipg_lpips_mult": lpips_mult})
        if l1_mult == 0 and lpips_mult == 0:
            return {}
        assert self.source is not None and self.ipg is not None, "revise steps run in training only"
        terms = self.ipg(render, self.source.render(camera, index, self.config.ray_chunk_size))
        metrics.update({"ipg_l1": terms["l1"].detach(), "ipg_lpips": terms["lpips"].detach()})
        return {"ipg_l1_loss": l1_mult * terms["l1"], "ipg_lpips_loss": lpips_mult * terms["lpips"]}
