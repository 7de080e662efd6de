"""Edits on several devices with torch.distributed: one process per device, each guiding its own views.

Each process renders and guides its own ``--pipeline.views-per-step`` views of a step (with its own noise), and
the gradients are averaged over the processes before the optimizer step (:class:`GradientAveragingOptimizers`),
so every process keeps the same scene. The edit step renders through the model directly, not through a
``DistributedDataParallel`` forward (which is what synchronises DDP's gradients), hence the explicit average.
Only rank 0 writes checkpoints, renders and events and serves the viewer (nerfstudio's trainer and writer
already restrict those to the main process); the viewer's values reach the other ranks every step.

Two ways to start it:

- ``ns-train pds ... --machine.num-devices K``: nerfstudio's own launcher (one machine, K CUDA GPUs, NCCL).
- ``torchrun --nproc-per-node K -m pds_nerfstudio.distributed pds ...``: the same command line under torchrun
  (clusters, several machines, or CPU processes with the gloo backend: ``--machine.device-type cpu``).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from nerfstudio.engine.optimizers import Optimizers
from torch import Tensor

from pds_nerfstudio.errors import InputError

BACKENDS = ("gloo", "nccl")
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
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
            "pds_nerfstudio.distributed <method> ... --machine.device-type cpu"
        )
    available = torch.cuda.device_count()
    if num_devices > available:
        raise InputError(f"--machine.num-devices {num_devices}: this machine has {available} CUDA GPU(s)")


def choose_backend(requested: Optional[str], device_type: str) -> str:
    """The process group's backend: as requested, else nccl for CUDA and gloo otherwise; raises InputError."""
    backend = requested or ("nccl" if device_type == "cuda" else "gloo")
    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if not dist.is_available():
        raise InputError("this torch build has no torch.distributed")
    available = {"gloo": dist.is_gloo_available(), "nccl": dist.is_nccl_available() and torch.cuda.is_available()}
    if not available[backend]:
        raise InputError(
            f"the {backend} backend is not available here"
            + (" (it needs CUDA GPUs); on CPUs use --backend gloo with --machine.device-type cpu" if backend == "nccl" else "")
        )
    if backend == "nccl" and device_type != "cuda":
        raise InputError("--backend nccl needs --machine.device-type cuda; CPU processes use --backend gloo")
    return backend


def torchrun_environment() -> Dict[str, int]:
    """Rank, local rank and world size from torchrun's environment; raises InputError outside torchrun."""
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise InputError(
            f"no torchrun environment ({', '.join(missing)} unset): start it as torchrun --nproc-per-node K -m "
            "pds_nerfstudio.distributed <method> ... (one device: ns-train <method> ...)"
        )
    return {name: int(os.environ[name.upper()]) for name in ("rank", "local_rank", "world_size")}


def split_backend(argv: List[str]) -> tuple:
    """``--backend NAME`` (before the method) and the rest of the command line."""
    if argv[:1] == ["--backend"]:
        if len(argv) < 2:
            raise InputError("--backend needs a value: gloo or nccl")
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--backend="):
        return argv[0].split("=", 1)[1], argv[1:]
    return None, argv


def main(argv: Optional[List[str]] = None) -> None:
    """``torchrun --nproc-per-node K -m pds_nerfstudio.distributed [--backend gloo|nccl] <method> <ns-train flags>``."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import train_loop
    from nerfstudio.utils import comms

    from pds_nerfstudio.pipeline import is_edit_run

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        requested, argv = split_backend(argv)
        env = torchrun_environment()
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    sys.argv = [sys.argv[0], *argv]  # what the edit's config reads as the flags typed
    config = tyro.cli(AnnotatedBaseConfigUnion, args=argv)
    try:
        if not is_edit_run(config):
            raise InputError(f"{config.method_name} is not an edit; this entry point runs pds, pds-refine and pnr")
        if config.machine.num_devices != 1 or config.machine.num_machines != 1:
            raise InputError("under torchrun the processes are torchrun's: leave --machine.num-devices and --machine.num-machines at 1")
        backend = choose_backend(requested, config.machine.device_type)
        if config.machine.device_type == "cuda":
            if env["local_rank"] >= torch.cuda.device_count():
                raise InputError(f"local rank {env['local_rank']} has no CUDA GPU: this machine has {torch.cuda.device_count()}")
            torch.cuda.set_device(env["local_rank"])
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    config.set_timestamp()  # resolves the source run; bad input stops here, before the process group
    dist.init_process_group(backend=backend, rank=env["rank"], world_size=env["world_size"], timeout=TIMEOUT)
    try:
        config.timestamp = broadcast(config.timestamp)  # one run folder, rank 0's
        if env["rank"] == 0:
            config.print_to_terminal()
            config.save_config()
        train_loop(env["local_rank"], env["world_size"], config, global_rank=env["rank"])
        comms.synchronize()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
