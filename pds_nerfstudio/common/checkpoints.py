"""Loading nerfstudio checkpoints under torch's safe (weights_only) unpickler.

torch >= 2.6 loads with ``weights_only=True``. nerfstudio 1.1.5 checkpoints also hold numpy scalars
(learning-rate scheduler state), so plain ``torch.load`` refuses them with "Weights only load failed".
Instead of switching the safety off, the few numpy types such checkpoints need (numpy scalars and
dtypes: data, never code) are added to torch's allowlist. This covers our own loading of the source
run and nerfstudio's own loading (resuming with ``--load-dir``, ``ns-export``, ``ns-render``,
``ns-viewer``), since every one of those builds an edit pipeline before it reads a checkpoint.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from pds_nerfstudio.common.errors import InputError


def _numpy_checkpoint_globals() -> List[Any]:
    """numpy's scalar reconstructor (under its numpy 1.x and 2.x module names), dtype and the dtype classes."""
    scalar = np.core.multiarray.scalar if hasattr(np, "core") else np._core.multiarray.scalar  # type: ignore[attr-defined]
    allowed: List[Any] = [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def allow_nerfstudio_checkpoints() -> None:
    """Allow torch's weights_only unpickler to read the numpy values found in nerfstudio checkpoints."""
    torch.serialization.add_safe_globals(_numpy_checkpoint_globals())


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Load a nerfstudio checkpoint on the CPU with the safe unpickler."""
    allow_nerfstudio_checkpoints()
    return torch.load(path, map_location="cpu", weights_only=True)


def is_whole_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a whole file saved by ``torch.save`` (a checkpoint, a ``.bin`` weight file): torch
    saves a zip archive, whose directory is written last, so a file cut short (a copy, or a save that was
    killed) has none."""
    try:
        with zipfile.ZipFile(path):
            return True
    except (zipfile.BadZipFile, OSError):
        return False


def check_checkpoint(path: Path) -> None:
    """Raise InputError unless ``path`` is a whole checkpoint file."""
    if not is_whole_checkpoint(path):
        raise InputError(f"the checkpoint {path} is damaged or incomplete; copy the run again from where it was made")
