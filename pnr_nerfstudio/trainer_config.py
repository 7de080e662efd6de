"""``ns-train pnr`` configuration: as for ``pds``, plus a default step count that follows the phases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.integration.trainer import EditTrainerConfig
from pnr_nerfstudio.pipeline import PnRPipelineConfig


@dataclass
class PnRTrainerConfig(EditTrainerConfig):
    """An EditTrainerConfig whose number of steps defaults to the total of the edit's phases."""

    pipeline: PnRPipelineConfig = field(default_factory=PnRPipelineConfig)
    """The Perturb-and-Revise pipeline."""
    max_num_iterations: Optional[int] = None  # type: ignore[assignment]
    """The edit's total number of steps; default: all phases (eta selection + edit + revise). A resumed run ends there too."""

    def resolve_source(self, typed: TypedFlags = TypedFlags()) -> None:
        self.pipeline = self.pipeline.with_protocol(typed.under("pipeline"))
        super().resolve_source(typed)
        if self.max_num_iterations is None:
            self.max_num_iterations = self.pipeline.phases.total_steps
            self.check_steps_left()
