"""Finding the nerfstudio run that ``--load-dir`` names, at any level of its output folder.

``outputs/bear``, ``outputs/bear/nerfacto``, ``outputs/bear/nerfacto/<timestamp>`` and its
``nerfstudio_models`` folder all name the same run: the newest one under the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import yaml
from nerfstudio.engine.trainer import TrainerConfig

from pds_nerfstudio.common.errors import InputError

CONFIG_NAME = "config.yml"
MAX_SEARCH_DEPTH = 3
"""How many folder levels below --load-dir are searched for runs (experiment/method/timestamp)."""


@dataclass(frozen=True)
class Run:
    """A nerfstudio training run on disk: its saved config and its newest checkpoint."""

    config_path: Path
    config: TrainerConfig
    checkpoint: Optional[Path]

    @property
    def run_dir(self) -> Path:
        return self.config_path.parent

    @property
    def method_name(self) -> str:
        return self.config.method_name

    def describe(self) -> str:
        return f"{self.method_name} run {self.run_dir}"


def checkpoint_step(path: Path) -> int:
    """The step of a nerfstudio checkpoint file ``step-<step>.ckpt``."""
    return int(path.stem[len("step-") :])


def newest_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """The checkpoint with the highest step in a nerfstudio_models folder, or None."""
    checkpoints = [p for p in checkpoint_dir.glob("step-*.ckpt") if p.stem[len("step-") :].isdigit()]
    return max(checkpoints, key=checkpoint_step, default=None)


def read_run(config_path: Path) -> Run:
    """Read a run's config.yml (nerfstudio's own yaml format) and find its newest checkpoint."""
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except Exception as error:  # a config of a method whose plugin is not installed, or a broken file
        raise InputError(f"cannot read {config_path}: {error}") from None
    if not isinstance(config, TrainerConfig):
        raise InputError(f"{config_path} is not a nerfstudio training config")
    checkpoint = newest_checkpoint(config_path.parent / config.relative_model_dir)
    return Run(config_path=config_path, config=config, checkpoint=checkpoint)


def find_runs(load_dir: Path) -> List[Run]:
    """Every run at or below ``load_dir`` (a run folder, its nerfstudio_models or config.yml, or a folder
    up to three levels above runs, e.g. outputs/<experiment>)."""
    if load_dir.is_file():
        load_dir = load_dir.parent
    if load_dir.name == "nerfstudio_models" or any(load_dir.glob("step-*.ckpt")):
        load_dir = load_dir.parent
    paths: List[Path] = []
    for depth in range(MAX_SEARCH_DEPTH + 1):
        paths += sorted(load_dir.glob("/".join(["*"] * depth + [CONFIG_NAME])))
    return [read_run(path) for path in paths]


def newest_with_checkpoint(runs: List[Run]) -> Run:
    """The newest of ``runs`` (by checkpoint time) that has a checkpoint; raises InputError if none has."""

    def newest(candidates: List[Run]) -> Run:
        return max(candidates, key=lambda run: (run.checkpoint.stat().st_mtime if run.checkpoint else 0.0, str(run.run_dir)))

    with_checkpoint = [run for run in runs if run.checkpoint is not None]
    if not with_checkpoint:
        run = newest(runs)
        raise InputError(
            f"{run.describe()} has no checkpoint in {run.run_dir / run.config.relative_model_dir}; "
            "let it train until it saves one (every --steps-per-save steps and at the end)"
        )
    return newest(with_checkpoint)


def find_run(path: Path, accepts: Callable[[TrainerConfig], bool], description: str, flag: str = "") -> Run:
    """The newest run with a checkpoint under ``path`` (any level of an output folder) that ``accepts``.

    ``flag`` is the option that gave ``path``, if any (for messages). Raises InputError.
    """
    given = f"{flag} {path}" if flag else str(path)
    if not path.exists():
        raise InputError(f"{given} does not exist")
    runs = [run for run in find_runs(path) if accepts(run.config)]
    if not runs:
        raise InputError(f"{given} holds no run to use here; expected {description}")
    return newest_with_checkpoint(runs)


def resolve_load_dir(
    load_dir: Optional[Path],
    method_name: str,
    accepts_source: Callable[[TrainerConfig], bool],
    source_description: str,
) -> Run:
    """Resolve ``--load-dir`` to the run an edit method starts from.

    A folder holding only runs of ``method_name`` itself resumes the newest of them; otherwise the
    newest run that ``accepts_source`` is the source to edit.

    Raises:
        InputError: the folder is missing or empty, holds no usable run, or the run has no checkpoint.
    """
    if load_dir is None:
        raise InputError(
            f"{method_name} edits an existing run: pass --load-dir with the output folder of {source_description}, "
            "e.g. --load-dir outputs/bear"
        )
    if not load_dir.exists():
        raise InputError(f"--load-dir {load_dir} does not exist")
    runs = find_runs(load_dir)
    if not runs:
        raise InputError(
            f"--load-dir {load_dir} holds no nerfstudio run ({CONFIG_NAME} not found); "
            f"pass the output folder of {source_description}, e.g. outputs/bear"
        )
    if all(run.method_name == method_name for run in runs):
        candidates = runs
    else:
        candidates = [run for run in runs if run.method_name != method_name and accepts_source(run.config)]
        if not candidates:
            found = ", ".join(sorted({run.method_name for run in runs}))
            raise InputError(f"--load-dir {load_dir} holds {found} runs, but {method_name} edits {source_description}")
    return newest_with_checkpoint(candidates)
