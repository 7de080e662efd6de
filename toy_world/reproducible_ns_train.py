"""``ns-train`` whose ray-sampling processes are seeded, so that a tiny source trained twice on a machine is the same.

nerfstudio's ``ParallelDataManager`` (nerfacto's) samples the training rays in processes started with ``spawn``, and
torch seeds a spawned process's generator at random: ``--machine.seed`` reaches the field's initialisation and the
ray samples along each ray, not which pixels a batch holds. Two 1-step runs of the same command differed by twice the
learning rate (Adam's step taken with opposite signs), and a 400-step source's edit turned out differently (one
fresh source in six drifted under the same pds edit, docs/toy_world.md). This launcher seeds each sampling process
from the trainer's seed (``--machine.seed`` + rank, as nerfstudio seeds the trainer) and then runs nerfstudio's own
``ns-train`` entry point unchanged: ``python toy_world/reproducible_ns_train.py nerfacto --data ...`` (run by its path, as
:func:`toy_world.runs.train_tiny_nerfacto` does, so that the spawned processes import it as their main module).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from nerfstudio.data.datamanagers import parallel_datamanager
from nerfstudio.scripts.train import entrypoint

WORKER_SEED_OFFSET = 7919
"""Keeps a sampling process's draws apart from the trainer's, which start from the same seed."""


class SeededDataProcessor(parallel_datamanager.DataProcessor):
    """nerfstudio's ray-sampling process, its generators seeded from the trainer's seed at the time it is created."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = torch.initial_seed() + WORKER_SEED_OFFSET  # the trainer has just been seeded: --machine.seed + rank

    def run(self) -> None:
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)
        super().run()


parallel_datamanager.DataProcessor = SeededDataProcessor  # type: ignore[misc]  # what ParallelDataManager.setup_train starts

if __name__ == "__main__":
    entrypoint()
