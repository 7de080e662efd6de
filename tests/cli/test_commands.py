"""Every command keeps its name: the nerfstudio methods, ``pds-eval``, ``pds-dreambooth``, ``pds-convert-mvdream``, and
each ``python -m`` command the README and docs give, at its new path and at its version-0.1 path, answers ``--help``."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from toy_world.runs import COMMAND_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]

MODULE_COMMANDS = {
    # module: what its --help prints
    "pds_nerfstudio.cli.evaluate": "--clip-models",
    "pds_nerfstudio.cli.dreambooth": "--instance-prompt",
    "pds_nerfstudio.cli.splat_cpu": "splatfacto",
    "pds_nerfstudio.cli.torchrun": "--nproc-per-node",
    "pds_nerfstudio.cli.convert_mvdream": "--base",
    "toy_world.train_prior": "--output",
    "toy_world.train_clip": "--output",
    "toy_world.evaluate_prior": "usage",
    "toy_world.train_multiview_prior": "--groups",
    "toy_world.evaluate_multiview_prior": "--groups",
    # version 0.1's paths (pds_nerfstudio.old_paths)
    "pds_nerfstudio.evaluation": "--clip-models",
    "pds_nerfstudio.dreambooth": "--instance-prompt",
    "pds_nerfstudio.splat_cpu": "splatfacto",
    "pds_nerfstudio.distributed": "--nproc-per-node",
}


def run_module_help(monkeypatch, capsys, module: str) -> str:
    """What ``python -m <module> --help`` runs, in this process (runpy is what ``-m`` uses)."""
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module may be imported already
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit_info:
            assert exit_info.code in (0, None), exit_info.code
    return capsys.readouterr().out


@pytest.mark.parametrize("module", sorted(MODULE_COMMANDS))
def test_each_python_m_command_answers_help(monkeypatch, capsys, module):
    assert MODULE_COMMANDS[module] in run_module_help(monkeypatch, capsys, module)


def test_every_python_m_command_in_the_readme_and_docs_is_checked():
    texts = [(ROOT / "README.md").read_text(), *(p.read_text() for p in (ROOT / "docs").glob("*.md"))]
    named = {m for text in texts for m in re.findall(r"-m ((?:pds_nerfstudio|pnr_nerfstudio|toy_world)[\w.]*)", text)}
    assert named and named <= set(MODULE_COMMANDS), named - set(MODULE_COMMANDS)


@pytest.mark.parametrize("name, fragment", [("pds-eval", "--clip-models"), ("pds-dreambooth", "--instance-prompt"), ("pds-convert-mvdream", "--base")])
def test_console_scripts_answer_help(monkeypatch, capsys, name, fragment):
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == name]
    assert script.value.startswith("pds_nerfstudio.cli.")
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        script.load()()
    assert exit_info.value.code == 0 and fragment in capsys.readouterr().out


@pytest.mark.parametrize("method", ["pds", "pds-refine", "pnr"])
def test_the_methods_are_registered_and_answer_help(monkeypatch, capsys, method):
    from nerfstudio.scripts.train import entrypoint

    (spec,) = [ep for ep in entry_points(group="nerfstudio.method_configs") if ep.name == method]
    assert spec.load().config.method_name == method
    monkeypatch.setattr(sys, "argv", ["ns-train", method, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        entrypoint()
    assert exit_info.value.code == 0 and "--pipeline.tgt-prompt" in capsys.readouterr().out


def test_an_old_module_path_runs_with_python_m():
    """The real ``python -m`` of a version-0.1 path (not runpy in this process)."""
    result = subprocess.run(
        [sys.executable, "-m", "pds_nerfstudio.distributed", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=COMMAND_TIMEOUT
    )
    assert result.returncode == 0 and "torchrun --nproc-per-node" in result.stdout, result.stderr[-2000:]
