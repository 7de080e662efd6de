"""``torchrun --nproc-per-node K -m pds_nerfstudio.cli.torchrun [--backend gloo|nccl] <method> <ns-train flags>``:
an edit under torchrun, one process per device (clusters, several machines, or CPU processes with gloo).

The same command line as ``ns-train``; each process joins the process group torchrun describes in its environment
(:mod:`pds_nerfstudio.parallel.collectives` holds what the processes exchange). Bad input stops before the process
group starts. ``<method> --help`` lists the method's flags, as ``ns-train <method> --help`` does."""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.parallel.collectives import TIMEOUT, broadcast

BACKENDS = ("gloo", "nccl")
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


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
            "pds_nerfstudio.cli.torchrun <method> ... (one device: ns-train <method> ...)"
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
    """``torchrun --nproc-per-node K -m pds_nerfstudio.cli.torchrun [--backend gloo|nccl] <method> <ns-train flags>``."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import train_loop
    from nerfstudio.utils import comms

    from pds_nerfstudio.integration.pipeline import is_edit_run

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):  # the launcher's own help; `<method> --help` is ns-train's
        print(__doc__)
        return
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
