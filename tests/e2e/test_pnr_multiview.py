"""pnr's objects protocol with a multi-view prior (:mod:`pnr_nerfstudio.objects`) through the real ``ns-train pnr``, at
reduced counts: what each step gave the prior, read back from the step (a real run's logs, and steps of the run's own
pipeline set up from its config.yml with the UNet's calls recorded)."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from pds_nerfstudio.priors.multiview import camera_vectors
from pds_nerfstudio.priors.multiview_guidance import RELEASED_NEGATIVE_PROMPT
from pnr_nerfstudio.perturbation import RELEASED_LATENT_NUMEL
from tests.conftest import shared
from tests.priors.test_multiview import build_tiny_multiview_prior
from tests.priors.test_multiview_guidance import released_x0
from toy_world.runs import logged, run_tiny_edit

PROMPT = "a photo of a red cube"
CENTRE, RADIUS = (0.1, -0.1, 0.0), 0.5
SELECTION_STEPS, EDIT_STEPS, REVISE_STEPS = 2, 2, 1
FLAGS = [
    "--pipeline.tgt-prompt", PROMPT,
    "--pipeline.multiview.object-centre", *map(str, CENTRE),
    "--pipeline.multiview.object-radius", str(RADIUS),
    "--pipeline.eta-selection-steps", str(SELECTION_STEPS),
    "--pipeline.perturbation.loss-window", "1",
    "--pipeline.edit-steps", str(EDIT_STEPS),
    "--pipeline.revise-steps", str(REVISE_STEPS),
    "--pipeline.interlevel-num-rays", "64",
    "--logging.steps-per-log", "1",
]  # fmt: skip
"""The objects protocol's phases at reduced counts (released: 50, 1500, 1000), round an object off the origin."""


@pytest.fixture(scope="module")
def multiview_prior(tmp_path_factory):
    return shared(tmp_path_factory, "tiny_multiview_prior", lambda folder: build_tiny_multiview_prior(folder / "prior"))


@pytest.fixture(scope="module")
def run(source_run, multiview_prior, torch_home, tmp_path_factory):
    flags = ["--pipeline.guidance.model-id", str(multiview_prior), *FLAGS]
    steps = SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS
    return run_tiny_edit("pnr", source_run, tmp_path_factory.mktemp("pnr_mv"), torch_home, steps, flags)[0]


def test_a_run_logs_the_released_settings_at_each_step(run):
    """The run's own logs: scale 50 (the release's with MVDream; not typed), t = 750 on the 1000-step schedule at every
    eta-selection step, a selection loss recorded at each, and an orbit group drawn within the released ranges each
    step: a new one every editing step, the window's own while eta is selected."""
    metrics = {name: logged(run, name) for name in ("guidance_scale", "guidance_t", "orbit_elevation", "orbit_fovy", "eta_selection_loss")}
    steps = range(SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS)
    assert [metrics["guidance_scale"][s] for s in steps] == [50.0] * len(steps)
    assert [metrics["guidance_t"][s] for s in range(SELECTION_STEPS)] == [750.0] * SELECTION_STEPS
    assert all(math.isfinite(metrics["eta_selection_loss"][s]) for s in range(SELECTION_STEPS))
    elevations = [metrics["orbit_elevation"][s] for s in steps]
    assert all(0 <= e <= 30 for e in elevations)
    # eta selection cycles through a window's groups (here 1), so Alg. 2's windows see the same views; then new each step
    assert len(set(elevations[:SELECTION_STEPS])) == 1 and len(set(elevations)) == len(steps) - SELECTION_STEPS + 1
    assert all(15 <= metrics["orbit_fovy"][s] <= 60 for s in steps)


def test_adam_keeps_its_state_through_the_perturbation(run):
    """The released objects code perturbs the field in place under the same optimiser: at the end, every tensor's Adam
    step count is the run's number of steps (a reset at the perturbation would leave the edit and revise steps')."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint

    saved = load_checkpoint(newest_checkpoint(run / "nerfstudio_models"))["optimizers"]
    counts = {int(state["step"]) for group in saved.values() for state in group["state"].values()}
    assert counts == {SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS}  # a reset at the perturbation leaves EDIT + REVISE


RELEASED_RATES = {"proposal_networks": 1e-2, "field_grid": 1e-2, "fields": 1e-3}
"""The released objects code's rates: hash grid 0.01, MLPs 0.001 (nerfacto's proposal networks at the grid's)."""


def test_the_field_is_optimised_with_the_released_adamw_groups(run):
    """The optimisers the run stepped, read back from its checkpoint: AdamW (decoupled weight decay 0.01, betas 0.9 and
    0.99, eps 1e-15) on three groups, the field's hash grid alone in ``field_grid`` at 0.01 and its MLPs in ``fields`` at
    0.001; and the rate each group's update used, logged at every step of every phase."""
    from pds_nerfstudio.common.checkpoints import load_checkpoint
    from pds_nerfstudio.integration.source_run import newest_checkpoint
    from pds_nerfstudio.scenes.models import holds_hash_grid

    saved = load_checkpoint(newest_checkpoint(run / "nerfstudio_models"))["optimizers"]
    assert set(saved) == set(RELEASED_RATES)
    for group, rate in RELEASED_RATES.items():
        (settings,) = saved[group]["param_groups"]
        assert settings["decoupled_weight_decay"] is True and settings["weight_decay"] == 0.01, group
        assert tuple(settings["betas"]) == (0.9, 0.99) and settings["eps"] == 1e-15 and settings["lr"] == rate, group
    # which tensors each group stepped: the field's hash grid and nothing else in field_grid, its MLPs in fields
    field = setup_pipeline(run).model.field
    grid = [p for module in field.modules() if holds_hash_grid(module) for p in module.parameters()]
    mlps = [p for p in field.parameters() if p.requires_grad and all(p is not g for g in grid)]
    stepped = {group: sorted(tuple(s["exp_avg"].shape) for s in saved[group]["state"].values()) for group in ("field_grid", "fields")}
    assert stepped["field_grid"] == sorted(tuple(p.shape) for p in grid) and len(grid) >= 1
    assert stepped["fields"] == sorted(tuple(p.shape) for p in mlps) and len(mlps) >= 2
    steps = range(SELECTION_STEPS + EDIT_STEPS + REVISE_STEPS)
    for group, rate in RELEASED_RATES.items():
        logged_rates = logged(run, f"learning_rate_{group}")
        assert [logged_rates[s] for s in steps] == pytest.approx([rate] * len(steps)), group


def setup_pipeline(run):
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.train()
    return pipeline


@pytest.mark.parametrize("step", [0, SELECTION_STEPS + 1])
def test_each_step_gives_the_prior_one_t_its_group_s_cameras_and_the_negative_prompt(run, step):
    """A step of the run's own pipeline (an eta-selection step and an edit step), the UNet's one call recorded: one t for
    the group; the group's 4 cameras 90 degrees apart on one orbit round the object (the flags' centre in the scene's
    frame), at the drawn elevation, fov and distance, looking at it; the camera vectors the UNet got are those cameras
    relative to the centre, normalised (twice: conditional and negative branches); the negative prompt; the descended
    loss is the released objective and, at a selection step, Alg. 2's recorded loss is its value in released units."""
    pipeline = setup_pipeline(run)
    calls = []
    unet = pipeline.guidance.pipe.unet
    unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    predictions = []
    unet.register_forward_hook(lambda m, args, kwargs, out: predictions.append(out.sample), with_kwargs=True)
    outputs, losses, metrics = pipeline.get_train_loss_dict(step)
    ((args, kwargs),) = calls
    used = pipeline.orbit_step_in_use
    (group,) = used.groups
    assert torch.equal(args[1], used.output.t.repeat(8))  # one t for the 4 views, both branches
    if step < SELECTION_STEPS:
        assert int(used.output.t) == 750
    assert torch.equal(kwargs["class_labels"], torch.cat([used.cameras, used.cameras]))
    assert torch.equal(used.cameras, camera_vectors(group.object_c2w))
    # the cameras: the flags' centre carried into the scene's frame, the drawn orbit
    parser = pipeline.datamanager.train_dataparser_outputs
    transform, scale = parser.dataparser_transform.float(), parser.dataparser_scale
    centre = scale * (transform[:3, :3] @ torch.tensor(CENTRE) + transform[:3, 3])
    c2w = group.cameras.camera_to_worlds
    offsets = c2w[:, :3, 3] - centre
    assert torch.allclose(offsets.norm(dim=-1), torch.tensor(group.distance).expand(4), rtol=1e-4)
    relative = group.distance * math.tan(math.radians(group.fovy) / 2) / (scale * RADIUS)
    assert 0.8 - 1e-4 <= relative <= 1.0 + 1e-4 and 15 <= group.fovy <= 60 and 0 <= group.elevation <= 30
    elevations = torch.rad2deg(torch.asin(offsets[:, 2] / offsets.norm(dim=-1)))
    assert torch.allclose(elevations, torch.tensor(group.elevation).expand(4), atol=1e-3)
    azimuths = torch.rad2deg(torch.atan2(offsets[:, 1], offsets[:, 0]))
    steps_between = (azimuths.roll(-1) - azimuths) % 360
    assert torch.allclose(steps_between, torch.full((4,), 90.0), atol=1e-3)
    assert torch.allclose(-c2w[:, :3, 2], -offsets / offsets.norm(dim=-1, keepdim=True), atol=1e-5)  # looks at it
    focal = 0.5 * 16 / math.tan(math.radians(group.fovy) / 2)
    assert torch.allclose(group.cameras.fy.flatten(), torch.tensor(focal).expand(4), rtol=1e-5)
    assert torch.allclose(group.object_c2w[:, :3, 3], offsets, atol=1e-5)
    # the prompts: the target, then the released negative prompt as the unconditional branch
    text = kwargs["encoder_hidden_states"]
    assert torch.equal(text[:4], pipeline.guidance.text_embedding(PROMPT).expand(4, -1, -1))
    assert torch.equal(text[4:], pipeline.guidance.text_embedding(RELEASED_NEGATIVE_PROMPT).expand(4, -1, -1))
    # the target: scale 50 and std rescale 0.5 applied to this step's own predictions, by hand
    a_t = pipeline.guidance.alphas_cumprod[int(used.output.t)]
    target = released_x0(a_t, args[0][:4], predictions[0], scale=50.0, rescale=0.5)
    assert torch.allclose(used.output.reconstruction.x0, target, atol=1e-4, rtol=1e-4) and metrics["guidance_scale"] == 50.0
    # the objective: 0.5 sum (z - x0)^2 / B, and the selection loss its value per 4x32x32 latent
    objective = 0.5 * (used.latents - target).pow(2).sum() / 4
    assert torch.allclose(losses["guidance_loss"], objective, rtol=1e-5)
    if step < SELECTION_STEPS:
        recorded = float(pipeline.eta_selection_losses[step])
        assert recorded == pytest.approx(objective.item() * RELEASED_LATENT_NUMEL / used.latents[0].numel(), rel=1e-5)
    # the loss reaches the rendered orbit views
    render = outputs["rgb"]
    assert render.shape == (4, 3, 16, 16)
    render.retain_grad()
    losses["guidance_loss"].backward()
    assert render.grad is not None and render.grad.abs().sum() > 0


def test_a_revise_step_logs_the_pull_of_each_term_on_the_rendered_pixels(run):
    """A revise step of the run's own pipeline (the identity terms at their full released weights, compared as rendered):
    the norm of each term's gradient on the rendered orbit views, as logged, against each worked out on its own: the
    guidance's as the encoder's transpose applied to (z - x0) / 4, the L1's in closed form (30000 sign(r - s) / N),
    LPIPS's from the render and source render the step gave it, and the identity terms' sum and its cosine with the
    guidance's from those. Reading the pulls leaves the step's gradients as they are, and with the first steps rendered
    coarse (8 px, upsampled) they are read on the 8 px render the scene drew."""
    from pnr_nerfstudio.pipeline import revise_pulls

    pipeline = setup_pipeline(run)
    pipeline.config.ipg.resolution = 0  # as rendered: the L1's closed form needs no resize
    step = SELECTION_STEPS + EDIT_STEPS  # the first revise step
    pipeline.ipg = recorded = RecordedCalls(pipeline.ipg)
    gradients = {}
    for logs_pulls in (False, True):  # the same step without and with the pulls read: the same gradients
        pipeline.config.steps_per_log_image = 1 if logs_pulls else 10**6
        pipeline.model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        outputs, losses, metrics = pipeline.get_train_loss_dict(step)
        sum(losses.values()).backward()
        gradients[logs_pulls] = {n: p.grad.clone() for n, p in pipeline.model.named_parameters() if p.grad is not None}
    assert "revise_pull_guidance" in metrics and gradients[True].keys() == gradients[False].keys() and gradients[True]
    assert all(torch.equal(gradients[True][name], gradients[False][name]) for name in gradients[True])
    render, source = recorded.calls[-1]
    assert metrics["ipg_l1_mult"] == 30000.0 and metrics["ipg_lpips_mult"] == 300.0
    # L1: a mean over the N rendered values, so each differing value is pulled by 30000 / N
    l1_grad = 30000.0 * torch.sign(render - source).detach() / render.numel()
    assert (render != source).sum() > 0
    assert metrics["revise_pull_ipg_l1"] == pytest.approx(float(l1_grad.norm()), rel=1e-5)
    # LPIPS, summed over the 4 views, from the inputs the step compared
    image = render.detach().requires_grad_()
    (lpips_grad,) = torch.autograd.grad(300.0 * pipeline.ipg.lpips(image, source).mean() * 4, image)
    assert metrics["revise_pull_ipg_lpips"] == pytest.approx(float(lpips_grad.norm()), rel=1e-4)
    # the guidance: the objective's gradient on the latents, (z - x0) / 4, carried back through the encoder's sample
    guidance_grad = _guidance_pull(pipeline, step, outputs["rgb"].detach())
    assert metrics["revise_pull_guidance"] == pytest.approx(float(guidance_grad.norm()), rel=1e-4)
    identity = (l1_grad + lpips_grad).flatten()
    assert metrics["revise_pull_identity"] == pytest.approx(float(identity.norm()), rel=1e-4)
    cosine = float(identity @ guidance_grad.flatten() / (identity.norm() * guidance_grad.norm()))
    assert metrics["revise_pull_cosine"] == pytest.approx(cosine, rel=1e-3, abs=1e-5)
    assert revise_pulls(outputs["rgb"].detach(), losses) == {}  # no graph, nothing to read

    # coarse: the scene draws 8 px, upsampled to the 16 px the guidance and the identity terms see
    pipeline.config.coarse_resolution, pipeline.config.steps_per_log_image = 8, 1
    pipeline.guidance_views = drawn = RecordedViews(pipeline.guidance_views)
    outputs, losses, metrics = pipeline.get_train_loss_dict(step)
    coarse = drawn.calls[-1].detach()
    assert coarse.shape == (4, 3, 8, 8) and outputs["rgb"].shape == (4, 3, 16, 16)

    def upsampled(image):
        return torch.nn.functional.interpolate(image, size=(16, 16), mode="bilinear", align_corners=False)

    image = coarse.clone().requires_grad_()
    latents = pipeline.guidance.encode_images(upsampled(image), pipeline.view_generators(step))
    used = pipeline.orbit_step_in_use
    (guidance_grad,) = torch.autograd.grad(latents, image, (used.latents - used.output.reconstruction.x0) / 4)
    assert metrics["revise_pull_guidance"] == pytest.approx(float(guidance_grad.norm()), rel=1e-4)
    _, source = recorded.calls[-1]
    image = coarse.clone().requires_grad_()
    (l1_grad,) = torch.autograd.grad(30000.0 * (upsampled(image) - source).abs().mean(), image)
    assert metrics["revise_pull_ipg_l1"] == pytest.approx(float(l1_grad.norm()), rel=1e-4)


def _guidance_pull(pipeline, step, render):
    """The guidance objective's gradient on ``render``: (z - x0) / 4 on the step's latents, back through the encoder's
    sample drawn with the step's own generators."""
    used = pipeline.orbit_step_in_use
    image = render.clone().requires_grad_()
    latents = pipeline.guidance.encode_images(image, pipeline.view_generators(step))
    assert torch.allclose(latents, used.latents, atol=1e-6)
    (grad,) = torch.autograd.grad(latents, image, (used.latents - used.output.reconstruction.x0) / 4)
    return grad


class RecordedViews:
    """A method's stand-in that records what each call returned."""

    def __init__(self, wrapped):
        self.wrapped, self.calls = wrapped, []

    def __call__(self, *args, **kwargs):
        self.calls.append(self.wrapped(*args, **kwargs))
        return self.calls[-1]


class RecordedCalls:
    """A callable's stand-in that records the two tensors of each call and passes the call on."""

    def __init__(self, wrapped):
        self.wrapped, self.calls = wrapped, []

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __call__(self, first, second, **kwargs):
        self.calls.append((first, second))
        return self.wrapped(first, second, **kwargs)


# ----------------------------------------------------------------------------------------------
# pds with a multi-view prior (ours): PDS on orbit groups, each view's source the source scene's render of it
# ----------------------------------------------------------------------------------------------

SOURCE_PROMPT = "a photo of a red ball"
PDS_FLAGS = [
    "--pipeline.src-prompt", SOURCE_PROMPT,
    "--pipeline.tgt-prompt", PROMPT,
    "--pipeline.multiview.object-centre", *map(str, CENTRE),
    "--pipeline.multiview.object-radius", str(RADIUS),
    "--logging.steps-per-log", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def pds_run(source_run, multiview_prior, torch_home, tmp_path_factory):
    flags = ["--pipeline.guidance.model-id", str(multiview_prior), *PDS_FLAGS]
    return run_tiny_edit("pds", source_run, tmp_path_factory.mktemp("pds_mv"), torch_home, 2, flags)[0]


def test_pds_with_a_multiview_prior_distils_an_orbit_group_against_the_source_scene_s_renders_of_it(pds_run):
    """A step of the ``ns-train pds`` run's own pipeline with the live field moved off the source (as an edit has
    moved it), the VAE's and the UNet's calls recorded: one group of the prior's 4 views a step (untyped); the source
    latents are the encoding of the source scene's renders of the same orbit cameras, rendered here before the field
    moved (not the edited field's, not a captured image); one UNet call for source and target, one t for all of them
    on PDS's 500-step grid, both noised with the same noise; each view's camera in every branch; the source prompt,
    the target prompt, then PDS's empty unconditional prompt (not pnr's negative prompt); the loss reaches the orbit
    renders. Seen failing with the edited field's renders as the sources, and with a t drawn per view."""
    from pds_nerfstudio.methods.pds import PDSPipeline

    pipeline = setup_pipeline(pds_run)
    assert isinstance(pipeline, PDSPipeline) and pipeline.guides_orbits and pipeline.config.views_per_step == 4
    step = 1
    views, cameras, (group,) = pipeline.orbit_views(step)
    with torch.no_grad():  # the source scene at the step's orbit cameras, before the field moves
        source = torch.cat([pipeline.representation.render_image(pipeline.model, camera, index, 4096).permute(2, 0, 1)[None]
                            for camera, index in zip(cameras, views)])  # fmt: skip
        for parameter in pipeline.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    guidance = pipeline.guidance
    encoded, calls = [], []
    guidance.pipe.vae.encoder.register_forward_pre_hook(lambda m, args: encoded.append(args[0].detach()))
    guidance.pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    outputs, losses, metrics = pipeline.get_train_loss_dict(step)
    used = pipeline.orbit_step_in_use
    assert used.groups[0].azimuths == group.azimuths  # the step drew the groups drawn above
    # the sources: the source scene's renders of these orbit views
    edited, from_source = encoded
    # (nerfacto jitters its samples along each ray in training mode: two renders of one field differ a little)
    assert (from_source - (2 * source - 1)).abs().max() < 0.01
    assert (edited - (2 * source - 1)).abs().mean() > 0.01  # the edited field's renders are further off
    # the UNet: source then target, conditional then unconditional, one t, the cameras in every branch
    ((args, kwargs),) = calls
    assert args[0].shape[0] == 16 and torch.equal(args[1], used.output.t[:1].repeat(16))
    assert int(used.output.t[0]) in guidance.timestep_grid.tolist() and len(guidance.timestep_grid) == 500
    assert torch.equal(used.cameras, camera_vectors(group.object_c2w))
    assert torch.equal(kwargs["class_labels"], used.cameras.repeat(4, 1))
    text = kwargs["encoder_hidden_states"]
    for rows, prompt in ((slice(0, 4), SOURCE_PROMPT), (slice(4, 8), PROMPT), (slice(8, 16), "")):
        assert torch.equal(text[rows], guidance.text_embedding(prompt).expand(rows.stop - rows.start, -1, -1)), prompt
    a_t = guidance.alphas_cumprod[int(used.output.t[0])]
    noise_src = (args[0][:4] - a_t.sqrt() * used.source_latents) / (1 - a_t).sqrt()
    noise_tgt = (args[0][4:8] - a_t.sqrt() * used.latents) / (1 - a_t).sqrt()
    assert torch.allclose(noise_src, noise_tgt, atol=1e-4)  # PDS's shared noise
    assert metrics["guidance_scale"] == 100.0 and set(losses) == {"guidance_loss"}
    render = outputs["rgb"]
    assert render.shape == (4, 3, 16, 16)
    render.retain_grad()
    losses["guidance_loss"].backward()
    assert render.grad is not None and render.grad.abs().sum() > 0


def test_pds_renders_a_multiview_prior_s_views_at_its_native_size_unless_the_size_is_typed(source_run, multiview_prior):
    """The render size ``ns-train pds`` takes with a multi-view prior: the size its UNet was trained at when
    ``--pipeline.render-resolution`` is not typed, the typed one when it is (at the field's default value too); pnr's
    objects protocol keeps the release's own. Seen failing with the native size applied over a typed one."""
    from pds_nerfstudio.common.typed_flags import TypedFlags
    from pds_nerfstudio.integration.source_run import read_run
    from pds_nerfstudio.methods.pds import PDSPipelineConfig
    from pds_nerfstudio.priors.guidance import GuidanceConfig
    from pds_nerfstudio.priors.multiview import native_resolution
    from pnr_nerfstudio.objects import RELEASED_RENDER_RESOLUTION
    from pnr_nerfstudio.pipeline import PnRPipelineConfig

    source = read_run(source_run / "config.yml")
    native = native_resolution(multiview_prior)
    default = PDSPipelineConfig().render_resolution
    assert native != default  # else the two cases below could not be told apart
    config = PDSPipelineConfig(guidance=GuidanceConfig(model_id=str(multiview_prior)))
    assert config.with_source(source, TypedFlags()).render_resolution == native
    typed = TypedFlags.from_argv(["--pipeline.render-resolution", str(default)])
    assert config.with_source(source, typed.under("pipeline")).render_resolution == default
    pnr = PnRPipelineConfig(guidance=GuidanceConfig(model_id=str(multiview_prior))).with_protocol(TypedFlags())
    assert pnr.with_source(source, TypedFlags()).render_resolution == RELEASED_RENDER_RESOLUTION
