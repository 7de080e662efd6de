"""The phases of a Perturb-and-Revise edit and its schedules, all as values of the training step.

Nothing here holds state: a run resumed at step s is in the phase, at the timestep range and with
the loss weights that step s has.

    steps [0, K)            eta selection (only with eta auto): K editing steps, then discarded
    steps [K, K + E)        editing from the perturbed field, timesteps annealed
    steps [K + E, ...)      revise: editing plus the identity-preserving gradient (IPG)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Tuple

from pds_nerfstudio.common.errors import InputError, check_ratio_range

TRange = Tuple[float, float]


class Phase(enum.IntEnum):
    """The phases of a pnr edit, in order."""

    ETA_SELECTION = 0
    EDIT = 1
    REVISE = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class PhasePlan:
    """The step counts of the phases; steps past the last phase stay in the revise phase."""

    eta_selection_steps: int
    edit_steps: int
    revise_steps: int

    @property
    def total_steps(self) -> int:
        return self.eta_selection_steps + self.edit_steps + self.revise_steps

    def start(self, phase: Phase) -> int:
        """First step of ``phase``."""
        return (0, self.eta_selection_steps, self.eta_selection_steps + self.edit_steps)[phase]

    def num_steps(self, phase: Phase) -> int:
        return (self.eta_selection_steps, self.edit_steps, self.revise_steps)[phase]

    def phase(self, step: int) -> Phase:
        """The phase that ``step`` belongs to."""
        if step < self.start(Phase.EDIT):
            return Phase.ETA_SELECTION
        if step < self.start(Phase.REVISE):
            return Phase.EDIT
        return Phase.REVISE

    def step_in_phase(self, step: int) -> int:
        """How many steps of its phase came before ``step``."""
        return step - self.start(self.phase(step))

    def describe(self, phase: Phase) -> str:
        start = self.start(phase)
        return f"{phase.label} (steps {start} to {start + self.num_steps(phase) - 1})"


def linear_ramp(step: int, end_step: float) -> float:
    """0 at step 0, rising linearly to 1 at ``end_step`` and staying there."""
    if end_step <= 0:
        return 1.0
    return min(max(step / end_step, 0.0), 1.0)


@dataclass
class TimestepAnnealingConfig:
    """Timestep annealing (paper Sec. 4.3): the t ratio range moves linearly from ``start`` to ``end``.

    Replaces --pipeline.guidance.t-ratio-range, a fraction of the DDIM grid as there.
    """

    start: TRange = (0.75, 0.75)
    """t ratio range (min, max) at the first editing step; the eta-selection steps always use it (released code),
    also with --pipeline.annealing.enabled False."""
    end: TRange = (0.02, 0.40)
    """t ratio range (min, max) reached at end-fraction of the editing steps, and kept after; the viewer's "t ratio end" sliders change it while editing."""
    end_fraction: float = 0.8
    """Fraction of the editing steps over which the range moves from start to end (released code: 0.8)."""
    restart_at_revise: bool = True
    """Anneal again over the revise steps, as the released code's IPG stage does; False keeps the end range."""
    enabled: bool = True
    """False: no annealing; t is drawn from --pipeline.guidance.t-ratio-range at every step (real-scenes protocol)."""

    def check(self) -> None:
        check_ratio_range("--pipeline.annealing.start", self.start)  # the eta-selection steps' range, always
        if not self.enabled:
            return
        check_ratio_range("--pipeline.annealing.end", self.end)
        if not 0.0 < self.end_fraction <= 1.0:
            raise InputError(f"--pipeline.annealing.end-fraction {self.end_fraction}: need a number in (0, 1]")

    def t_ratio_range(self, step: int, num_steps: int, end: Optional[TRange] = None) -> TRange:
        """The range at ``step`` of an annealed phase of ``num_steps`` steps; ``end`` overrides the configured end."""
        end = end or self.end
        w = linear_ramp(step, self.end_fraction * num_steps)
        return (self.start[0] + w * (end[0] - self.start[0]), self.start[1] + w * (end[1] - self.start[1]))

    def at(self, plan: PhasePlan, step: int, end: Optional[TRange] = None) -> Optional[TRange]:
        """The range at training ``step``: ``start`` while eta is selected (annealing on or off: Alg. 2's losses are
        taken at a fixed t), annealed over the edit phase and, with ``restart_at_revise``, again over the revise
        phase; None (the guidance's own range) in the edit and revise phases when annealing is off."""
        phase = plan.phase(step)
        if phase is Phase.ETA_SELECTION:
            return self.start
        if not self.enabled:
            return None
        if phase is Phase.REVISE and not self.restart_at_revise:
            return end or self.end
        return self.t_ratio_range(plan.step_in_phase(step), plan.num_steps(phase), end)


def ipg_weight(initial: float, step: int, num_steps: int, decay_fraction: float) -> float:
    """An IPG loss weight at ``step`` of the revise phase: ``initial`` decaying linearly to 0 at
    ``decay_fraction * num_steps`` (released code: by half of the revise steps)."""
    return initial * (1.0 - linear_ramp(step, decay_fraction * num_steps))
