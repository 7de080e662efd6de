"""Perturb-and-Revise building blocks: eta selection, perturbation, schedules, IPG weights and LPIPS."""

from __future__ import annotations

import pytest
import torch

from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.priors.guidance import GuidanceConfig
from pds_nerfstudio.scenes.representations import Nerfacto
from pds_nerfstudio.score_distillation.gradients import surrogate_loss
from pnr_nerfstudio.ipg import IdentityPreservingLoss, IPGConfig
from pnr_nerfstudio.perturbation import (
    PerturbationConfig,
    edited_parameters,
    eta_from_loss_change,
    loss_change,
    perturbed_values,
    select_eta,
    selection_loss,
)
from pnr_nerfstudio.pipeline import PnRPipelineConfig
from pnr_nerfstudio.schedules import Phase, PhasePlan, TimestepAnnealingConfig, ipg_weight

# ---------------------------------------------------------------------------------------------
# eta selection (Alg. 2)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eta_max, d_min", [(0.6, 1000.0), (1.0, 50.0)])
def test_eta_is_zero_when_the_loss_falls_by_d_min(eta_max, d_min):
    assert eta_from_loss_change(-d_min, eta_max, d_min) == 0.0
    assert eta_from_loss_change(-1.06e6, eta_max, d_min) == 0.0  # a fall the toy world's prior gives; 2^1059 overflows


@pytest.mark.parametrize("eta_max, d_min", [(0.6, 1000.0), (1.0, 50.0)])
def test_eta_approaches_eta_max_as_the_loss_grows(eta_max, d_min):
    assert eta_from_loss_change(0.0, eta_max, d_min) == pytest.approx(eta_max / 2)  # one half-life above the zero
    assert eta_from_loss_change(d_min, eta_max, d_min) == pytest.approx(0.75 * eta_max)
    large = eta_from_loss_change(30 * d_min, eta_max, d_min)
    assert large < eta_max and large == pytest.approx(eta_max, abs=1e-8)


def test_eta_is_never_negative_and_grows_with_the_loss_change():
    deltas = torch.linspace(-5000, 5000, 101).tolist()
    etas = [eta_from_loss_change(d) for d in deltas]
    assert all(0.0 <= eta <= 0.6 for eta in etas)
    assert all(eta == 0.0 for d, eta in zip(deltas, etas) if d <= -1000)
    assert all(b >= a for a, b in zip(etas, etas[1:]))


def test_loss_change_compares_the_first_and_last_windows():
    losses = [1.0, 3.0, 10.0, 10.0, 6.0, 8.0]
    assert loss_change(losses, 2) == pytest.approx(7.0 - 2.0)
    assert loss_change(losses, 6) == 0.0
    with pytest.raises(ValueError):
        loss_change(losses, 7)
    assert select_eta(losses, 2) == pytest.approx(0.6 * (1 - 2 ** (-1005 / 1000)))


def test_the_selection_loss_is_the_x0_reconstruction_loss_in_released_units():
    """0.5 ||x0 - x0_hat||^2 / B summed over a 4x32x32 latent, the released code's; other latent sizes scaled per element."""
    torch.manual_seed(0)
    x0, x0_hat = torch.randn(2, 4, 32, 32), torch.randn(2, 4, 32, 32)
    assert selection_loss(x0, x0_hat) == pytest.approx(0.5 * (x0 - x0_hat).pow(2).sum().item() / 2, rel=1e-6)
    assert selection_loss(x0, x0_hat) == pytest.approx(surrogate_loss(x0, x0 - x0_hat, reduction="sum").item(), rel=1e-6)
    large = torch.randn(1, 4, 64, 64)  # a 512 px view: 4 times the elements, a quarter of the sum
    assert selection_loss(large, torch.zeros_like(large)) == pytest.approx(0.5 * large.pow(2).sum().item() / 4, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Perturbation (Alg. 1)
# ---------------------------------------------------------------------------------------------


LINEAR = Nerfacto().interpolate


def _tensors(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(5, 3, generator=generator), "b.c": torch.randn(7, generator=generator)}


def test_perturbation_endpoints_are_exact_and_it_mixes_in_between():
    source, fresh = _tensors(0), _tensors(1)
    for eta, expected in ((0.0, source), (1.0, fresh)):
        theta = perturbed_values(list(source), source, fresh, eta, LINEAR)
        assert all(torch.equal(theta[k], expected[k]) for k in theta)
    theta = perturbed_values(list(source), source, fresh, 0.25, LINEAR)
    assert all(torch.allclose(theta[k], 0.75 * source[k] + 0.25 * fresh[k]) for k in theta)


def test_perturbation_rejects_bad_input():
    source, fresh = _tensors(0), _tensors(1)
    with pytest.raises(ValueError):
        perturbed_values(list(source), source, fresh, 1.5, LINEAR)
    with pytest.raises(KeyError):
        perturbed_values(["missing"], source, fresh, 0.5, LINEAR)
    with pytest.raises(ValueError):
        perturbed_values(["a"], source, {**fresh, "a": torch.zeros(3, 5)}, 0.5, LINEAR)


def _tiny_edit_model(seed: int):
    from nerfstudio.data.scene_box import SceneBox

    from pds_nerfstudio.scenes.models import EditNerfactoModelConfig

    config = EditNerfactoModelConfig(
        num_levels=4, max_res=64, log2_hashmap_size=10, features_per_level=2, hidden_dim=8, hidden_dim_color=8,
        appearance_embed_dim=4, num_proposal_samples_per_ray=(8, 8), num_nerf_samples_per_ray=8,
    )  # fmt: skip
    for args in config.proposal_net_args_list:
        args.update(hidden_dim=8, log2_hashmap_size=8, num_levels=2, max_res=32)
    torch.manual_seed(seed)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3, metadata={})
    with torch.no_grad():  # as a trained source: pose refinements and appearance codes that are not zero
        model.camera_optimizer.pose_adjustment.normal_(generator=torch.Generator().manual_seed(seed))
        model.field.embedding_appearance.embedding.weight.normal_(generator=torch.Generator().manual_seed(seed))
    return model


def test_perturbing_a_nerfacto_edit_model_touches_only_the_field_and_proposal_networks():
    model, source, fresh = _tiny_edit_model(0), _tiny_edit_model(0), _tiny_edit_model(1)
    names = set(edited_parameters(model))
    assert any(n.startswith("proposal_networks.") for n in names) and any(n.startswith("field.") for n in names)
    assert not any("camera_optimizer" in n or "embedding_appearance" in n for n in names)
    source_state = {n: p.detach() for n, p in source.named_parameters()}
    fresh_state = {n: p.detach() for n, p in fresh.named_parameters()}

    nerfacto = Nerfacto()
    nerfacto.assign(model, perturbed_values(list(names), source_state, fresh_state, 0.0, nerfacto.interpolate))
    assert all(torch.equal(p, source_state[n]) for n, p in model.named_parameters())

    nerfacto.assign(model, perturbed_values(list(names), source_state, fresh_state, 1.0, nerfacto.interpolate))
    for name, p in model.named_parameters():
        expected = fresh_state[name] if name in names else source_state[name]
        assert torch.equal(p, expected), name
    assert not torch.equal(model.camera_optimizer.pose_adjustment, fresh.camera_optimizer.pose_adjustment)


# ---------------------------------------------------------------------------------------------
# Phases and schedules
# ---------------------------------------------------------------------------------------------


def test_phases_are_values_of_the_step():
    plan = PhasePlan(50, 1500, 1000)
    assert plan.total_steps == 2550
    assert [plan.phase(s) for s in (0, 49, 50, 1549, 1550, 2549, 9999)] == [
        Phase.ETA_SELECTION, Phase.ETA_SELECTION, Phase.EDIT, Phase.EDIT, Phase.REVISE, Phase.REVISE, Phase.REVISE,
    ]  # fmt: skip
    assert plan.step_in_phase(50) == 0 and plan.step_in_phase(1551) == 1
    given = PnRPipelineConfig(perturbation=PerturbationConfig(eta=0.6)).phases
    assert given == PhasePlan(0, 1500, 1000) and given.phase(0) is Phase.EDIT
    assert PnRPipelineConfig().phases == plan


def test_timestep_annealing_endpoints_and_midpoint():
    annealing = TimestepAnnealingConfig()
    assert annealing.t_ratio_range(0, 1500) == (0.75, 0.75)
    assert annealing.t_ratio_range(600, 1500) == pytest.approx(((0.75 + 0.02) / 2, (0.75 + 0.40) / 2))
    assert annealing.t_ratio_range(1200, 1500) == pytest.approx((0.02, 0.40))  # 80% of the edit steps
    assert annealing.t_ratio_range(1499, 1500) == pytest.approx((0.02, 0.40))


def test_timestep_range_over_the_phases():
    plan = PhasePlan(50, 1500, 1000)
    annealing = TimestepAnnealingConfig()
    assert annealing.at(plan, 0) == annealing.at(plan, 49) == annealing.at(plan, 50) == (0.75, 0.75)
    assert annealing.at(plan, 50 + 1200) == pytest.approx((0.02, 0.40))
    assert annealing.at(plan, 1550) == (0.75, 0.75)  # the released code's IPG stage anneals again
    assert annealing.at(plan, 1550 + 800) == pytest.approx((0.02, 0.40))
    assert TimestepAnnealingConfig(restart_at_revise=False).at(plan, 1550) == (0.02, 0.40)
    assert annealing.at(plan, 50 + 600, end=(0.25, 0.25)) == pytest.approx((0.5, 0.5))  # the viewer's end range


def test_ipg_weights_at_start_half_and_end():
    ipg = IPGConfig()
    assert ipg.weights(0, 1000) == (30000.0, 300.0)
    assert ipg.weights(250, 1000) == pytest.approx((15000.0, 150.0))
    assert ipg.weights(500, 1000) == (0.0, 0.0)
    assert ipg.weights(999, 1000) == (0.0, 0.0)
    assert ipg_weight(1.0, 3, 4, 1.0) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------
# IPG distances
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ipg_loss() -> IdentityPreservingLoss:
    return IPGConfig().setup(device="cpu")  # VGG16 backbone from the seeded TORCH_HOME


def test_lpips_of_identical_images_is_zero(ipg_loss):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    terms = ipg_loss(image, image.clone())
    assert terms["l1"].item() == 0.0 and terms["lpips"].item() == 0.0


def test_ipg_terms_are_the_released_ones(ipg_loss):
    """Released form (the default): both images resized to a 256 px short side, LPIPS (VGG, v0.1) given the [0, 1]
    images directly and summed over the views; pinned against a direct lpips call on the same images."""
    import lpips

    generator = torch.Generator().manual_seed(0)
    render, source = torch.rand(2, 1, 3, 64, 96, generator=generator)
    size = (256, 384)
    resized = [torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True) for x in (render, source)]
    direct = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    terms = ipg_loss(render, source)
    assert terms["lpips"].item() == pytest.approx(direct(*resized).sum().item(), rel=1e-5)
    assert terms["l1"].item() == pytest.approx((resized[0] - resized[1]).abs().mean().item(), rel=1e-5)
    normalised = IPGConfig(lpips_input="normalised").setup(device="cpu")(render, source)["lpips"]
    assert normalised.item() == pytest.approx(direct(2 * resized[0] - 1, 2 * resized[1] - 1).sum().item(), rel=1e-5)
    assert abs(normalised.item() - terms["lpips"].item()) > 1e-4  # the two forms differ


def test_ipg_distances_of_different_images_are_positive_and_reach_the_render():
    ipg_loss = IPGConfig(resolution=0).setup(device="cpu")  # as rendered
    generator = torch.Generator().manual_seed(0)
    render = torch.rand(1, 3, 32, 32, generator=generator).requires_grad_(True)
    source = torch.rand(1, 3, 32, 32, generator=generator)
    terms = ipg_loss(render, source)
    assert terms["l1"].item() == pytest.approx((render - source).abs().mean().item())
    assert terms["lpips"].item() > 0
    (terms["l1"] + terms["lpips"]).backward()
    assert render.grad is not None and render.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in ipg_loss.lpips.parameters())


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, flag",
    [
        (PnRPipelineConfig(perturbation=PerturbationConfig(eta=1.5)), "--pipeline.perturbation.eta 1.5"),
        (PnRPipelineConfig(perturbation=PerturbationConfig(eta=-0.1)), "--pipeline.perturbation.eta -0.1"),
        (PnRPipelineConfig(perturbation=PerturbationConfig(eta_max=2.0)), "--pipeline.perturbation.eta-max"),
        (PnRPipelineConfig(perturbation=PerturbationConfig(d_min=0.0)), "--pipeline.perturbation.d-min"),
        (PnRPipelineConfig(perturbation=PerturbationConfig(loss_window=60)), "--pipeline.perturbation.loss-window"),
        (PnRPipelineConfig(eta_selection_steps=0), "--pipeline.eta-selection-steps 0"),
        (PnRPipelineConfig(edit_steps=-1), "--pipeline.edit-steps -1"),
        (PnRPipelineConfig(revise_steps=-1), "--pipeline.revise-steps -1"),
        (PnRPipelineConfig(coarse_resolution=-64), "--pipeline.coarse-resolution -64"),
        (PnRPipelineConfig(ipg=IPGConfig(resolution=-1)), "--pipeline.ipg.resolution -1"),
        (PnRPipelineConfig(interlevel_num_rays=-1), "--pipeline.interlevel-num-rays"),
        (PnRPipelineConfig(annealing=TimestepAnnealingConfig(start=(0.8, 0.5))), "--pipeline.annealing.start"),
        (PnRPipelineConfig(annealing=TimestepAnnealingConfig(end_fraction=0.0)), "--pipeline.annealing.end-fraction"),
        (PnRPipelineConfig(ipg=IPGConfig(decay_fraction=1.5)), "--pipeline.ipg.decay-fraction"),
        (PnRPipelineConfig(ipg=IPGConfig(l1_loss_mult=-1.0)), "--pipeline.ipg.l1-loss-mult"),
    ],
)
def test_bad_pnr_flags_are_one_line_errors(config, flag):
    with pytest.raises(InputError) as error:
        config.check("cpu")
    assert flag in str(error.value) and "\n" not in str(error.value)


def test_a_given_eta_needs_no_loss_window():
    PerturbationConfig(eta=0.6, loss_window=100).check(selection_steps=50)


# ---------------------------------------------------------------------------------------------
# The paper's two protocols
# ---------------------------------------------------------------------------------------------


def test_the_real_scenes_protocol_sets_the_papers_values_and_flags_typed_beside_it_win():
    real = PnRPipelineConfig(protocol="real-scenes").with_protocol(TypedFlags.from_argv(["--protocol", "real-scenes"]))
    assert real.perturbation.eta == 0.6 and real.phases == PhasePlan(0, 15000, 0)  # no selection, no revise
    assert not real.annealing.enabled and real.guidance.t_ratio_range == (0.02, 0.98)  # PDS's range, not annealed
    assert real.learning_rate_schedule == "scheduled" and real.coarse_resolution == 0 and real.views_per_step == 1
    flagged = PnRPipelineConfig(protocol="real-scenes", edit_steps=700, perturbation=PerturbationConfig(eta=0.3))
    flagged = flagged.with_protocol(TypedFlags.from_argv(["--edit-steps", "700", "--perturbation.eta", "0.3"]))
    assert flagged.edit_steps == 700 and flagged.perturbation.eta == 0.3 and flagged.revise_steps == 0
    # flags typed with the objects protocol's default values win too
    typed = ["--protocol", "real-scenes", "--revise-steps", "1000", "--perturbation.eta", "auto", "--views-per-step", "4"]
    kept = PnRPipelineConfig(protocol="real-scenes").with_protocol(TypedFlags.from_argv(typed))
    assert kept.revise_steps == 1000 and kept.perturbation.eta == "auto" and kept.phases == PhasePlan(50, 15000, 1000)
    assert kept.views_per_step == 4
    objects = PnRPipelineConfig(protocol="objects")
    assert objects.with_protocol(TypedFlags()) == objects  # the fields' defaults are the objects protocol's
    # auto: the paper's setting for the prior given, real scenes with a single-view Stable Diffusion
    assert PnRPipelineConfig().with_protocol(TypedFlags()) == PnRPipelineConfig(protocol="real-scenes").with_protocol(TypedFlags())


def test_without_annealing_the_guidance_range_is_allowed_and_used():
    annealing = TimestepAnnealingConfig(enabled=False)
    assert annealing.at(PhasePlan(0, 10, 0), 3) is None  # the guidance's own range, as in pds
    assert annealing.at(PhasePlan(5, 10, 0), 3) == (0.75, 0.75)  # eta selection: always at its fixed t
    guidance = GuidanceConfig(t_ratio_range=(0.02, 0.98))  # typed, at its default value
    typed = TypedFlags.from_argv(["--guidance.t-ratio-range", "0.02", "0.98"])
    with pytest.raises(InputError, match="pnr anneals t"):
        PnRPipelineConfig(guidance=guidance).check_flags(typed)
    PnRPipelineConfig(annealing=annealing, guidance=guidance).check_flags(typed)
    with pytest.raises(InputError, match="target prompt is empty"):  # past pnr's own checks, to the shared ones
        PnRPipelineConfig(annealing=annealing, guidance=guidance, revise_steps=0).check("cpu")


# ---------------------------------------------------------------------------------------------
# eta responds to the edit (Alg. 2 with the recorded loss in the released units)
# ---------------------------------------------------------------------------------------------


def toy_selection_eta(target_class: int, learning_rate: float, seed: int = 0) -> float:
    """Alg. 2 on the paper's 2D toy (exact two-blob denoiser, guidance 3): 50 PDS steps from class-A samples at
    t ratio 0.75 towards ``target_class``, each step's x0-reconstruction loss recorded as pnr records it."""
    from tests.toy2d import TwoBlobDiffusion, edit_samples, sd_alphas_cumprod

    model = TwoBlobDiffusion(sd_alphas_cumprod(), guidance_scale=3.0, std=0.15)
    losses: list = []
    edit_samples(
        model, "pds", num_samples=64, num_steps=50, learning_rate=learning_rate, t_ratio_range=(0.75, 0.75),
        seed=seed, target_class=target_class, on_step=lambda x0, out: losses.append(selection_loss(x0, out.x0_hat_tgt)),
    )  # fmt: skip
    return select_eta(losses, window=10)


def test_eta_responds_to_how_far_the_loss_falls():
    """A source/target pair the model cannot edit (A to A: the loss barely moves) gets about eta_max / 2; editing A to
    B, the loss falls by hundreds to thousands of d_min's units, and the faster it falls the smaller eta.
    (The tiny random Stable Diffusion of the other tests cannot show this: its loss rises for every prompt.)"""
    from tests.toy2d import CLASS_A, CLASS_B

    unmoved = toy_selection_eta(CLASS_A, 0.02)
    gentle, strong = toy_selection_eta(CLASS_B, 0.01), toy_selection_eta(CLASS_B, 0.02)
    assert unmoved == pytest.approx(0.3, abs=0.02)
    assert unmoved > gentle + 0.05 > strong + 0.1 and strong < 0.1  # graded, not pinned near eta_max / 2
    assert toy_selection_eta(CLASS_B, 0.01, seed=1) == pytest.approx(gentle, abs=0.02)  # the edit, not the noise


def test_a_resume_with_other_edit_or_revise_steps_ends_at_the_new_phases_total():
    from pathlib import Path

    from nerfstudio.engine.trainer import TrainerConfig

    from pds_nerfstudio.integration.source_run import Run

    started = PnRPipelineConfig(eta_selection_steps=4, perturbation=PerturbationConfig(loss_window=2), edit_steps=3, revise_steps=2)
    run = Run(Path("config.yml"), TrainerConfig(method_name="pnr", pipeline=started, max_num_iterations=9), None)
    typed = TypedFlags.from_argv(["--edit-steps", "10", "--revise-steps", "2"])  # 2: the run's own value, typed
    merged = PnRPipelineConfig(edit_steps=10, revise_steps=2).resumed_from(run, typed)
    assert (merged.edit_steps, merged.revise_steps, merged.eta_selection_steps) == (10, 2, 4)
    assert merged.resumed_max_num_iterations(run) == 16
    assert PnRPipelineConfig().resumed_from(run, TypedFlags()).resumed_max_num_iterations(run) == 9  # nothing typed
    given = Run(Path("config.yml"), TrainerConfig(method_name="pnr", pipeline=started, max_num_iterations=6), None)
    assert merged.resumed_max_num_iterations(given) == 6  # a run given its own --max-num-iterations keeps it


def test_a_region_added_when_resuming_after_the_perturbation_is_refused():
    """A pnr run perturbed without a region has perturbed its whole scene: a region typed on resume would freeze the
    outside perturbed. Refused once the checkpoint is past the perturbation step; before it (still selecting eta) the
    region is taken."""
    from pathlib import Path

    from nerfstudio.engine.trainer import TrainerConfig

    from pds_nerfstudio.integration.source_run import Run
    from pds_nerfstudio.regions.region import RegionConfig

    started = PnRPipelineConfig(eta_selection_steps=4, perturbation=PerturbationConfig(loss_window=2), edit_steps=3, revise_steps=2)
    typed = TypedFlags.from_argv(["--region.box", "0", "0", "0", "1", "1", "1"])
    now = PnRPipelineConfig(region=RegionConfig(box=(0.0, 0.0, 0.0, 1.0, 1.0, 1.0)))
    for step, refused in ((3, False), (4, True), (7, True)):  # the perturbation is at step 4, the first edit step
        run = Run(Path("config.yml"), TrainerConfig(method_name="pnr", pipeline=started), Path(f"step-{step:09d}.ckpt"))
        if refused:
            with pytest.raises(InputError, match="perturbed the whole scene at step 4, without a region"):
                now.resumed_from(run, typed)
        else:
            assert now.resumed_from(run, typed).region.given


# ---------------------------------------------------------------------------------------------
# The objects protocol with a multi-view prior (pnr_nerfstudio.objects)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def multiview_folder(tmp_path):
    """What the config reads of a multi-view prior before anything loads: its multiview.json."""
    from pds_nerfstudio.priors.multiview import MultiViewInfo

    MultiViewInfo(4).save(tmp_path)
    return str(tmp_path)


def test_a_multi_view_prior_takes_the_released_scale_and_size_and_flags_typed_at_pds_values_win(multiview_folder):
    from pds_nerfstudio.priors.multiview_guidance import MultiViewGuidanceConfig

    config = PnRPipelineConfig(guidance=GuidanceConfig(model_id=multiview_folder))
    released = config.with_protocol(TypedFlags.from_argv(["--guidance.model-id", multiview_folder]))
    assert released.protocol == "objects" and released.phases == PhasePlan(50, 1500, 1000)  # auto: the release's
    assert released.guidance.guidance_scale == 50.0 and released.render_resolution == 256
    assert isinstance(released.guidance_config(), MultiViewGuidanceConfig)
    assert released.guidance_config().negative_prompt == released.multiview.negative_prompt
    typed = TypedFlags.from_argv(["--guidance.guidance-scale", "100", "--render-resolution", "512"])  # pds's own values
    kept = config.with_protocol(typed)
    assert kept.guidance.guidance_scale == 100.0 and kept.render_resolution == 512
    single = PnRPipelineConfig(protocol="objects").with_protocol(TypedFlags())
    assert single.guidance.guidance_scale == 100.0 and single.guidance_config() is single.guidance


BAD_MULTIVIEW_FLAGS = [
    ({}, "--pipeline.multiview.object-centre X Y Z"),  # no object and no box
    ({"protocol": "real-scenes"}, "--pipeline.protocol real-scenes"),
    ({"multiview": {"object_centre": (0.0, 0.0, 0.0)}}, "go together"),
    ({"multiview": {"object_centre": (0.0, 0.0, 0.0), "object_radius": 0.0}}, "--pipeline.multiview.object-radius 0.0"),
    ({"multiview": {"object_centre": (0.0, 0.0, 0.0), "object_radius": 1.0}, "views_per_step": 3}, "--pipeline.views-per-step 3"),
    ({"multiview": {"object_centre": (0.0, 0.0, 0.0), "object_radius": 1.0, "fovy_range": (60.0, 15.0)}}, "--pipeline.multiview.fovy-range"),
    ({"multiview": {"object_centre": (0.0, 0.0, 0.0), "object_radius": 1.0, "std_rescale": 2.0}}, "--pipeline.multiview.std-rescale"),
    ({"region": {"masks": "masks"}, "multiview": {"object_centre": (0.0, 0.0, 0.0), "object_radius": 1.0}}, "--pipeline.region.masks"),
]
"""Flags that a multi-view prior's edit refuses, and the flag each one-line error names."""


@pytest.mark.parametrize(
    "method, changes, flag",
    [(method, changes, flag) for method in ("pnr", "pds") for changes, flag in BAD_MULTIVIEW_FLAGS if method == "pnr" or "protocol" not in changes],
)
def test_bad_multi_view_flags_are_one_line_errors(multiview_folder, changes, flag, method):
    """pnr and pds (which also guides orbit views with a multi-view prior) stop with the same one-line errors."""
    import dataclasses

    from pds_nerfstudio.methods.orbits import MultiViewConfig
    from pds_nerfstudio.methods.pds import PDSPipelineConfig
    from pds_nerfstudio.regions.region import RegionConfig

    values = dict(changes)
    if "multiview" in values:
        values["multiview"] = MultiViewConfig(**values["multiview"])
    if "region" in values:
        values["region"] = RegionConfig(**values["region"])
    config_class = PnRPipelineConfig if method == "pnr" else PDSPipelineConfig
    config = dataclasses.replace(config_class(guidance=GuidanceConfig(model_id=multiview_folder), views_per_step=4), **values)
    with pytest.raises(InputError) as error:
        config.check("cpu")
    assert flag in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("config_class", ["pnr", "pds"])
def test_orbit_views_are_not_counted_against_the_training_views(multiview_folder, config_class):
    """With a multi-view prior a step's views are orbit groups drawn round the object, so several devices and groups a
    step are not refused for want of training views (the check returns before it reads the capture: no data here)."""
    from pds_nerfstudio.methods.pds import PDSPipelineConfig

    config = (PnRPipelineConfig if config_class == "pnr" else PDSPipelineConfig)(guidance=GuidanceConfig(model_id=multiview_folder), views_per_step=8)
    assert not config.guides_training_views()
    config.check_parallel(4)  # 32 views a step
    assert PDSPipelineConfig().guides_training_views()


def test_a_nerfacto_edit_with_a_multi_view_prior_takes_the_released_adamw_groups_and_typed_rates_win(multiview_folder):
    """The released objects code's optimiser (AdamW, hash grid 0.01, MLPs 0.001) for a nerfacto edit with a multi-view
    prior; a rate typed on the command line wins even when it is the method config's default (0.01 for fields), and
    keeps AdamW; a single-view edit keeps nerfacto's Adam and has no field_grid group to type."""
    import copy
    import dataclasses

    from pds_nerfstudio.scenes.models import EditNerfactoModelConfig
    from pnr_nerfstudio.method_configs import pnr_method
    from pnr_nerfstudio.objects import AdamWOptimizerConfig

    trainer = copy.deepcopy(pnr_method.config)
    resolved = dataclasses.replace(
        PnRPipelineConfig(guidance=GuidanceConfig(model_id=multiview_folder)), protocol="objects",
        model=EditNerfactoModelConfig(grid_param_group=True),
    )  # fmt: skip
    trainer.pipeline = resolved
    typed = TypedFlags.from_argv(["--optimizers.fields.optimizer.lr", "0.01"])
    groups = trainer.edit_optimizers(resolved.default_optimizers(), typed.under("optimizers"))
    assert {group: type(settings["optimizer"]) for group, settings in groups.items()} == dict.fromkeys(
        ("proposal_networks", "field_grid", "fields"), AdamWOptimizerConfig
    )
    assert {group: settings["optimizer"].lr for group, settings in groups.items()} == {
        "proposal_networks": 0.01, "field_grid": 0.01, "fields": 0.01,  # fields typed at the method's default 0.01
    }  # fmt: skip
    untyped = trainer.edit_optimizers(resolved.default_optimizers(), TypedFlags())
    assert untyped["fields"]["optimizer"].lr == 0.001 and untyped["fields"]["optimizer"].weight_decay == 0.01
    built = untyped["fields"]["optimizer"].setup([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(built, torch.optim.AdamW) and built.param_groups[0]["betas"] == (0.9, 0.99)
    single = dataclasses.replace(resolved, guidance=GuidanceConfig(), protocol="objects")
    trainer.pipeline = single
    assert set(single.default_optimizers()) == {"proposal_networks", "fields"}
    with pytest.raises(InputError, match="--optimizers.field-grid"):
        trainer.edit_optimizers(single.default_optimizers(), TypedFlags.from_argv(["--optimizers.field-grid.optimizer.lr", "0.1"]).under("optimizers"))
