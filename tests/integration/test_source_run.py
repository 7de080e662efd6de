"""--load-dir resolution: any level of a run's output folder names the same run; bad folders get clear errors."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest
import yaml

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags, merge_typed
from pds_nerfstudio.integration.source_run import read_run, resolve_load_dir
from pds_nerfstudio.methods.pds import PDSPipelineConfig

ACCEPTS = PDSPipelineConfig().accepts_source
DESCRIPTION = PDSPipelineConfig.source_description


def resolve(path):
    return resolve_load_dir(path, "pds", ACCEPTS, DESCRIPTION)


def test_every_level_of_the_output_folder_names_the_run(source_run):
    experiment_dir = source_run.parent.parent
    for path in (experiment_dir, source_run.parent, source_run, source_run / "nerfstudio_models", source_run / "config.yml"):
        run = resolve(path)
        assert run.run_dir == source_run, path
        assert run.method_name == "nerfacto"
        assert run.checkpoint is not None and run.checkpoint.parent == source_run / "nerfstudio_models"


def test_the_newest_run_wins(source_run, tmp_path):
    experiment_dir = tmp_path / "outputs" / "scene"
    older = experiment_dir / "nerfacto" / "2020-01-01_000000"
    newer = experiment_dir / "nerfacto" / "2030-01-01_000000"
    shutil.copytree(source_run, older)
    shutil.copytree(source_run, newer)
    assert resolve(experiment_dir).run_dir == newer


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        resolve(tmp_path / "missing")
    with pytest.raises(InputError, match="holds no nerfstudio run"):
        resolve(tmp_path)
    with pytest.raises(InputError, match="pass --load-dir"):
        resolve(None)


def test_a_run_without_checkpoint(source_run, tmp_path):
    run_dir = tmp_path / "nerfacto" / "2024-01-01_000000"
    run_dir.mkdir(parents=True)
    shutil.copy(source_run / "config.yml", run_dir / "config.yml")
    with pytest.raises(InputError, match="has no checkpoint"):
        resolve(tmp_path)


def _with_method(source_run, tmp_path, method_name):
    """A copy of the source run whose saved config says it was trained by ``method_name``."""
    run_dir = tmp_path / method_name / "2024-01-01_000000"
    shutil.copytree(source_run, run_dir)
    config = read_run(run_dir / "config.yml").config
    config.method_name = method_name
    (run_dir / "config.yml").write_text(yaml.dump(config), "utf8")
    return run_dir


def test_a_folder_of_runs_of_the_same_method_is_resumed(source_run, tmp_path):
    run_dir = _with_method(source_run, tmp_path, "pds")
    run = resolve(tmp_path)
    assert run.run_dir == run_dir and run.method_name == "pds"


def test_a_folder_with_sources_and_edits_picks_the_source(source_run, tmp_path):
    _with_method(source_run, tmp_path, "pds")
    shutil.copytree(source_run, tmp_path / "nerfacto" / "2020-01-01_000000")
    assert resolve(tmp_path).method_name == "nerfacto"


def test_runs_that_cannot_be_edited_are_named(source_run, tmp_path):
    _with_method(source_run, tmp_path, "pds")
    with pytest.raises(InputError, match=r"holds pds runs, but pds-refine edits"):
        resolve_load_dir(tmp_path, "pds-refine", lambda config: False, "a pds run")


@dataclass
class _Inner:
    a: int = 1
    b: str = "x"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    c: float = 0.5


def test_typed_flags_win_over_the_base_config_even_at_their_default_value():
    base = _Outer(inner=_Inner(a=7, b="base"), c=2.0)
    user = _Outer(inner=_Inner(a=1, b="user"))  # typed: --inner.a 1 (the default) and --inner.b user
    typed = TypedFlags.from_argv(["--inner.a", "1", "--inner.b=user"])
    assert merge_typed(user, base, typed) == _Outer(inner=_Inner(a=1, b="user"), c=2.0)
    assert merge_typed(user, base, TypedFlags()) == base  # nothing typed: the base config
    assert merge_typed(user, base, TypedFlags.from_argv(["--c", "0.5"])) == _Outer(inner=_Inner(a=7, b="base"), c=0.5)


def test_typed_flags_are_read_with_tyros_names_and_nerfstudios_aliases():
    typed = TypedFlags.from_argv(["pds", "--load-dir", "outputs/bear", "--pipeline.splat-model.cull-alpha-thresh", "0.1",
                                  "--data", "d", "--prompt", "x", "--optimizers.means.optimizer.lr=1e-3", "--max-num-iterations", "-5"])
    assert typed.paths == {"load_dir", "pipeline.splat_model.cull_alpha_thresh", "pipeline.datamanager.data",
                           "pipeline.model.prompt", "optimizers.means.optimizer.lr", "max_num_iterations"}
    assert typed.under("pipeline").any_under("splat_model") and not typed.under("pipeline").any_under("model.near_plane")
    assert typed.under("optimizers").under("means").typed_under("optimizer") == ["--optimizers.means.optimizer.lr"]


def test_a_flag_inside_a_list_of_dicts_is_taken_alone():
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    source = NerfactoModelConfig(proposal_net_args_list=[{"hidden_dim": 8, "num_levels": 4}, {"hidden_dim": 8, "num_levels": 4}])
    user = NerfactoModelConfig()  # tyro: the default list with the typed entry set
    user.proposal_net_args_list[1]["hidden_dim"] = 16
    merged = merge_typed(user, source, TypedFlags.from_argv(["--proposal-net-args-list.1.hidden-dim", "16"]))
    assert merged.proposal_net_args_list == [{"hidden_dim": 8, "num_levels": 4}, {"hidden_dim": 16, "num_levels": 4}]
