"""``--pipeline.region.*`` through the real ``ns-train pds``: what each step applied, read back from the step, and the
one-line errors. The scene: a red ball and a green cube apart on the floor (bench/region_outcome.py's), the box round the
ball given in the capture's frame as a cube of the toy world, so that the world's own ray caster says which pixels it
covers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import shared
from toy_world.outcome import SPARSE_POINTS
from toy_world.region_scene import BALL_BOX, BOX_THING, view_masks, write_region_scene
from toy_world.runs import COMMAND_TIMEOUT, run_tiny_edit, train_tiny_nerfacto, train_tiny_splatfacto

PROMPTS = ["--pipeline.src-prompt", "a photo of a red ball", "--pipeline.tgt-prompt", "a photo of a blue ball"]
BOX = ["--pipeline.region.box", *BALL_BOX]
EXACT = "donot_use_mm_for_euclid_dist"
"""torch.cdist's exact distances (its matrix-product form is off by about 1e-4 at a distance of 0)."""


def two_things(folder: Path) -> Path:
    return write_region_scene(folder / "scene", SPARSE_POINTS)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "two_things", two_things)


@pytest.fixture(scope="module")
def nerfacto_source(scene, torch_home, tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "two_things_nerfacto", lambda folder: train_tiny_nerfacto(scene, folder, torch_home))


@pytest.fixture(scope="module")
def splat_source(scene, torch_home, tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "two_things_splat", lambda folder: train_tiny_splatfacto(scene, folder, torch_home))


@pytest.fixture(scope="module")
def box_edit(nerfacto_source, tiny_sd, torch_home, tmp_path_factory) -> Path:
    """A 2-step pds edit of the nerfacto source with the box round the ball, through the real ns-train."""
    flags = ["--pipeline.guidance.model-id", str(tiny_sd), *PROMPTS, *BOX]
    return run_tiny_edit("pds", nerfacto_source, tmp_path_factory.mktemp("box_edit"), torch_home, 2, flags)[0]


def box_pixels(scene: Path, image_name: str, size: int) -> np.ndarray:
    """The box's pixels in the view of ``image_name`` at ``size`` px, by the toy world's ray caster."""
    return view_masks(scene, [image_name], [BOX_THING], size)[0][0]


def setup_pipeline(run: Path):
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_each_step_guides_only_the_box_pixels_and_holds_the_rest_to_the_source(box_edit, scene):
    """From a real run's config, one step: the masks it applied are the box's pixels by the world's ray caster in each
    of its views (at the guidance resolution); the gradient that reached the render is the hold term's alone outside
    them (2 w (render - source) / numel, the frozen source's render of the step) and the guidance's inside."""
    pipeline = setup_pipeline(box_edit)
    pipeline.train()
    step = 12
    outputs, losses, metrics = pipeline.get_train_loss_dict(step)
    render = outputs["rgb"]
    render.retain_grad()
    sum(losses.values()).backward()
    views = pipeline.step_views(step)
    masks = pipeline.region_masks_in_use
    size = render.shape[-1]
    names = pipeline.datamanager.train_dataset.image_filenames
    for j, index in enumerate(views):
        expected = box_pixels(scene, Path(names[index]).name, size)
        assert (masks[j, 0].numpy().astype(bool) != expected).sum() <= 1 and expected.sum() > 10
    assert metrics["region_share"] == pytest.approx(masks.mean().item())
    cameras = [pipeline.guidance_camera(index) for index in views]
    source = pipeline.region_source.render(cameras, views, pipeline.config.ray_chunk_size)  # the step's, kept
    weight = pipeline.region_hold_weight
    assert weight == 1.0  # nerfacto's default
    hold_gradient = 2 * weight * (render.detach() - source) * (1 - masks) / render.numel()
    outside = (1 - masks).bool().expand_as(render)
    assert torch.allclose(render.grad[outside], hold_gradient[outside], atol=1e-7)
    inside = masks.bool().expand_as(render)
    assert render.grad[inside].abs().max() > 10 * hold_gradient.abs().max()  # the guidance's


def test_nerfacto_renders_the_source_outside_the_box(box_edit, nerfacto_source, scene, tmp_path):
    """The run's checkpoint keeps the source's field and proposal networks exactly and the box in the scene frame. Opened
    as ns-export and ns-render open it (evaluation mode, no region set up), with its edited field moved far (noise of
    0.3 on every value, as a long edit moves it; 2 steps in warm-up move it by 1e-5), and then with its proposal
    networks moved instead: every pixel whose ray misses the box (the world's ray caster's box pixels, widened by a
    pixel) is the source run's to float rounding in every training view. With the kept box grown round the whole
    scene, the same moved values change every view (so they would show outside if the source copies did not hold it;
    the 20-step source's proposal networks place no sample inside the small box). Seen failing with the field's source
    copy switched off (outside pixels off by 0.28) and with the proposal networks' (by 6e-5)."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint
    from pds_nerfstudio.scenes.box import Box
    from toy_world.outcome import training_views

    config = yaml.load((box_edit / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.pipeline.model.source_outside_box
    outputs = config.pipeline.datamanager.dataparser.setup().get_dataparser_outputs(split="train")
    box = Box.from_flag([float(v) for v in BOX[1:]]).in_scene_frame(outputs.dataparser_transform, outputs.dataparser_scale)
    start = load_checkpoint(newest_checkpoint(nerfacto_source / "nerfstudio_models"))["pipeline"]
    saved = load_checkpoint(newest_checkpoint(box_edit / "nerfstudio_models"))
    assert torch.allclose(saved["pipeline"]["_model.kept_box"], torch.cat([box.centre, box.size, box.rotation.flatten()]))
    for key in [key for key in start if key.startswith(("_model.field.", "_model.proposal_networks."))]:
        assert torch.equal(saved["pipeline"][key.replace("_model.", "_model.source_", 1)], start[key]), key
    sources, _ = training_views(nerfacto_source / "config.yml")
    names = [Path(name).name for name in outputs.image_filenames]

    def moved(part: str, box_size: float = 0.0) -> List[float]:
        """The pixels outside the box checked with ``part``'s values moved (and the kept box grown to ``box_size`` if
        given); each view's mean change."""
        run = tmp_path / f"{part}{box_size:g}" / box_edit.relative_to(box_edit.parents[2])  # a copy: the fixture's stays
        shutil.copytree(box_edit, run)
        copied = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
        copied.output_dir = run.parents[2]  # eval_setup finds the checkpoints from config.yml's paths
        (run / "config.yml").write_text(yaml.dump(copied))
        path = newest_checkpoint(run / "nerfstudio_models")
        state = {**saved, "pipeline": dict(saved["pipeline"])}
        generator = torch.Generator().manual_seed(0)
        for key, value in saved["pipeline"].items():
            if key.startswith(f"_model.{part}.") and value.is_floating_point() and "aabb" not in key and "appearance" not in key:
                state["pipeline"][key] = value + 0.3 * torch.randn(value.shape, generator=generator)
        if box_size:
            state["pipeline"]["_model.kept_box"] = saved["pipeline"]["_model.kept_box"].clone()
            state["pipeline"]["_model.kept_box"][3:6] = box_size
        torch.save(state, path)
        changed = []
        for name, after, before in zip(names, training_views(run / "config.yml")[0], sources, strict=True):
            inside = box_pixels(scene, name, after.shape[0])
            near = inside.copy()
            for axis in (0, 1):
                for shift in (-1, 1):
                    near |= np.roll(inside, shift, axis=axis)
            assert (~near).sum() > 500
            if not box_size:
                assert np.abs(after[~near] - before[~near]).max() < 1e-5, (part, name)
            changed.append(float(np.abs(after - before).mean()))
        return changed

    moved("field")
    moved("proposal_networks")
    assert min(moved("field", box_size=1000.0)) > 0.05


def test_the_frozen_source_of_a_nerfacto_box_edit_renders_with_its_own_copies(box_edit):
    """The source copy the hold term (and pnr's revise) renders is the source's throughout: moving the live model's
    field and proposal networks (noise of 0.3) leaves its render of a training view unchanged, inside the box too.
    Seen failing (the copy sampled with the live proposal networks inside the box) before the copy took its own."""
    pipeline = setup_pipeline(box_edit)
    source = pipeline.region_source
    views = [0, 1]
    cameras = [pipeline.guidance_camera(index) for index in views]
    torch.manual_seed(0)  # training-mode sampling jitters
    before = source.render(cameras, views, pipeline.config.ray_chunk_size).clone()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in [*pipeline.model.field.parameters(), *pipeline.model.proposal_networks.parameters()]:
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    source._kept.clear()
    torch.manual_seed(0)
    after = source.render(cameras, views, pipeline.config.ray_chunk_size)
    assert torch.equal(before, after)


def with_ball_masks(run: Path, scene: Path, folder: Path):
    """The run's pipeline (training mode) with the region given as a folder of the ball's masks, painted as a user would
    (white on the ball, at the images' size), and that folder."""
    from PIL import Image

    from pds_nerfstudio.regions.region import RegionConfig

    names = sorted(p.name for p in (scene / "images").iterdir())
    masks = folder / "masks"
    masks.mkdir()
    for name, (ball, _) in zip(names, view_masks(scene, names)):
        Image.fromarray((ball * 255).astype(np.uint8)).save(masks / name)
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    config.pipeline.region = RegionConfig(masks=masks)
    return config.pipeline.setup(device="cpu", test_mode="val"), masks


def test_the_viewer_s_region_output_marks_the_box_or_the_masks_pixels(box_edit, scene, tmp_path):
    """nerfstudio's viewer renders with ``get_outputs_for_camera``; with a region the edit model adds a "region" output
    (the render, tinted where the region is, dimmed elsewhere: the viewer lists it under "Output type"). Read back from
    that output in every training view: with the box, the box's pixels by the world's own ray caster; with masks alone
    (the ball's, painted), each view's mask, though the output is drawn from the masks' visual hull, as for a view no
    mask was painted for. A camera that looks away from the scene marks nothing."""
    by_masks, _ = with_ball_masks(box_edit, scene, tmp_path)

    def marked(pipeline, camera) -> torch.Tensor:
        outputs = pipeline.model.get_outputs_for_camera(camera)
        return ~torch.isclose(outputs["region"], 0.5 * outputs["rgb"], atol=1e-6).all(-1)

    for pipeline, expected_of in ((setup_pipeline(box_edit), lambda name: box_pixels(scene, name, 32)),
                                  (by_masks, lambda name: view_masks(scene, [name])[0][0])):  # fmt: skip
        pipeline.eval()
        for index, filename in enumerate(pipeline.datamanager.train_dataset.image_filenames):
            expected = torch.from_numpy(expected_of(Path(filename).name))
            wrong = int((marked(pipeline, pipeline.datamanager.train_camera(index)) != expected).sum())
            assert wrong <= 2 and expected.sum() > 20, (index, wrong)
        away = pipeline.datamanager.train_camera(0)
        away.camera_to_worlds[..., :3, 3] *= -5  # far out on the other side of the scene, looking further out
        assert not marked(pipeline, away).any()
        # a viewer showing another output type: the region output is the render itself, nothing computed
        pipeline.model.viewer_outputs.shown = lambda: False
        outputs = pipeline.model.get_outputs_for_camera(pipeline.datamanager.train_camera(0))
        assert outputs["region"] is outputs["rgb"]


GAUSSIAN = "_model.gauss_params.{}".format
"""A Gaussian parameter's key in a checkpoint's pipeline state."""


def outside_kept(splat_source, run):
    """The source's and the run's Gaussians (checkpoint states), which source Gaussians are outside the box, and where
    each of those is in the run; checks that every one of them is still there with every source value."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint
    from pds_nerfstudio.scenes.box import Box

    before = load_checkpoint(newest_checkpoint(splat_source / "nerfstudio_models"))["pipeline"]
    after = load_checkpoint(newest_checkpoint(run / "nerfstudio_models"))["pipeline"]
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    outputs = config.pipeline.datamanager.dataparser.setup().get_dataparser_outputs(split="train")
    box = Box.from_flag([float(v) for v in BOX[1:]]).in_scene_frame(outputs.dataparser_transform, outputs.dataparser_scale)
    outside = ~box.contains(before[GAUSSIAN("means")])
    distance, match = torch.cdist(before[GAUSSIAN("means")][outside], after[GAUSSIAN("means")], compute_mode=EXACT).min(dim=1)
    assert torch.equal(distance, torch.zeros_like(distance)), "a Gaussian outside the box moved or went"
    for name in ("means", "scales", "quats", "features_dc", "features_rest", "opacities"):
        assert torch.equal(before[GAUSSIAN(name)][outside], after[GAUSSIAN(name)][match]), name
    return before, after, outside, match


def test_splat_gaussians_outside_the_box_keep_the_source_values_exactly(splat_source, tiny_sd, torch_home, tmp_path):
    """The run's own checkpoint against its source's: every Gaussian outside the box is still there, every parameter the
    source's (culling at an opacity the tiny source's faint Gaussians fall under, 53 of them outside the box, removes
    Gaussians inside it only), and Gaussians inside moved."""
    culling = ["--pipeline.splat-model.refine-every", "2", "--pipeline.splat-model.cull-alpha-thresh", "0.05"]
    run, _ = run_tiny_edit("pds", splat_source, tmp_path, torch_home, 5, ["--pipeline.guidance.model-id", str(tiny_sd), *PROMPTS, *BOX, *culling])
    before, after, outside, match = outside_kept(splat_source, run)
    key = GAUSSIAN
    faint = torch.sigmoid(before[key("opacities")].flatten()) < 0.05
    assert (outside & faint).sum() > 10 and (~outside).sum() > 10
    kept = torch.ones(len(after[key("means")]), dtype=torch.bool)
    kept[match] = False  # the Gaussians that were inside the box
    assert kept.sum() < (~outside).sum()  # some culled
    dc_before = before[key("features_dc")][~outside]
    moved = torch.cdist(after[key("features_dc")][kept], dc_before, compute_mode=EXACT).min(dim=1).values > 0
    assert moved.all()
    step_lets_move_only_the_gaussians_inside(run, outside)


def step_lets_move_only_the_gaussians_inside(run: Path, outside: torch.Tensor) -> None:
    """A step of ``run``'s own pipeline (set up from its config.yml, from the source), its optimizers built from the
    run's config with the region's freeze on them as training has it: the Gaussians the step let move
    (``movable_gaussians``) are those not ``outside`` the box (computed from the box and the source's means by the
    caller), and after the optimizers' step exactly those rows changed. Seen failing with every Gaussian let move."""
    from nerfstudio.engine.optimizers import Optimizers

    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.train()
    optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
    pipeline.freeze_outside_region(optimizers.optimizers)
    before = {name: value.detach().clone() for name, value in pipeline.model.gauss_params.items()}
    _, losses, _ = pipeline.get_train_loss_dict(0)
    sum(losses.values()).backward()
    optimizers.optimizer_step_all()
    assert torch.equal(pipeline.movable_gaussians, ~outside)  # what this step let move
    for name, value in pipeline.model.gauss_params.items():
        assert torch.equal(value.detach()[outside], before[name][outside]), name
    changed = (pipeline.model.gauss_params["features_dc"].detach() != before["features_dc"]).any(dim=-1)
    assert changed[~outside].sum() > 10, "the Gaussians inside did not move"


def test_splatfacto_densification_with_a_box_grows_gaussians_inside_and_keeps_the_outside(splat_source, tiny_sd, torch_home, tmp_path):
    """A real pnr edit with splatfacto's densification (`--pipeline.splat-model.densification splatfacto`, refining every 2
    steps at any gradient, from step 12: splatfacto pauses refinement for 9 views + 2 steps after its reset at step 0):
    Gaussians are added (no pruning here, so the count shows the splits), and every Gaussian outside the box keeps its
    row's source values."""

    densify = ["--pipeline.splat-model.densification", "splatfacto", "--pipeline.splat-model.warmup-length", "0",
               "--pipeline.splat-model.refine-every", "2", "--pipeline.splat-model.densify-grad-thresh", "1e-12"]  # fmt: skip
    flags = ["--pipeline.guidance.model-id", str(tiny_sd), *PROMPTS, *BOX, *densify, "--pipeline.protocol", "objects",
             "--pipeline.perturbation.eta", "0", "--pipeline.edit-steps", "14", "--pipeline.revise-steps", "0",
             "--pipeline.splat-model.cull-alpha-thresh", "0", "--pipeline.splat-model.cull-scale-thresh", "1e9"]  # fmt: skip
    run, _ = run_tiny_edit("pnr", splat_source, tmp_path, torch_home, 14, flags)
    before, after, _, _ = outside_kept(splat_source, run)
    assert len(after[GAUSSIAN("means")]) > len(before[GAUSSIAN("means")])  # grown


def test_pnr_perturbs_and_moves_only_the_splat_gaussians_inside_the_box(splat_source, tiny_sd, torch_home, tmp_path):
    """A real pnr run of one step with the box round the ball (eta 0.5 given, so the step perturbs first): its checkpoint
    against the source's. Every Gaussian outside the box keeps every source value (the perturbation left it, the freeze
    kept it); every Gaussian inside has the perturbed opacity, (1 - eta) logit(o_src) + eta logit(0.1) (splatfacto's
    fresh opacity), to within the one Adam step of step 0 (at most its rate, 0.05). Then the hold term: the step's loss
    logged a hold term (the perturbed ball's Gaussians reach pixels outside its mask)."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint
    from pds_nerfstudio.scenes.box import Box

    flags = ["--pipeline.guidance.model-id", str(tiny_sd), *PROMPTS, *BOX, "--pipeline.protocol", "objects", "--pipeline.perturbation.eta", "0.5",
             "--pipeline.edit-steps", "1", "--pipeline.revise-steps", "0",  # and no culling: every Gaussian stays in its row
             "--pipeline.splat-model.cull-alpha-thresh", "0", "--pipeline.splat-model.cull-scale-thresh", "1e9"]  # fmt: skip
    run, result = run_tiny_edit("pnr", splat_source, tmp_path, torch_home, 1, flags)
    before = load_checkpoint(newest_checkpoint(splat_source / "nerfstudio_models"))["pipeline"]
    after = load_checkpoint(run / "nerfstudio_models" / "step-000000000.ckpt")["pipeline"]
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    outputs = config.pipeline.datamanager.dataparser.setup().get_dataparser_outputs(split="train")
    box = Box.from_flag([float(v) for v in BOX[1:]]).in_scene_frame(outputs.dataparser_transform, outputs.dataparser_scale)
    key = "_model.gauss_params.{}".format
    inside = box.contains(before[key("means")])
    assert f"inside the region ({int(inside.sum())} of {len(inside)} Gaussians)" in " ".join(result.stdout.split())
    assert 10 < inside.sum() < len(inside) - 10
    assert len(after[key("means")]) == len(inside)
    for name in ("means", "scales", "quats", "features_dc", "features_rest", "opacities"):
        assert torch.equal(before[key(name)][~inside], after[key(name)][~inside]), name
    opacity = {name: state[key("opacities")].flatten() for name, state in (("before", before), ("after", after))}
    perturbed = 0.5 * opacity["before"] + 0.5 * torch.logit(torch.tensor(0.1))
    far = (perturbed - opacity["before"]).abs() > 0.2  # Gaussians the perturbation moves more than a step can
    assert far[inside].sum() > 10
    assert ((opacity["after"] - perturbed)[inside].abs() <= 0.05 + 1e-6).all()
    assert ((opacity["after"] - opacity["before"])[inside & far].abs() > 0.15).all()
    from toy_world.runs import _events

    held = [event.value for event in _events(run).Scalars("Train Loss Dict/region_hold_loss")]
    assert len(held) == 1 and held[0] > 0  # the perturbed ball's Gaussians reach outside its pixels


@pytest.fixture
def ns_train(monkeypatch, tmp_path, tiny_sd):
    from nerfstudio.scripts import train

    def call(method: str, *args: str) -> str:
        argv = ["ns-train", method, "--output-dir", str(tmp_path / "out"), "--machine.device-type", "cpu"]
        monkeypatch.setattr(sys, "argv", [*argv, "--pipeline.guidance.model-id", str(tiny_sd), *args])
        with pytest.raises(SystemExit) as exit_info:
            train.entrypoint()
        assert not (tmp_path / "out").exists(), "bad input must stop before anything is written"
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message, message
        return message

    return call


def test_bad_regions_stop_with_one_line_before_anything_loads(ns_train, nerfacto_source, tmp_path):
    load = ["--load-dir", str(nerfacto_source), *PROMPTS]
    assert "empty or inverted" in ns_train("pds", *load, "--pipeline.region.box", "0", "0", "0", "1", "0", "1")
    assert "no training view sees" in ns_train("pds", *load, "--pipeline.region.box", "50", "0", "0", "1", "1", "1")
    assert "6 numbers" in ns_train("pds", *load, "--pipeline.region.box", "0", "0", "0", "1")
    (tmp_path / "masks").mkdir()
    assert "no mask for frame_00001.png" in ns_train("pds", *load, "--pipeline.region.masks", str(tmp_path / "masks"))
    assert "no training view sees" in ns_train("pnr", *load, "--pipeline.region.box", "50", "0", "0", "1", "1", "1")


def test_a_box_moved_in_the_viewer_is_kept_when_the_run_resumes(box_edit, torch_home, tmp_path):
    """The run's checkpoint keeps the box as the viewer left it (here written into the checkpoint as the viewer's
    controls save it); the resumed run edits with that box and saves it again."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint

    run = tmp_path / "moved" / box_edit.relative_to(box_edit.parents[2])  # a copy: the fixture's run stays as it is
    shutil.copytree(box_edit, run)
    path = newest_checkpoint(run / "nerfstudio_models")
    saved = load_checkpoint(path)
    state = saved["pipeline"]["region_controls._extra_state"]
    assert state["box"] == state["configured"]
    moved = {**state["box"], "centre": [c + 0.05 for c in state["box"]["centre"]]}
    saved["pipeline"]["region_controls._extra_state"] = {**state, "box": moved}
    torch.save(saved, path)
    resumed, result = run_tiny_edit("pds", run, tmp_path / "resumed", torch_home, 4, [])
    assert "Resuming the edit at step 2 of 4" in result.stdout and "Editing inside the region of a box" in result.stdout
    config = yaml.load((resumed / "config.yml").read_text(), Loader=yaml.Loader)
    assert list(config.pipeline.region.box) == [float(v) for v in BOX[1:]]
    final = load_checkpoint(newest_checkpoint(resumed / "nerfstudio_models"))
    kept = final["pipeline"]["region_controls._extra_state"]["box"]
    assert final["step"] == 3 and kept["centre"] == pytest.approx(moved["centre"], abs=1e-6)  # float32's
    assert kept["centre"] != pytest.approx(state["box"]["centre"], abs=1e-3)


def test_refine_keeps_a_box_edit_s_region_and_sdedits_only_inside_it(box_edit, scene, torch_home, tmp_path):
    """pds-refine of a pds edit made with a box takes the box (not typed again); the view its first step SDEdited, read
    from the run's checkpoint, is the render refining started from outside the box's pixels (the world's ray caster's)
    and SDEdit's inside them."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint

    flags = ["--pipeline.edit-every", "2", "--pipeline.datamanager.train-num-rays-per-batch", "1024"]
    refine, result = run_tiny_edit("pds-refine", box_edit, tmp_path / "refine", torch_home, 1, flags)
    assert "Editing inside the region of a box" in result.stdout
    state = load_checkpoint(newest_checkpoint(refine / "nerfstudio_models"))["pipeline"]
    (index,) = state["refined"].nonzero()[:, 0].tolist()
    refined = state["refined_images"][index].float() / 255
    pipeline = setup_pipeline(refine)  # renders the views refining starts from, as the run did
    start = pipeline.initial_renders[index]
    name = Path(pipeline.datamanager.train_dataset.image_filenames[index]).name
    inside = torch.from_numpy(box_pixels(scene, name, refined.shape[0]))
    assert inside.sum() > 20 and (~inside).sum() > 200
    assert torch.allclose(refined[~inside], start[~inside], atol=2 / 255)  # 8-bit, and the render a little off its own
    assert (refined[inside] - start[inside]).abs().mean() > 0.02  # SDEdit's own image there


BEFORE_REGIONS = "586c7333a2920264c80e75ec659f2a77df6d964d"
"""The last commit before regions existed (the parent of the commit that brought them)."""


@pytest.fixture(scope="module")
def code_before_regions(tmp_path_factory) -> Path:
    """This repository's files at :data:`BEFORE_REGIONS` (``git archive``), in a folder of their own."""
    repo = Path(__file__).resolve().parents[2]
    archive = subprocess.run(["git", "-C", str(repo), "archive", BEFORE_REGIONS], capture_output=True, check=False)
    if archive.returncode != 0:  # a checkout without the history (a source archive)
        pytest.skip(f"needs this repository's git history, commit {BEFORE_REGIONS[:7]}: {archive.stderr.decode().strip()}")
    folder = tmp_path_factory.mktemp("before_regions")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def edit_with_code(code: Path, method: str, source: Path, output: Path, torch_home: Path, steps: int, flags: List[str]) -> Path:
    """``ns-train <method>`` run by the code in ``code`` (its own toy_world harness and package, first on the path)."""
    script = (
        "import sys; from pathlib import Path; from toy_world.runs import run_tiny_edit; "
        "a = sys.argv[1:]; print(run_tiny_edit(a[0], Path(a[1]), Path(a[2]), Path(a[3]), int(a[4]), a[5:])[0])"
    )
    command = [sys.executable, "-c", script, method, str(source), str(output), str(torch_home), str(steps), *flags]
    env = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


NO_REGION_EDITS = {
    "pds-nerfacto": ("pds", "nerfacto", []),
    "pds-splatfacto": ("pds", "splatfacto", []),
    "pnr-nerfacto": ("pnr", "nerfacto", ["--pipeline.protocol", "objects", "--pipeline.eta-selection-steps", "2", "--pipeline.perturbation.loss-window", "1",
                                         "--pipeline.edit-steps", "2", "--pipeline.revise-steps", "1", "--pipeline.interlevel-num-rays", "64"]),
}  # fmt: skip


@pytest.mark.parametrize("edit", NO_REGION_EDITS)
def test_without_a_region_an_edit_is_the_edit_before_regions_bit_for_bit(
    edit, code_before_regions, nerfacto_source, splat_source, tiny_sd, torch_home, tmp_path
):  # fmt: skip
    """The same ``ns-train`` edit, with no region, run by the code of the commit before regions existed and by this code,
    from the same source: the scene after every step (each checkpoint's every model tensor) bit for bit the same. pnr
    runs through Alg. 2's selection steps, the perturbation, edit and revise steps (the objects protocol typed: it was
    the default then). Seen failing with the guided render scaled by 1.0001 where no region is given."""
    method, representation, extra = NO_REGION_EDITS[edit]
    source = nerfacto_source if representation == "nerfacto" else splat_source
    steps = 5 if method == "pnr" else 3
    flags = ["--pipeline.guidance.model-id", str(tiny_sd), *PROMPTS, *extra, "--steps-per-save", "1", "--save-only-latest-checkpoint", "False"]
    before = edit_with_code(code_before_regions, method, source, tmp_path / "before", torch_home, steps, flags)
    now, _ = run_tiny_edit(method, source, tmp_path / "now", torch_home, steps, flags)
    assert "RegionConfig" not in (before / "config.yml").read_text()  # the code before regions ran it
    saved = sorted(path.name for path in (before / "nerfstudio_models").glob("*.ckpt"))
    assert saved == sorted(path.name for path in (now / "nerfstudio_models").glob("*.ckpt")) and len(saved) >= steps - 1
    for name in saved:
        old = torch.load(before / "nerfstudio_models" / name, map_location="cpu", weights_only=False)["pipeline"]
        new = torch.load(now / "nerfstudio_models" / name, map_location="cpu", weights_only=False)["pipeline"]
        model = [key for key in old if key.startswith("_model.")]
        assert model and sorted(model) == sorted(key for key in new if key.startswith("_model.")), name
        changed = [key for key in model if not torch.equal(old[key], new[key])]
        assert not changed, (name, changed)


def test_masks_alone_limit_each_step_to_the_masked_pixels(box_edit, scene, tmp_path):
    """A folder of the ball's masks, as a user paints them (white on the ball, at the images' size): the masks each step
    applies are the step's views' masks at the guidance resolution (nearest), and no box is shown."""
    import torch.nn.functional as F
    from PIL import Image

    from toy_world.region_scene import THINGS

    pipeline, masks = with_ball_masks(box_edit, scene, tmp_path)
    assert pipeline.region_controls is None and pipeline.region.box is None and THINGS[0].shape == "ball"
    step = 25
    pipeline.get_train_loss_dict(step)
    used = pipeline.region_masks_in_use
    for j, index in enumerate(pipeline.step_views(step)):
        name = Path(pipeline.datamanager.train_dataset.image_filenames[index]).name
        painted = torch.from_numpy(np.asarray(Image.open(masks / name)) > 127)[None, None].float()
        expected = F.interpolate(painted, size=used.shape[-2:], mode="nearest")[0, 0]
        assert torch.equal(used[j, 0], expected) and expected.sum() > 3
