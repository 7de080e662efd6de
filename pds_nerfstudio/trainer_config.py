"""``ns-train`` configuration of the editing methods: ``--load-dir`` names the run to edit."""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.engine.trainer import TrainerConfig

from pds_nerfstudio.errors import InputError
from pds_nerfstudio.pipeline import EditPipelineConfig
from pds_nerfstudio.source_run import resolve_load_dir


@dataclass
class EditTrainerConfig(TrainerConfig):
    """A TrainerConfig whose ``--load-dir`` is the source run to edit, at any level of its output folder.

    A ``--load-dir`` holding only runs of this same method resumes the newest of them instead.
    """

    pipeline: EditPipelineConfig = field(default_factory=EditPipelineConfig)
    """The editing pipeline."""

    def set_timestamp(self) -> None:
        """``ns-train`` calls this first on the parsed config: the source run is resolved here, so the
        printed and saved config.yml already name it, and bad input stops before any heavy work."""
        try:
            self.resolve_source()
        except InputError as error:
            raise SystemExit(f"error: {error}") from None
        super().set_timestamp()

    def resolve_source(self) -> None:
        """Complete this config from ``--load-dir``; raises InputError on bad input."""
        from nerfstudio.configs.method_configs import all_methods

        already_resolved = self.load_dir is None and self.pipeline.source_checkpoint is not None  # --load-config
        if not already_resolved:
            run = resolve_load_dir(
                self.load_dir, self.method_name, self.pipeline.accepts_source, self.pipeline.source_description
            )
            default = all_methods[self.method_name].pipeline
            if run.method_name == self.method_name:  # resume this edit where it stopped
                self.pipeline = self.pipeline.resumed_from(run, default)
                self.load_dir = run.checkpoint.parent if run.checkpoint else None
            else:  # start editing the source run
                self.pipeline = self.pipeline.with_source(run, default)
                self.load_dir = None
        self.pipeline.check(self.machine.device_type)
