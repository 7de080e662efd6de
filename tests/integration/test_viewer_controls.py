"""The viewer controls' precedence on resume: a flag given now > a change made in the viewer > the run's config."""

from __future__ import annotations

import pytest

from pds_nerfstudio.integration.viewer_controls import EditControls

CONFIG = dict(tgt_prompt="a photo of a polar bear", guidance_scale=100.0, range_name="t ratio", ratio_range=(0.02, 0.98))


def saved_after_a_viewer_change():
    """The controls of a run whose viewer changed the prompt and the guidance scale, as a checkpoint holds them."""
    controls = EditControls(**CONFIG)
    controls.prompt.value = "a photo of a grizzly bear"
    controls._prompt_changed(controls.prompt)  # what the viewer's callback does
    controls.scale.value = 30.0
    return controls.get_extra_state()


def resumed(saved, **flags):
    controls = EditControls(**{**CONFIG, **flags}, typed_now=tuple(flags))
    controls.set_extra_state(saved)
    return controls.values()


def test_a_resume_without_flags_keeps_what_the_viewer_changed():
    assert resumed(saved_after_a_viewer_change()) == {
        "tgt_prompt": "a photo of a grizzly bear",
        "guidance_scale": 30.0,
        "ratio_range": (0.02, 0.98),
    }


def test_a_flag_given_on_resume_wins_over_the_viewer_and_the_run():
    values = resumed(saved_after_a_viewer_change(), guidance_scale=7.5, ratio_range=(0.1, 0.9))
    assert values == {"tgt_prompt": "a photo of a grizzly bear", "guidance_scale": 7.5, "ratio_range": (0.1, 0.9)}
    values = resumed(saved_after_a_viewer_change(), tgt_prompt="a photo of a panda")
    assert values["tgt_prompt"] == "a photo of a panda" and values["guidance_scale"] == 30.0


def test_a_flag_typed_on_resume_at_the_runs_value_wins_over_the_viewer():
    """The run was configured with guidance 100 and the viewer set 30: typing --guidance-scale 100 now means 100."""
    assert resumed(saved_after_a_viewer_change(), guidance_scale=100.0)["guidance_scale"] == 100.0


def test_without_a_viewer_change_the_config_holds():
    saved = EditControls(**CONFIG).get_extra_state()
    assert resumed(saved, guidance_scale=7.5)["guidance_scale"] == 7.5
    assert resumed(saved) == {"tgt_prompt": CONFIG["tgt_prompt"], "guidance_scale": 100.0, "ratio_range": (0.02, 0.98)}


def test_a_second_resume_still_tells_the_viewer_from_the_flags():
    """The first resume was given --guidance-scale 7.5 (its config.yml then says 7.5); the second, without flags, keeps
    7.5 and the viewer's prompt."""
    first = EditControls(**{**CONFIG, "guidance_scale": 7.5})
    first.set_extra_state(saved_after_a_viewer_change())
    second = resumed(first.get_extra_state(), guidance_scale=7.5)
    assert second == {"tgt_prompt": "a photo of a grizzly bear", "guidance_scale": 7.5, "ratio_range": (0.02, 0.98)}


def test_controls_saved_without_their_config_leave_the_config_in_force():
    old = {"tgt_prompt": "x", "guidance_scale": 3.0, "ratio_range": (0.5, 0.6)}
    assert resumed(old)["guidance_scale"] == 100.0


def test_the_controls_typed_on_the_command_line_are_recorded_by_their_config_fields():
    from pds_nerfstudio.common.typed_flags import TypedFlags
    from pds_nerfstudio.methods.pds import PDSPipelineConfig
    from pds_nerfstudio.methods.refine import RefinePipelineConfig
    from pnr_nerfstudio.pipeline import PnRPipelineConfig

    def typed(config, *flags):
        return config.with_typed_controls(TypedFlags.from_argv(list(flags))).typed_controls

    assert typed(PDSPipelineConfig(), "--guidance.guidance-scale", "100") == ("guidance_scale",)  # the default value
    assert typed(PDSPipelineConfig(), "--tgt-prompt", "x", "--guidance.t-ratio-range", "0.02", "0.98") == ("tgt_prompt", "ratio_range")
    assert typed(PDSPipelineConfig(), "--guidance.num-inference-steps", "50") == ()
    assert typed(RefinePipelineConfig(), "--skip-ratio-range", "0.8", "0.9") == ("ratio_range",)
    assert typed(PnRPipelineConfig(), "--annealing.end", "0.02", "0.4") == ("ratio_range",)  # the sliders set the end


def _share_after_rank_0s_viewer_change(rank: int, store: str, results: str) -> None:
    """One of two gloo processes: rank 0's viewer changes the prompt, scale, range and the region's box; every rank
    takes them."""
    import json
    from types import SimpleNamespace

    import numpy as np
    import torch.distributed as dist

    from pds_nerfstudio.integration.pipeline import EditPipeline
    from pds_nerfstudio.integration.region_viewer import RegionBoxControls
    from pds_nerfstudio.regions.region import Region, RegionConfig
    from pds_nerfstudio.scenes.box import Box

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        controls = EditControls(**CONFIG)
        flag = (0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
        region = Region(RegionConfig(box=flag), Box.from_flag(flag), None, None)  # type: ignore[arg-type]
        region_controls = RegionBoxControls(region, scale=1.0, typed_now=False)
        if rank == 0:
            region_controls.moved(np.array([2.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))  # the gizmo dragged
            controls.prompt.value = "a photo of a grizzly bear"
            controls._prompt_changed(controls.prompt)  # what the viewer's callback does
            controls.scale.value = 30.0
            controls.range_from.value, controls.range_to.value = 0.1, 0.5
        shared = SimpleNamespace(world_size=2, controls=controls, region_controls=region_controls)
        EditPipeline.share_controls(shared)  # what every step starts with
        with open(f"{results}.{rank}", "w") as file:
            json.dump({**controls.values(), "box_centre": region.box.centre.tolist()}, file)
    finally:
        dist.destroy_process_group()


def test_a_change_in_rank_0s_viewer_reaches_every_process(tmp_path):
    """Only rank 0 serves the viewer; a distributed edit's step begins by giving every rank rank 0's values (a real
    gloo process group of two processes)."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_share_after_rank_0s_viewer_change, args=(str(tmp_path / "store"), str(tmp_path / "values")), nprocs=2)
    for rank in (0, 1):
        values = json.loads((tmp_path / f"values.{rank}").read_text())
        assert values.pop("box_centre") == pytest.approx([0.2, 0.0, 0.0])  # the gizmo's 2 in the viewer's frame (x 10)
        assert values == {"tgt_prompt": "a photo of a grizzly bear", "guidance_scale": 30.0, "ratio_range": [0.1, 0.5]}
