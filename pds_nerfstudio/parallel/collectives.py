"""Edits on several devices with torch.distributed: one process per device, each guiding its own views.

Each process renders and guides its own ``--pipeline.views-per-step`` views of a step (with its own noise), and
the gradients are averaged over the processes before the optimizer step (:class:`GradientAveragingOptimizers`),
so every process keeps the same scene. The edit step renders through the model directly, not through a
``DistributedDataParallel`` forward (which is what synchronises DDP's gradients), hence the explicit average.
Only rank 0 writes checkpoints, renders and events and serves the viewer (nerfstudio's trainer and writer
already restrict those to the main process); the viewer's values reach the other ranks every step.

Two ways to start it:

- ``ns-train pds ... --machine.num-devices K``: nerfstudio's own launcher (one machine, K CUDA GPUs, NCCL).
- ``torchrun --nproc-per-node K -m pds_nerfstudio.cli.torchrun pds ...``: the same command line under torchrun
  (clusters, several machines, or CPU processes with the gloo backend: ``--machine.device-type cpu``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, List, Sequence

import torch
import torch.distributed as dist
from nerfstudio.engine.optimizers import Optimizers
from torch import Tensor

from pds_nerfstudio.common.errors import InputError

TIMEOUT = timedelta(minutes=30)
"""How long a process waits for the others (nerfstudio's launcher's value): a run paused in the viewer for longer
stops with a timeout on the other ranks."""


def world_size() -> int:
    """Processes editing together (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank among them (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def planned_world_size(machine: Any) -> int:
    """The processes an edit about to start will run in: torchrun's WORLD_SIZE, or nerfstudio's launcher's devices."""
    return int(os.environ.get("WORLD_SIZE", machine.num_devices * machine.num_machines))


def broadcast(value: Any) -> Any:
    """``value`` as rank 0 has it, on every rank (any picklable object); ``value`` itself on one process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(items: List[Any]) -> List[Any]:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank; ``items`` on one process."""
    if world_size() == 1:
        return list(items)
    gathered: List[Any] = [None] * world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for rank_items in gathered for item in rank_items]


def all_reduce_sum(values: Tensor) -> Tensor:
    """The sum of ``values`` over the ranks, on every rank (``values`` itself on one process)."""
    if world_size() == 1:
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def average_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient with its mean over the ranks, in one all-reduce.

    A parameter without a gradient on some ranks counts as a zero gradient there; one without a gradient on every
    rank keeps none (the optimizer then skips it, as on one device).
    """
    if world_size() == 1 or not parameters:
        return
    device = parameters[0].device
    has_grad = all_reduce_sum(torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=device))
    used = [p for p, count in zip(parameters, has_grad.tolist()) if count > 0]
    if not used:
        return
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    flat = all_reduce_sum(flat) / world_size()
    offset = 0
    for p in used:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


class GradientAveragingOptimizers(Optimizers):
    """nerfstudio's optimizers, averaging every gradient over the ranks before they step (on one process: the same)."""

    def _stepped_parameters(self, groups: Sequence[str]) -> List[torch.nn.Parameter]:
        """The tensors the optimizers of ``groups`` hold now (culling Gaussians replaces them in the optimizers)."""
        return [p for group in groups for param_group in self.optimizers[group].param_groups for p in param_group["params"]]

    def optimizer_scaler_step_all(self, grad_scaler) -> None:
        average_gradients(self._stepped_parameters(list(self.parameters)))
        super().optimizer_scaler_step_all(grad_scaler)

    def optimizer_scaler_step_some(self, grad_scaler, param_groups: List[str]) -> None:
        average_gradients(self._stepped_parameters(param_groups))
        super().optimizer_scaler_step_some(grad_scaler, param_groups)

    def optimizer_step_all(self) -> None:
        average_gradients(self._stepped_parameters(list(self.parameters)))
        super().optimizer_step_all()


def check_devices(device_type: str, num_devices: int, num_machines: int) -> None:
    """``--machine.num-devices`` against this machine, before anything heavy; raises InputError."""
    if num_devices < 1:
        raise InputError(f"--machine.num-devices {num_devices}: need 1 or more")
    if num_devices * num_machines == 1:
        return
    if device_type != "cuda":
        raise InputError(
            f"--machine.num-devices {num_devices} starts nerfstudio's launcher, which needs CUDA GPUs; on "
            f"{device_type} processes run an edit under torchrun: torchrun --nproc-per-node {num_devices} -m "
            "pds_nerfstudio.cli.torchrun <method> ... --machine.device-type cpu"
        )
    available = torch.cuda.device_count()
    if num_devices > available:
        raise InputError(f"--machine.num-devices {num_devices}: this machine has {available} CUDA GPU(s)")
