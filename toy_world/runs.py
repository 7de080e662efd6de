"""Runs of the toy world through the real commands: the tests' scene, tiny nerfacto and splatfacto sources trained by
``ns-train``, tiny edits (``pds``, ``pds-refine``, ``pnr``) and what their steps logged.

Used by the tests, the benchmarks and the offline demo alike. Everything is seeded and small enough for a 2-core CPU
machine without network access:

- :func:`make_synthetic_scene`: the tests' toy-world scene (two balls on the grey floor, :mod:`toy_world.world`)
  written as a nerfstudio ``transforms.json`` dataset.
- :func:`train_tiny_nerfacto`, :func:`train_tiny_splatfacto`: tiny source runs through ``ns-train``
  (:mod:`toy_world.reproducible_ns_train` seeds nerfacto's ray-sampling process; splatfacto runs on the CPU
  rasteriser).
- :func:`run_tiny_edit`: ``ns-train <method> --load-dir ...`` with flags that keep a CPU edit to seconds a step, in a
  process forked from one that has imported nerfstudio (or under torchrun).
- :func:`logged`, :func:`views_of_each_step`: what a run's steps logged, read back from its events file.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from toy_world.world import Thing, write_scene

COMMAND_TIMEOUT = 3600.0
"""Seconds a command of these runs may take before it counts as hung: a safety net, not a measure (the slowest
measured, pds-dreambooth's 800 steps beside a busy job, took 588 s), and inside CI's 90 minutes."""


# --------------------------------------------------------------------------------------------------
# Synthetic scene (nerfstudio-data)
# --------------------------------------------------------------------------------------------------

SYNTHETIC_SCENE = (Thing("red", "ball", (0.35, 0.0)), Thing("blue", "ball", (-0.35, 0.3), scale=0.25 / 0.35))
"""The tests' scene in the toy world: a red ball (radius 0.35) and a smaller blue one (radius 0.25) on the floor."""


def make_synthetic_scene(path: Path, num_views: int = 10, size: int = 32, k1: float = 0.0) -> Path:
    """:data:`SYNTHETIC_SCENE` written by :func:`toy_world.world.write_scene` (``num_views`` ring cameras, ``size`` px)."""
    return write_scene(path, SYNTHETIC_SCENE, num_views, size, k1)


# --------------------------------------------------------------------------------------------------
# Tiny nerfacto source run through the real CLI
# --------------------------------------------------------------------------------------------------

TINY_NERFACTO_STEPS = 20
"""Default number of training iterations of the tiny source run."""

TINY_NERFACTO_FLAGS: List[str] = [
    "--machine.device-type", "cpu",
    "--vis", "tensorboard",
    "--viewer.quit-on-train-completion", "True",
    "--mixed-precision", "False",
    "--logging.profiler", "none",
    "--logging.steps-per-log", "1000000",
    "--logging.local-writer.enable", "False",
    # Evaluation is cheap on 32x32 images: run a batch and an image eval every 10 steps (exercises LPIPS).
    "--steps-per-eval-batch", "10",
    "--steps-per-eval-image", "10",
    "--steps-per-eval-all-images", "0",
    # No intermediate checkpoints; the trainer always saves one at the end of training.
    "--steps-per-save", "1000000",
    # Data: few rays, one loader process with a short queue.
    "--pipeline.datamanager.train-num-rays-per-batch", "256",
    "--pipeline.datamanager.eval-num-rays-per-batch", "256",
    "--pipeline.datamanager.num-processes", "1",
    "--pipeline.datamanager.queue-size", "2",
    "--pipeline.datamanager.max-thread-workers", "1",
    # Field: small hash grids and MLPs, few samples.
    "--pipeline.model.num-levels", "4",
    "--pipeline.model.max-res", "64",
    "--pipeline.model.log2-hashmap-size", "12",
    "--pipeline.model.features-per-level", "2",
    "--pipeline.model.hidden-dim", "16",
    "--pipeline.model.hidden-dim-color", "16",
    "--pipeline.model.appearance-embed-dim", "4",
    "--pipeline.model.num-proposal-samples-per-ray", "16", "8",
    "--pipeline.model.num-nerf-samples-per-ray", "8",
    "--pipeline.model.eval-num-rays-per-chunk", "1024",
    "--pipeline.model.proposal-net-args-list.0.hidden-dim", "8",
    "--pipeline.model.proposal-net-args-list.0.log2-hashmap-size", "10",
    "--pipeline.model.proposal-net-args-list.0.num-levels", "4",
    "--pipeline.model.proposal-net-args-list.0.max-res", "32",
    "--pipeline.model.proposal-net-args-list.1.hidden-dim", "8",
    "--pipeline.model.proposal-net-args-list.1.log2-hashmap-size", "10",
    "--pipeline.model.proposal-net-args-list.1.num-levels", "4",
    "--pipeline.model.proposal-net-args-list.1.max-res", "64",
]  # fmt: skip
"""``ns-train nerfacto`` options that make the field tiny and a CPU run take seconds.

Camera optimizer and appearance embedding keep nerfacto's defaults (on), as a user's plain
``ns-train nerfacto`` source run has them; pass overrides through ``extra_args``.
"""


def _ns_train_executable() -> str:
    candidate = Path(sys.executable).parent / "ns-train"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ns-train")
    if found is None:
        raise FileNotFoundError("ns-train not found next to the Python interpreter or on PATH")
    return found


def offline_env(torch_home: Optional[Path] = None, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for offline subprocesses: hub offline, optional ``TORCH_HOME``."""
    env = dict(os.environ if base is None else base)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    if torch_home is not None:
        env["TORCH_HOME"] = str(torch_home)
    return env


def file_digests(*folders: Path) -> Dict[Path, str]:
    """SHA-256 of every file under ``folders``: taken before and after a run, they show nothing was modified."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def find_run_dirs(output_dir: Path, method: str = "nerfacto") -> List[Path]:
    """Run directories ``<output_dir>/<experiment>/<method>/<timestamp>`` holding a ``config.yml``, oldest first."""
    return sorted(p.parent for p in Path(output_dir).glob(f"*/{method}/*/config.yml"))


REPRODUCIBLE_NS_TRAIN = Path(__file__).with_name("reproducible_ns_train.py")


def train_tiny_nerfacto(
    scene: Path,
    output_dir: Path,
    torch_home: Path,
    steps: int = TINY_NERFACTO_STEPS,
    extra_args: Sequence[str] = (),
    timeout: float = COMMAND_TIMEOUT,
    reproducible: bool = True,
) -> Path:
    """Train a tiny nerfacto on ``scene`` with ``ns-train`` and return its timestamped run directory.

    nerfstudio's ``ns-train``, its ray-sampling process seeded (:mod:`toy_world.reproducible_ns_train`): the same
    command trains the same source on a machine. ``reproducible=False`` runs the plain ``ns-train`` console script, as
    a user does, whose sources differ from run to run.

    The run directory (``<output_dir>/<scene name>/nerfacto/<timestamp>``) holds ``config.yml``,
    ``dataparser_transforms.json`` and ``nerfstudio_models/step-<steps - 1>.ckpt``.
    ``extra_args`` go after :data:`TINY_NERFACTO_FLAGS` and override them.
    """
    launcher = [sys.executable, str(REPRODUCIBLE_NS_TRAIN)] if reproducible else [_ns_train_executable()]
    command = [*launcher, "nerfacto", *TINY_NERFACTO_FLAGS, *extra_args]
    return _train_source("nerfacto", command, scene, output_dir, torch_home, steps, timeout)


TINY_SPLATFACTO_STEPS = 30
"""Default number of training iterations of the tiny splatfacto source run."""

TINY_SPLATFACTO_FLAGS: List[str] = [
    "--machine.device-type", "cpu",
    "--vis", "tensorboard",
    "--viewer.quit-on-train-completion", "True",
    "--logging.local-writer.enable", "False",
    "--steps-per-eval-batch", "0",
    "--steps-per-eval-image", "0",
    "--steps-per-eval-all-images", "0",
    "--steps-per-save", "1000000",
    # a few hundred Gaussians in the synthetic scene's box (the scene has no sparse points)
    "--pipeline.model.num-random", "400",
    "--pipeline.model.random-scale", "1.5",
]  # fmt: skip
"""``ns-train splatfacto`` options that keep a CPU run of the synthetic scene to seconds."""


def train_tiny_splatfacto(
    scene: Path,
    output_dir: Path,
    torch_home: Path,
    steps: int = TINY_SPLATFACTO_STEPS,
    extra_args: Sequence[str] = (),
    timeout: float = COMMAND_TIMEOUT,
) -> Path:
    """Train a tiny splatfacto on ``scene`` with nerfstudio's ``ns-train``, rasterised on the CPU
    (``python -m pds_nerfstudio.cli.splat_cpu``: gsplat's kernels need CUDA), and return its run directory.
    ``extra_args`` go after :data:`TINY_SPLATFACTO_FLAGS` and override them."""
    command = [sys.executable, "-m", "pds_nerfstudio.cli.splat_cpu", "splatfacto", *TINY_SPLATFACTO_FLAGS, *extra_args]
    return _train_source("splatfacto", command, scene, output_dir, torch_home, steps, timeout)


def _train_source(
    method: str, command: List[str], scene: Path, output_dir: Path, torch_home: Path, steps: int, timeout: float
) -> Path:
    output_dir = Path(output_dir)
    before = set(find_run_dirs(output_dir, method))
    command = [*command, "--data", str(scene), "--output-dir", str(output_dir), "--max-num-iterations", str(steps)]
    start = time.perf_counter()
    result = subprocess.run(
        command,
        env=offline_env(torch_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"ns-train {method} failed (exit {result.returncode}) after {elapsed:.1f}s:\n"
            f"{' '.join(command)}\n{result.stdout[-6000:]}"
        )
    new = [d for d in find_run_dirs(output_dir, method) if d not in before]
    if len(new) != 1:
        raise RuntimeError(f"expected one new run directory under {output_dir}, found {new}\n{result.stdout[-3000:]}")
    run_dir = new[0]
    if not list((run_dir / "nerfstudio_models").glob("step-*.ckpt")):
        raise RuntimeError(f"no checkpoint saved in {run_dir / 'nerfstudio_models'}\n{result.stdout[-3000:]}")
    return run_dir


# --------------------------------------------------------------------------------------------------
# What a run's steps logged (tensorboard events)
# --------------------------------------------------------------------------------------------------


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir)).Reload()


def _metric(events, name: str) -> Dict[int, float]:
    return {event.step: event.value for event in events.Scalars(f"Train Metrics Dict/{name}")}


def logged(run_dir: Path, name: str) -> Dict[int, float]:
    """A metric the steps of a run logged (``--logging.steps-per-log 1`` logs every step), by step."""
    return _metric(_events(run_dir), name)


def logged_if_any(run_dir: Path, names: Sequence[str]) -> Dict[str, Dict[int, float]]:
    """Several metrics of a run, its events read once; a metric no step logged is empty (pnr logs no pull for a
    term at weight 0)."""
    events = _events(run_dir)
    tags = set(events.Tags()["scalars"])
    return {name: _metric(events, name) if f"Train Metrics Dict/{name}" in tags else {} for name in names}


def views_of_each_step(run_dir: Path) -> Dict[int, Tuple[int, ...]]:
    """The training views each step guided, read back from the metrics it logged (``view``, ``view_2``, ...)."""
    events = _events(run_dir)
    tags = events.Tags()["scalars"]
    extra = sorted((t.rsplit("/", 1)[1] for t in tags if re.search(r"/view_\d+$", t)), key=lambda n: int(n[5:]))
    columns = [_metric(events, name) for name in ["view", *extra]]
    return {step: tuple(int(column[step]) for column in columns) for step in columns[0]}


# --------------------------------------------------------------------------------------------------
# Tiny editing runs (pds, pds-refine, pnr) through the real CLI
# --------------------------------------------------------------------------------------------------

TINY_EDIT_FLAGS: List[str] = [
    "--machine.device-type", "cpu",
    "--vis", "tensorboard",
    "--logging.local-writer.enable", "False",
    "--pipeline.render-resolution", "16",
    "--pipeline.ray-chunk-size", "96",
    "--pipeline.steps-per-log-image", "1",
]  # fmt: skip
"""Options shared by every editing method that keep a CPU edit of the synthetic scene to seconds per step."""


def tiny_edit_command(method: str, load_dir: Path, output_dir: Path, steps: int, extra_args: Sequence[str] = ()) -> List[str]:
    """``ns-train <method> --load-dir <load_dir>`` with :data:`TINY_EDIT_FLAGS` plus ``extra_args``."""
    return [
        _ns_train_executable(), method,
        "--load-dir", str(load_dir),
        "--output-dir", str(output_dir),
        "--max-num-iterations", str(steps),
        *TINY_EDIT_FLAGS,
        *extra_args,
    ]  # fmt: skip


WARM_PRELOAD = ("nerfstudio.scripts.train", "pds_nerfstudio.methods.method_configs", "pnr_nerfstudio.method_configs", "diffusers", "toy_world.runs")
"""What the process that :func:`run_ns_train_warm` forks from imports once: nerfstudio's ``ns-train`` entry point (which
discovers the plugin's methods), the editing pipelines and diffusers."""


def _ns_train_in_this_process(argv: List[str], env: Dict[str, str], cwd: Optional[str], stdout: str, stderr: str) -> None:
    """A forked process's whole life: the command's environment, folder and output files, then ``ns-train``'s own
    entry point on its arguments (an error exits as ``ns-train`` does, with its code)."""
    for fd, path in ((1, stdout), (2, stderr)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    sys.argv = list(argv)
    from nerfstudio.scripts.train import entrypoint

    try:
        entrypoint()
    finally:  # what the interpreter runs at its exit, and a forked process would not
        atexit._run_exitfuncs()


@functools.lru_cache(maxsize=None)
def _warm_context():
    """Multiprocessing's forkserver context, told once what its server imports (it starts at the first process)."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WARM_PRELOAD))
    return context


def run_ns_train_warm(command: List[str], env: Dict[str, str], cwd: Optional[Path], timeout: float) -> subprocess.CompletedProcess:
    """``ns-train ARGS`` (``command``: the console script and its arguments) in a fresh process of its own, forked from a
    process that has imported :data:`WARM_PRELOAD` (multiprocessing's forkserver, started once by the first call).

    The forked process runs nerfstudio's ``ns-train`` entry point, the function the console script calls, on the same
    arguments, environment and folder; it only skips the interpreter's start and nerfstudio's import, 13 s of one core
    (4-6 s of it nerfstudio's stack walk when it registers its external methods). The console script itself still runs
    where a test starts ``ns-train`` as a command (a run killed and resumed, the viewer, torchrun). As with any
    multiprocessing start method but fork, the forked process imports the main script again: a script that calls this
    (bench/edit_outcome.py) keeps its work under ``if __name__ == "__main__":``."""
    import tempfile

    context = _warm_context()
    with tempfile.TemporaryDirectory() as folder:
        stdout, stderr = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        for path in (stdout, stderr):  # there even if the process ends before it writes
            Path(path).touch()
        args = (command, dict(env), None if cwd is None else str(cwd), stdout, stderr)
        process = context.Process(target=_ns_train_in_this_process, args=args)
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, timeout, Path(stdout).read_text(errors="replace"))
        return subprocess.CompletedProcess(
            command, process.exitcode, Path(stdout).read_text(errors="replace"), Path(stderr).read_text(errors="replace")
        )


def run_tiny_edit(
    method: str,
    load_dir: Path,
    output_dir: Path,
    torch_home: Path,
    steps: int,
    extra_args: Sequence[str] = (),
    cwd: Optional[Path] = None,
    timeout: float = COMMAND_TIMEOUT,
    processes: int = 1,
) -> Tuple[Path, subprocess.CompletedProcess]:
    """Run ``ns-train <method> --load-dir <load_dir>`` with :data:`TINY_EDIT_FLAGS` plus ``extra_args``
    (which must name at least the guidance model and, unless resuming, the target prompt); with ``processes`` above 1,
    the same command line under ``torchrun --standalone --nproc-per-node <processes> -m pds_nerfstudio.cli.torchrun``.
    One process runs through :func:`run_ns_train_warm`: nerfstudio's ``ns-train`` entry point in a process of its own,
    forked from one that has imported nerfstudio already.

    Returns the new run directory ``<output_dir>/<experiment>/<method>/<timestamp>`` and the finished process.
    """
    output_dir = Path(output_dir)
    before = set(find_run_dirs(output_dir, method))
    command = tiny_edit_command(method, load_dir, output_dir, steps, extra_args)
    env = offline_env(torch_home)
    if processes > 1:  # the same command line under torchrun: CPU processes with the gloo backend
        torchrun = str(Path(_ns_train_executable()).parent / "torchrun")
        command = [torchrun, "--standalone", "--nproc-per-node", str(processes), "-m", "pds_nerfstudio.cli.torchrun", *command[1:]]
        env["OMP_NUM_THREADS"] = "1"
        result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    else:
        result = run_ns_train_warm(command, env, cwd, timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    new = [d for d in find_run_dirs(output_dir, method) if d not in before]
    if len(new) != 1:
        raise RuntimeError(f"expected one new {method} run under {output_dir} (rank 0's), found {new}")
    return new[0], result


def run_pds_eval(
    run: Path, output_dir: Path, torch_home: Path, flags: Sequence[str] = (), cwd: Optional[Path] = None
) -> Tuple[Dict, subprocess.CompletedProcess]:
    """``pds-eval RUN --output-dir OUTPUT_DIR FLAGS`` as a user runs it (offline, in ``cwd``); fails with its output if
    it fails. Returns its metrics.json and the finished process."""
    command = [str(Path(_ns_train_executable()).parent / "pds-eval"), str(run), "--output-dir", str(output_dir), *flags]
    result = subprocess.run(
        command, env=offline_env(torch_home), cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return json.loads((Path(output_dir) / "metrics.json").read_text()), result


def kill_when(process: subprocess.Popen, ready, what: str, timeout: float = COMMAND_TIMEOUT) -> None:
    """kill -9 ``process`` as soon as ``ready()`` is true (a state, not a time); fails if it ends before."""
    import signal

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, f"it ended before {what}:\n{process.stdout.read()[-3000:] if process.stdout else ''}"
            assert time.monotonic() < deadline, f"{what} did not happen"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_run_opens_without_diffusion_model(
    run_dir: Path,
    torch_home: Path,
    work: Path,
    export: str = "pointcloud",
    viewer: bool = True,
    render: bool = True,
    cwd: Optional[Path] = None,
) -> None:
    """``ns-export pointcloud`` (or ``gaussian-splat``), ``ns-render interpolate`` and (with ``viewer``) ``ns-viewer`` all
    open an edit run; they run side by side. ns-export opens it in nerfstudio's "inference" mode, ns-render and ns-viewer
    in its "test" mode.

    Call it after deleting the run's diffusion model folder: none of them may load it. ``render`` False leaves out
    ns-render; ``cwd`` is where the commands run (a run whose config.yml names relative paths).
    """
    import socket

    env = offline_env(torch_home)
    bin_dir = Path(_ns_train_executable()).parent
    config = str(run_dir / "config.yml")
    if export == "pointcloud":
        export_command = [str(bin_dir / "ns-export"), "pointcloud", "--load-config", config, "--output-dir", str(work / "export"),
                          "--num-points", "500", "--remove-outliers", "False", "--normal-method", "open3d"]  # fmt: skip
        exported = work / "export" / "point_cloud.ply"
    else:
        export_command = [str(bin_dir / "ns-export"), export, "--load-config", config, "--output-dir", str(work / "export")]
        exported = work / "export" / "splat.ply"
    render_command = [str(bin_dir / "ns-render"), "interpolate", "--load-config", config, "--output-path", str(work / "render"),
                      "--output-format", "images", "--pose-source", "train", "--interpolation-steps", "1"]  # fmt: skip
    port = _free_port()
    viewer_command = [str(bin_dir / "ns-viewer"), "--load-config", config, "--viewer.websocket-port", str(port)]
    started = {
        name: subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, command in (("export", export_command), ("render", render_command), ("viewer", viewer_command))
        if (viewer or name != "viewer") and (render or name != "render")
    }
    try:
        for name in ("export", "render") if render else ("export",):
            output, _ = started[name].communicate(timeout=COMMAND_TIMEOUT)
            if started[name].returncode != 0:
                raise RuntimeError(f"ns-{name} failed:\n{output[-3000:]}")
        if not exported.stat().st_size:
            raise RuntimeError(f"ns-export {export} wrote an empty file")
        if render and not list((work / "render").glob("*.jpg")):
            raise RuntimeError("ns-render wrote no image")
        if viewer:
            deadline = time.monotonic() + 300
            while True:
                if started["viewer"].poll() is not None:
                    raise RuntimeError(f"ns-viewer exited:\n{started['viewer'].stdout.read()[-3000:]}")  # type: ignore[union-attr]
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("ns-viewer did not start serving") from None
                    time.sleep(0.5)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=60)
