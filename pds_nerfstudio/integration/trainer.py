"""``ns-train`` configuration of the editing methods: ``--load-dir`` names the run to edit. The trainer (checkpoints
whole or not at all, gradients averaged over processes, a total number of steps for a resumed edit), its config that
resolves the source run before any heavy work, and :func:`edit_method`, the method specification every editing method
shares."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Type

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.plugins.types import MethodSpecification
from nerfstudio.utils.rich_utils import CONSOLE

from pds_nerfstudio.common.checkpoints import check_checkpoint, is_whole_checkpoint
from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags, merge_typed
from pds_nerfstudio.integration.pipeline import EditPipelineConfig
from pds_nerfstudio.integration.source_run import checkpoint_step, newest_checkpoint, resolve_load_dir
from pds_nerfstudio.parallel import collectives
from pds_nerfstudio.scenes.representations import Nerfacto, Splatfacto


def _counts_steps_from_the_resumed_step() -> bool:
    """nerfstudio 1.1.5 runs ``max_num_iterations`` more steps after a resumed checkpoint; its unreleased main
    (nerfstudio #3526) stops at step ``max_num_iterations``. Read from the training loop itself."""
    return "self._start_step + num_iterations" in inspect.getsource(Trainer.train)


class EditTrainer(Trainer):
    """nerfstudio's trainer, with an edit's ``--max-num-iterations`` as its total (a resumed edit ends there),
    checkpoints that appear whole or not at all (a run killed while saving can be resumed), and gradients averaged
    over the processes of a distributed edit (:mod:`pds_nerfstudio.parallel.collectives`)."""

    config: "EditTrainerConfig"

    def setup(self, test_mode="val") -> None:
        super().setup(test_mode)
        self.pipeline.noise_seed = self.config.machine.seed

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimizers, averaging the gradients over the ranks before each step."""
        return collectives.GradientAveragingOptimizers(self.config.optimizers.copy(), self.pipeline.get_param_groups())

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's save, into a staging folder beside ``nerfstudio_models``, then moved in by one rename."""
        if collectives.rank() != 0:  # one set of outputs: rank 0's
            return
        final_dir = self.checkpoint_dir
        staging = final_dir.with_name(final_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)  # what a save that was killed left
        self.checkpoint_dir = staging
        try:
            super().save_checkpoint(step)
        finally:
            self.checkpoint_dir = final_dir
        final_dir.mkdir(parents=True, exist_ok=True)
        saved = staging / f"step-{step:09d}.ckpt"
        os.replace(saved, final_dir / saved.name)
        staging.rmdir()
        if self.config.save_only_latest_checkpoint:
            for older in final_dir.glob("step-*.ckpt"):
                if older.name != saved.name:
                    older.unlink()

    def train(self) -> None:
        total = self.config.max_num_iterations
        if self._start_step > 0:
            CONSOLE.log(f"Resuming the edit at step {self._start_step} of {total}")
            if _counts_steps_from_the_resumed_step():
                self.config.max_num_iterations = total - self._start_step
        try:
            super().train()
        except InputError as error:  # found only once training started (e.g. a model that does not load)
            raise SystemExit(f"error: {error}") from None
        finally:
            self.config.max_num_iterations = total


@dataclass
class EditTrainerConfig(TrainerConfig):
    """A TrainerConfig whose ``--load-dir`` is the source run to edit, at any level of its output folder.

    A ``--load-dir`` holding only runs of this same method resumes the newest of them instead, up to the
    same total number of steps (``--max-num-iterations`` counts the whole edit, resumed or not).
    """

    _target: Type = field(default_factory=lambda: EditTrainer)
    pipeline: EditPipelineConfig = field(default_factory=EditPipelineConfig)
    """The editing pipeline."""

    def set_timestamp(self) -> None:
        """``ns-train`` calls this first on the parsed config: the source run is resolved here, so the
        printed and saved config.yml already name it, and bad input stops before any heavy work."""
        try:
            self.resolve_source(TypedFlags.from_command_line())
        except InputError as error:
            raise SystemExit(f"error: {error}") from None
        super().set_timestamp()

    def resolve_source(self, typed: TypedFlags = TypedFlags()) -> None:
        """Complete this config from ``--load-dir``; the flags in ``typed`` (what was typed on the command line,
        whatever its value) win over the source's and the resumed run's values. Raises InputError on bad input."""
        if "pipeline.model.prompt" in typed:
            raise InputError(
                "--prompt (--pipeline.model.prompt) is not read by an edit: give the target prompt as "
                '--pipeline.tgt-prompt "a photo of a polar bear"'
            )
        if self.mixed_precision:
            raise InputError(
                "--mixed-precision True: edits run in float32, as the official releases do (the gradient through the "
                "VAE is in float16's subnormal range); --pipeline.guidance.dtype float16 halves the UNet instead"
            )
        already_resolved = self.load_dir is None and self.pipeline.source_checkpoint is not None  # --load-config
        if not already_resolved:
            run = resolve_load_dir(
                self.load_dir, self.method_name, self.pipeline.accepts_source, self.pipeline.source_description
            )
            assert run.checkpoint is not None
            pipeline_flags = typed.under("pipeline")
            if run.method_name == self.method_name:  # resume this edit where it stopped
                self.pipeline = self.pipeline.resumed_from(run, pipeline_flags)
                self.load_dir = run.checkpoint.parent
                self.choose_whole_checkpoint()
                if "max_num_iterations" not in typed:  # the run's total
                    self.max_num_iterations = self.pipeline.resumed_max_num_iterations(run)
                optimizers = run.config.optimizers
            else:  # start editing the source run
                check_checkpoint(run.checkpoint)
                self.pipeline = self.pipeline.with_source(run, pipeline_flags)
                self.load_dir = None
                if "max_num_iterations" not in typed:
                    self.max_num_iterations = self.pipeline.default_max_num_iterations(self.max_num_iterations)
                optimizers = self.pipeline.default_optimizers()
            self.optimizers = self.edit_optimizers(optimizers, typed.under("optimizers"))
            if getattr(self.pipeline.model, "grid_param_group", False) and "field_grid" not in self.optimizers:
                raise InputError(
                    "--pipeline.model.grid-param-group True: the field_grid optimizer group exists only in pnr with a "
                    "multi-view prior (the released rates); leave it False here"
                )
            self.pipeline = self.pipeline.with_typed_controls(pipeline_flags)
            self.pipeline.check_flags(pipeline_flags)
        self.pipeline.check(self.machine.device_type)
        collectives.check_devices(self.machine.device_type, self.machine.num_devices, self.machine.num_machines)
        self.pipeline.check_parallel(collectives.planned_world_size(self.machine))
        if self.max_num_iterations is not None:
            self.check_steps_left()

    def edit_optimizers(self, base: Dict[str, Any], typed: TypedFlags) -> Dict[str, Any]:
        """The edited scene's optimizer groups (``base``), with the ``--optimizers.*`` flags typed; a typed group of
        the other representation is an error."""
        representation = self.pipeline.representation
        foreign = sorted(group for group in self.optimizers if group not in base and typed.any_under(group))
        if foreign:
            raise InputError(
                f"--optimizers.{foreign[0].replace('_', '-')}.* sets a parameter group this {representation.name} "
                f"edit does not have; its groups are {', '.join(base)} (--optimizers.<group>.optimizer.lr ...)"
            )
        typed_groups = {group: self.optimizers[group] for group in base if group in self.optimizers}
        merged = merge_typed(typed_groups, dict(base), typed)
        for group, settings in merged.items():  # the edit's optimizer class (AdamW, say), with the typed values set on it
            optimizer_flags = typed.under(group).under("optimizer").paths
            if optimizer_flags and type(settings["optimizer"]) is not type(base[group]["optimizer"]):
                typed_values = {name: getattr(settings["optimizer"], name) for name in optimizer_flags}
                merged[group] = {**settings, "optimizer": dataclasses.replace(base[group]["optimizer"], **typed_values)}
        for group, settings in merged.items():
            if settings["optimizer"].lr <= 0:
                raise InputError(
                    f"--optimizers.{group.replace('_', '-')}.optimizer.lr {settings['optimizer'].lr:g}: a learning rate "
                    "must be above 0 (nerfstudio's schedulers divide by it, which turns the scene to NaN)"
                )
        return merged

    def choose_whole_checkpoint(self) -> None:
        """Resume from the newest whole checkpoint: a run killed while saving leaves its newest one cut short
        (nerfstudio deletes the older ones only after a save completes)."""
        if self.load_step is not None:
            check_checkpoint(self.load_dir / f"step-{self.load_step:09d}.ckpt")
            return
        checkpoints = sorted(self.load_dir.glob("step-*.ckpt"), key=checkpoint_step, reverse=True)
        whole = next((path for path in checkpoints if is_whole_checkpoint(path)), None)
        if whole is None:
            check_checkpoint(checkpoints[0])  # raises: no whole checkpoint to resume from
        elif whole != checkpoints[0]:
            CONSOLE.log(f"{checkpoints[0]} is incomplete (the run stopped while saving it); resuming from {whole.name}")
            self.load_step = checkpoint_step(whole)

    def completed_steps(self) -> int:
        """Steps a resumed run has done already (0 for a new edit): the step of its checkpoint, plus one."""
        if self.load_dir is None:
            return 0
        if self.load_step is not None:
            return self.load_step + 1
        checkpoint = newest_checkpoint(self.load_dir)
        return 0 if checkpoint is None else checkpoint_step(checkpoint) + 1

    def check_steps_left(self) -> None:
        if self.max_num_iterations <= 0:
            raise InputError(f"--max-num-iterations {self.max_num_iterations}: need a positive number of steps")
        done = self.completed_steps()
        if done >= self.max_num_iterations:
            raise InputError(
                f"the {self.method_name} run in {self.load_dir} has done {done} of --max-num-iterations "
                f"{self.max_num_iterations} steps (the edit's total); pass a larger --max-num-iterations to edit further"
            )


def edit_method(
    method_name: str,
    description: str,
    pipeline: EditPipelineConfig,
    max_num_iterations: Optional[int],
    steps_per_save: int = 1000,
    trainer_config: Type[EditTrainerConfig] = EditTrainerConfig,
    optimizers: Optional[Dict[str, Any]] = None,
) -> MethodSpecification:
    """An editing method: nerfstudio's trainer with the settings all our methods share; ``optimizers``: parameter
    groups only some of its edits have (their defaults), beside both representations' own."""
    return MethodSpecification(
        config=trainer_config(
            method_name=method_name,
            max_num_iterations=max_num_iterations,  # type: ignore[arg-type]
            steps_per_save=steps_per_save,
            # 0: never. nerfstudio's evaluation scores the scene against the unedited source's eval images, which
            # means nothing for an edit; pds-eval measures an edit, and renders are saved at the end.
            steps_per_eval_batch=0,
            steps_per_eval_image=0,
            steps_per_eval_all_images=0,
            save_only_latest_checkpoint=True,
            mixed_precision=False,
            pipeline=pipeline,
            # both representations' groups, so that --optimizers.<group>.* exists for each; an edit keeps its scene's
            optimizers={**Nerfacto().optimizers(), **Splatfacto().optimizers(), **(optimizers or {})},
            viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
            vis="viewer",
        ),
        description=description,
    )
