"""The viewer controls' precedence on resume: a flag given now > a change made in the viewer > the run's config."""

from __future__ import annotations

from pds_nerfstudio.viewer_controls import EditControls

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
    from pds_nerfstudio.pipeline import PDSPipelineConfig
    from pds_nerfstudio.refine import RefinePipelineConfig
    from pds_nerfstudio.typed_flags import TypedFlags
    from pnr_nerfstudio.pipeline import PnRPipelineConfig

    def typed(config, *flags):
        return config.with_typed_controls(TypedFlags.from_argv(list(flags))).typed_controls

    assert typed(PDSPipelineConfig(), "--guidance.guidance-scale", "100") == ("guidance_scale",)  # the default value
    assert typed(PDSPipelineConfig(), "--tgt-prompt", "x", "--guidance.t-ratio-range", "0.02", "0.98") == ("tgt_prompt", "ratio_range")
    assert typed(PDSPipelineConfig(), "--guidance.num-inference-steps", "50") == ()
    assert typed(RefinePipelineConfig(), "--skip-ratio-range", "0.8", "0.9") == ("ratio_range",)
    assert typed(PnRPipelineConfig(), "--annealing.end", "0.02", "0.4") == ("ratio_range",)  # the sliders set the end
