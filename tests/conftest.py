"""Session fixtures: tiny Stable Diffusion, seeded TORCH_HOME, synthetic scene, tiny nerfacto source run.

All are built once per test session under a ``tmp_path_factory`` directory, offline; when the session runs in
several pytest-xdist workers (``scripts/test.sh``), the first worker to need one builds it and the others use it.
The session runs with ``HF_HUB_OFFLINE=1`` and ``TORCH_HOME`` set to the seeded folder, in ``os.environ`` so that
subprocesses (``ns-train``, nerfstudio's data-loading processes) inherit them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
from filelock import FileLock

from toy_world.models import build_tiny_clip, build_tiny_stable_diffusion, seed_torch_home
from toy_world.runs import make_synthetic_scene, train_tiny_nerfacto

_OFFLINE_VARIABLES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_saved_environment: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported.
    for name, value in _OFFLINE_VARIABLES.items():
        _saved_environment[name] = os.environ.get(name)
        os.environ[name] = value


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


TESTS = Path(__file__).resolve().parent
E2E = TESTS / "e2e"
"""Tests that start ns-train (or another nerfstudio command) live here; they are marked ``e2e`` by their folder."""
TRAINING_FIXTURES = {"source_run", "plain_source"}
"""Session fixtures that train a source with ``ns-train``: a test elsewhere that takes one is marked ``e2e`` too."""

SLOWEST_FILES_FIRST = (
    "e2e/test_edit_outcome.py", "e2e/test_matrix_slice.py", "e2e/test_pnr_shape_edit.py", "e2e/test_region_outcome.py", "e2e/test_splat.py", "e2e/test_resume.py", "e2e/test_refine.py", "e2e/test_pnr.py", "e2e/test_region.py",
    "bench/test_gpu_dry_run.py", "e2e/test_old_runs.py", "e2e/test_viewer.py", "e2e/test_distributed.py",
    "e2e/test_dreambooth.py", "e2e/test_pds.py", "e2e/test_pds_eval.py",
)  # fmt: skip
"""Test files (under tests/) by their measured time, longest first (about 10.5 minutes to 1 on 2 workers;
test_pnr_shape_edit.py about 4; the others take about a minute or less)."""


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Mark what is under ``tests/e2e`` (or takes a fixture of :data:`TRAINING_FIXTURES`) as ``e2e``, and run the
    longest files first, each file's tests in their own order: pytest-xdist hands files to the workers in this order
    (``scripts/test.sh`` turns off its own reordering by number of tests), so that no long file is left to run alone at
    the end while the other worker has nothing to do."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    for item in items:
        if E2E in item.path.parents or TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: rank.get(item.path.relative_to(TESTS).as_posix(), len(rank)))


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(folder)``'s result, built once for the whole session: with pytest-xdist, in the folder all workers'
    temporary folders share, by whichever worker asks first (the others wait on a file lock)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    record = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not record.exists():
            record.write_text(json.dumps(str(build(root / name))))
        return Path(json.loads(record.read_text()))


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME with random AlexNet/VGG16 weights where torchvision looks (LPIPS constructs offline)."""
    return shared(tmp_path_factory, "torch_home", seed_torch_home)


@pytest.fixture(scope="session", autouse=True)
def offline_session_env(torch_home: Path) -> Iterator[None]:
    """HF_HUB_OFFLINE=1 and TORCH_HOME=<seeded folder> for the whole session, inherited by subprocesses."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in _OFFLINE_VARIABLES.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TORCH_HOME", str(torch_home))
        yield


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a saved tiny StableDiffusionPipeline; load with ``from_pretrained``."""
    return shared(tmp_path_factory, "tiny_sd", lambda folder: build_tiny_stable_diffusion(folder / "pipeline"))


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nerfstudio-data scene: 10 views of 32x32 pixels (9 train, 1 eval with the default split)."""
    return shared(tmp_path_factory, "data", lambda folder: make_synthetic_scene(folder / "scene"))


@pytest.fixture(scope="session")
def source_run(synthetic_scene: Path, torch_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of a tiny nerfacto trained on ``synthetic_scene`` with ``ns-train`` (config.yml, checkpoint)."""
    return shared(tmp_path_factory, "outputs", lambda folder: train_tiny_nerfacto(synthetic_scene, folder, torch_home))


@pytest.fixture(scope="session")
def plain_source(synthetic_scene: Path, torch_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny nerfacto source reconstructed without an appearance embedding, as the release (and the README)
    recommends: its parameter groups are the edit's, so the edit's Adam continues the source's moments."""
    extra = ["--pipeline.model.use-appearance-embedding", "False"]
    return shared(tmp_path_factory, "plain", lambda folder: train_tiny_nerfacto(synthetic_scene, folder, torch_home, extra_args=extra))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip-a", seed=0)


@pytest.fixture(scope="session")
def tiny_clip_b(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip-b", seed=1)
