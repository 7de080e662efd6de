"""The outcome matrix (bench/outcome_matrix.py) guides each edit with the toy world's setting and keeps an edit by the
guidance it ran with, so that a rerun reuses exactly the edits that the same guidance made."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from toy_world.outcome import toy_guidance_flags

ROOT = Path(__file__).resolve().parents[2]
V2_AT_70 = ["--pipeline.guidance.model-id", "toy_world/prior_v2", "--pipeline.guidance.guidance-scale", "70"]
COMMITTED = ["--pipeline.guidance.model-id", "toy_world/prior"]


def _matrix():
    spec = importlib.util.spec_from_file_location("outcome_matrix", ROOT / "bench" / "outcome_matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_matrix_guides_with_the_toy_worlds_setting_unless_the_extra_flags_name_a_prior():
    matrix = _matrix()
    assert matrix.guidance_flags("nerfacto", []) == toy_guidance_flags("nerfacto")
    assert toy_guidance_flags("nerfacto", Path("toy_world")) == V2_AT_70
    assert toy_guidance_flags("splatfacto", Path("toy_world")) == [*COMMITTED, "--pipeline.guidance.guidance-scale", "100"]
    assert Path(toy_guidance_flags("nerfacto")[1]) == ROOT / "toy_world" / "prior_v2"  # absolute: ns-train runs elsewhere
    assert matrix.guidance_flags("nerfacto", COMMITTED) == []  # the extra flags' prior, at the method's default scale
    cell = matrix.Cell("nerfacto", "ball", "red", "blue", "pds", 42)
    flags = matrix.Matrix.edit_flags(type("M", (), {"extra_flags": COMMITTED})(), cell)
    assert flags.count("--pipeline.guidance.model-id") == 1 and "--pipeline.guidance.guidance-scale" not in flags


def test_the_matrix_keeps_an_edit_by_the_guidance_it_ran_with():
    matrix = _matrix()
    nerfacto = matrix.Cell("nerfacto", "ball", "red", "blue", "pds", 42)
    # the toy world's guidance, and the same typed as extra flags (as the edits kept before it were), are one edit
    assert nerfacto.key(200) == nerfacto.key(200, V2_AT_70) != nerfacto.key(200, COMMITTED)
    assert nerfacto.key(200) != nerfacto.key(200, ["--pipeline.guidance.model-id", "toy_world/prior_v3", "--pipeline.guidance.guidance-scale", "70"])
    assert nerfacto.key(200) != nerfacto.key(200, ["--machine.seed", "1"])
    # splatfacto's is the committed prior at the method's default scale: unhashed, as the edits kept before it
    splatfacto = matrix.Cell("splatfacto", "ball", "red", "blue", "pds", 42)
    assert splatfacto.key(500) == "splatfacto-ball-red-blue-pds-seed42-500steps" != splatfacto.key(500, V2_AT_70)
