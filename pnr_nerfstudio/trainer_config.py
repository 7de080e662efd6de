"""``ns-train pnr`` configuration: as for ``pds``, plus a default step count that follows the phases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pds_nerfstudio.errors import InputError
from pds_nerfstudio.source_run import newest_checkpoint
from pds_nerfstudio.trainer_config import EditTrainerConfig
from pnr_nerfstudio.pipeline import PnRPipelineConfig


@dataclass
class PnRTrainerConfig(EditTrainerConfig):
    """An EditTrainerConfig whose number of steps defaults to what is left of the edit's phases."""

    pipeline: PnRPipelineConfig = field(default_factory=PnRPipelineConfig)
    """The Perturb-and-Revise pipeline."""
    max_num_iterations: Optional[int] = None  # type: ignore[assignment]
    """Steps to run; default: all phases (eta selection + edit + revise), or the rest of them when resuming."""

    def resolve_source(self) -> None:
        super().resolve_source()
        if self.max_num_iterations is None:
            total = self.pipeline.phases.total_steps
            done = self.completed_steps()
            if done >= total:
                raise InputError(
                    f"the pnr run in {self.load_dir} has done all {total} steps of its phases; "
                    "pass --max-num-iterations N to edit it further"
                )
            self.max_num_iterations = total - done

    def completed_steps(self) -> int:
        """Steps a resumed run has done already (0 for a new edit): the step of its checkpoint, plus one."""
        if self.load_dir is None:
            return 0
        if self.load_step is not None:
            return self.load_step + 1
        checkpoint = newest_checkpoint(self.load_dir)
        return 0 if checkpoint is None else int(checkpoint.stem[len("step-") :]) + 1
