"""The toy world's multi-view prior's training script (toy_world.train_multiview_prior) on a few steps: the folder it
writes is a multi-view prior in MVDream's format, with its card; the UNet it starts from is the single-view prior's;
and the committed prior's targets under the released objective at the guidance scale the toy world's runs pass."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from toy_world import PRIOR
from toy_world.runs import COMMAND_TIMEOUT
from toy_world.train_prior import read_card, weight_files


def test_the_script_writes_a_multiview_prior_folder_with_its_card(tmp_path):
    from pds_nerfstudio.priors.multiview import MultiViewInfo, load_multiview_unet, read_multiview_info

    output = tmp_path / "mv"
    command = [sys.executable, "-m", "toy_world.train_multiview_prior", "--output", str(output), "--groups", "8",
               "--steps", "2", "--batch", "2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    info = read_multiview_info(output)
    assert info == MultiViewInfo(4, "mvdream")
    card = read_card(output)
    assert card["sha256"] == weight_files(output) and card["steps"] == 2 and len(card["captions"]) == 8
    unet = load_multiview_unet(output, info)  # the projection class embedding is there, the processors installed
    assert type(unet.attn_processors["mid_block.attentions.0.transformer_blocks.0.attn1.processor"]).__name__ == "MultiViewAttnProcessor"


def test_training_starts_from_the_single_view_prior_and_groups_are_orbits_of_one_object():
    """At its start the multi-view UNet predicts as the single-view prior's for any camera (the camera's projection
    ends in a zero layer); a rendered group is 4 views of one object, each of which the classifier reads as it."""
    from diffusers import UNet2DConditionModel

    from toy_world.classify import read
    from toy_world.train_multiview_prior import multiview_unet_from, render_group

    base = UNet2DConditionModel.from_pretrained(PRIOR / "unet").eval()
    unet = multiview_unet_from(base).eval()
    x = torch.randn(4, 4, 16, 16)
    text = torch.randn(4, 16, base.config.cross_attention_dim)
    with torch.no_grad():
        theirs = base(x, torch.full((4,), 400), text).sample
        ours = unet(x, torch.full((4,), 400), text, class_labels=torch.randn(4, 16)).sample
    assert torch.allclose(theirs, ours, atol=1e-5)
    images, c2w = render_group(np.random.default_rng(1), torch.Generator().manual_seed(1), "green", "cube", 32)
    assert images.shape == (4, 32, 32, 3) and c2w.shape == (4, 4, 4)
    assert sum((read(image).colour, read(image).shape) == ("green", "cube") for image in images) >= 3


def test_the_camera_projection_starts_from_the_seed_whatever_ran_before():
    """The one layer the script adds draws its weights from ``--seed``, not from whatever the global generator was
    left at: the same seed makes the same projection, another seed another; the caller's generator is left as it was."""
    from diffusers import UNet2DConditionModel

    from toy_world.train_multiview_prior import multiview_unet_from

    base = UNet2DConditionModel.from_pretrained(PRIOR / "unet")
    first = multiview_unet_from(base, seed=3).class_embedding.linear_1.weight.detach().clone()
    torch.randn(100)  # the global generator moved on, as the script's rendering and encoding move it
    again = multiview_unet_from(base, seed=3).class_embedding.linear_1.weight
    other = multiview_unet_from(base, seed=4).class_embedding.linear_1.weight
    assert torch.equal(first, again) and not torch.equal(first, other)
    state = torch.random.get_rng_state()
    multiview_unet_from(base, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_committed_multiview_prior_is_the_one_its_card_describes():
    from pds_nerfstudio.priors.multiview import MultiViewInfo, load_multiview_unet, read_multiview_info

    folder = PRIOR.parent / "multiview_prior"
    card = read_card(folder)
    assert card["sha256"] == weight_files(folder) and card["base"] == "toy_world/prior"
    info = read_multiview_info(folder)
    assert info == MultiViewInfo(4, "mvdream")
    assert load_multiview_unet(folder, info).config.class_embed_type == "projection"


def test_at_the_toy_world_s_scale_the_released_objective_holds_the_red_cube_and_at_the_release_s_it_does_not():
    """Why the toy world's pnr runs pass TOY_MULTIVIEW_GUIDANCE_SCALE: the released objective's targets (the product's
    MultiViewGuidance at its defaults but the scale) at the world's own red cube, from orbit groups as the edit draws
    them, decoded and read by the classifier, are that cube at the toy scale at t 100 and 300 (pixels within 15% of
    the decoded latents', red on most views; the bench's 8 groups: within 10%); at the release's 50 a field over twice
    its size that is not red (bench/multiview_targets.py has every t). Seen failing with the guidance's sign flipped
    in reconstruction_target (eps_cond - s (eps_cond - eps_negative))."""
    from pds_nerfstudio.priors.multiview_guidance import MultiViewGuidance, MultiViewGuidanceConfig
    from toy_world import MULTIVIEW_PRIOR
    from toy_world.multiview_targets import decoded_targets, orbit_renders, read_views
    from toy_world.train_multiview_prior import TOY_MULTIVIEW_GUIDANCE_SCALE
    from toy_world.world import Thing, caption

    views, cameras = orbit_renders(lambda turn: Thing("red", "cube", (0.0, 0.0), 1.0, turn), groups=4)
    guidance = MultiViewGuidance(MultiViewGuidanceConfig(model_id=str(MULTIVIEW_PRIOR)), "cpu")
    with torch.no_grad():
        latents = guidance.encode_images(views, torch.Generator().manual_seed(1))
    cube = read_views(guidance.decode_latents(latents), "red")
    assert cube.colour_share >= 0.75 and cube.cube_share >= 0.9, cube
    for scale in (TOY_MULTIVIEW_GUIDANCE_SCALE, 50.0):
        for t in (100, 300):
            target = read_views(decoded_targets(guidance, latents, cameras, caption("red", "cube"), t, scale).images, "red")
            growth = target.mean_pixels / cube.mean_pixels
            if scale == TOY_MULTIVIEW_GUIDANCE_SCALE:
                assert abs(growth - 1) < 0.15 and target.colour_share >= 0.75, (t, growth, target)
            else:
                assert growth > 2 and target.colour_share <= 0.25, (t, growth, target)


def test_max_turn_0_renders_every_cube_facing_the_axes_and_the_cameras_rate_is_the_one_its_projection_steps_at():
    """The two settings bench/multiview_cameras.py measures priors of: ``--max-turn 0`` draws each group's cube at
    turn 0 (its views are the world's cube at turn 0 at the group's cameras), and ``--camera-lr-scale`` is the rate the
    camera's projection takes its first step at (Adam's first step moves each weight by its rate, times the first
    EMA's 0.9), the rest at the base rate."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from toy_world.train_multiview_prior import multiview_unet_from, render_group, render_orbit_group, train_unet
    from toy_world.world import Thing

    images, _ = render_group(np.random.default_rng(3), torch.Generator().manual_seed(3), "green", "cube", 32, max_turn=0.0)
    scale = float(np.random.default_rng(3).uniform(0.8, 1.2))
    expected, _ = render_orbit_group(Thing("green", "cube", (0.0, 0.0), scale, 0.0), torch.Generator().manual_seed(3), 32)
    assert np.array_equal(images, expected)
    for max_turn in (45.0, 90.0):  # the turn drawn in [0, max_turn] degrees: the default's any turn, half of it at 45
        turned, _ = render_group(np.random.default_rng(3), torch.Generator().manual_seed(3), "green", "cube", 32, max_turn=max_turn)
        rng = np.random.default_rng(3)
        scale, share = float(rng.uniform(0.8, 1.2)), float(rng.uniform(0, 1))
        at, _ = render_orbit_group(Thing("green", "cube", (0.0, 0.0), scale, float(np.deg2rad(share * max_turn))), torch.Generator().manual_seed(3), 32)
        assert np.allclose(turned, at, atol=1e-6) and not np.array_equal(turned, expected)

    base = UNet2DConditionModel.from_pretrained(PRIOR / "unet").eval()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 4, 16, 16, generator=generator)
    cameras = torch.eye(4).expand(2, 4, 4, 4).clone()
    cameras[..., :3, 3] = torch.randn(2, 4, 3, generator=generator)
    hidden = torch.randn(2, 16, base.config.cross_attention_dim, generator=generator)
    moved = {}
    for camera_lr_scale in (1.0, 10.0):
        unet = multiview_unet_from(base)
        before = {name: p.detach().clone() for name, p in unet.named_parameters()}
        train_unet(unet, latents, cameras, hidden, torch.tensor([0, 0]), 1, 1, 2, 0.0, torch.Generator().manual_seed(1),
                   DDPMScheduler(), lambda text: None, camera_lr_scale)  # fmt: skip
        after = {name: p.detach() for name, p in unet.named_parameters()}
        moved[camera_lr_scale] = {name: float((after[name] - before[name]).abs().max()) for name in before}
    first_step = 0.9 * 2e-4 / 100  # the warmup's first rate, through the first EMA
    stepped = [name for name in moved[1.0] if moved[1.0][name] > 0.1 * first_step]  # linear_1: no gradient behind the zero layer, weight decay only
    assert "class_embedding.linear_2.weight" in stepped and len(stepped) > 100
    for name in stepped:  # float32 weights near 1 step in units of 1.2e-7
        assert moved[1.0][name] == pytest.approx(first_step, abs=2.5e-7), name
        rate = 10.0 if name.startswith("class_embedding.") else 1.0
        assert moved[10.0][name] == pytest.approx(first_step * rate, abs=2.5e-7 * rate), name
