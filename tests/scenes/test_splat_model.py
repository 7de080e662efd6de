"""The splatfacto edit target and its representation: settings, culling, theta_0 and interpolation for pnr."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.splatfacto import SplatfactoModelConfig

import pds_nerfstudio.scenes.splat_cpu as splat_cpu
from pds_nerfstudio.common.errors import InputError
from pds_nerfstudio.common.typed_flags import TypedFlags
from pds_nerfstudio.methods.pds import PDSPipelineConfig
from pds_nerfstudio.scenes.models import EditSplatfactoModelConfig
from pds_nerfstudio.scenes.representations import Splatfacto, rebind_optimizers, representation_of, slerp
from pds_nerfstudio.scenes.strategies import CullingStrategy, RestartedDensification

SPLAT = Splatfacto()


def test_the_edit_takes_the_sources_settings_except_its_own_and_typed_flags_win():
    source = SplatfactoModelConfig(num_downscales=2, sh_degree=2, cull_alpha_thresh=0.005, background_color="white")
    model = SPLAT.edit_model_config(PDSPipelineConfig(), TypedFlags(), source)
    assert isinstance(model, EditSplatfactoModelConfig) and isinstance(representation_of(model), Splatfacto)
    assert (model.sh_degree, model.background_color) == (2, "white")  # the source's
    assert model.num_downscales == 0 and model.densification == "cull" and model.full_sh_degree  # the edit's
    assert (model.cull_alpha_thresh, model.cull_scale_thresh) == (0.1, 0.5)  # the release culls at 0.1 whatever the source

    user = PDSPipelineConfig(splat_model=EditSplatfactoModelConfig(num_downscales=1, sh_degree=1, densification="splatfacto"))
    typed = TypedFlags.from_argv(["--splat-model.num-downscales", "1", "--splat-model.sh-degree", "1", "--splat-model.densification", "splatfacto"])
    model = SPLAT.edit_model_config(user, typed, source)
    assert (model.num_downscales, model.sh_degree, model.densification) == (1, 1, "splatfacto")

    # a flag typed at its default value wins over the source's (splatfacto-big culls at 0.005): 0.1 is kept, and
    # sh-degree 3 (the default) replaces the source's 2
    typed = TypedFlags.from_argv(["--splat-model.cull-alpha-thresh", "0.1", "--splat-model.sh-degree", "3"])
    big = SplatfactoModelConfig(cull_alpha_thresh=0.005, sh_degree=2)
    model = SPLAT.edit_model_config(PDSPipelineConfig(), typed, big)
    assert (model.cull_alpha_thresh, model.sh_degree) == (0.1, 3)

    with pytest.raises(InputError, match="--pipeline.model.hidden-dim sets nerfacto settings.*use --pipeline.splat-model"):
        SPLAT.edit_model_config(PDSPipelineConfig(), TypedFlags.from_argv(["--pipeline.model.hidden-dim", "64"]).under("pipeline"), source)


def test_the_official_optimizers():
    optimizers = SPLAT.optimizers()
    rates = {name: entry["optimizer"].lr for name, entry in optimizers.items()}
    assert rates == {"means": 1.6e-4, "features_dc": 2.5e-3, "features_rest": 1.25e-4, "opacities": 0.05, "scales": 5e-3, "quats": 1e-3}
    assert all(entry["optimizer"].eps == 1e-15 for entry in optimizers.values())
    means = optimizers["means"]["scheduler"]
    assert (means.lr_final, means.max_steps) == (1.6e-6, 30000)
    assert all(entry["scheduler"] is None for name, entry in optimizers.items() if name != "means")


def _gaussians(opacity, scale):
    params = torch.nn.ParameterDict({
        "opacities": torch.nn.Parameter(torch.logit(torch.tensor(opacity))[:, None]),
        "scales": torch.nn.Parameter(torch.log(torch.tensor(scale))[:, None].repeat(1, 3)),
    })  # fmt: skip
    optimizers = {name: torch.optim.Adam([p], lr=0.1) for name, p in params.items()}
    for p in params.values():
        p.grad = torch.ones_like(p)
    for optimizer in optimizers.values():
        optimizer.step()
    return params, optimizers


def test_culling_removes_faint_and_huge_gaussians_every_refine_every_steps_only():
    strategy = CullingStrategy(prune_opa=0.1, prune_scale3d=0.5, refine_every=100)
    params, optimizers = _gaussians([0.05, 0.6, 0.9, 0.5], [0.1, 0.1, 0.1, 2.0])
    state = strategy.initialize_state()
    kept = params["opacities"][[1, 2]].detach().clone()
    assert strategy.step_post_backward(params, optimizers, state, step=150, info={}) == 0 and len(params["opacities"]) == 4
    assert strategy.step_post_backward(params, optimizers, state, step=200, info={}) == 2
    assert torch.equal(params["opacities"].detach(), kept)
    for name, optimizer in optimizers.items():  # the optimizers follow, with their state sliced
        (param,) = optimizer.param_groups[0]["params"]
        assert param is params[name] and optimizer.state[param]["exp_avg"].shape == param.shape


def _densifying(config: EditSplatfactoModelConfig):
    """A splatfacto edit model of ``config`` whose Gaussians all have opacity 0.98, and a function that runs its step
    ``number`` (render one 8 px view, backward, the strategy's post-backward) and returns the largest opacity."""
    torch.manual_seed(0)
    model = config.setup(scene_box=_Dataset.scene_box, num_train_data=3, metadata={})
    model.train()
    with torch.no_grad():
        model.gauss_params["opacities"].fill_(torch.logit(torch.tensor(0.98)).item())
    optimizers = {name: torch.optim.Adam(params, lr=1e-3) for name, params in model.get_gaussian_param_groups().items()}
    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8)
    camera.camera_to_worlds[0, 2, 3] = 3.0

    def step(number: int) -> float:
        model.step = number
        model.get_outputs(camera)["rgb"].sum().backward()
        model.strategy.step_post_backward(model.gauss_params, optimizers, model.strategy_state, number, model.info)
        return torch.sigmoid(model.gauss_params["opacities"]).max().item()

    return model, step


def test_splatfactos_densification_restarted_by_an_edit_does_not_reset_the_scene_at_step_0():
    config = EditSplatfactoModelConfig(random_init=True, num_random=30, random_scale=1.0, densification="splatfacto")
    model, step = _densifying(config)
    assert isinstance(model.strategy, RestartedDensification)
    assert (model.strategy.reset_every, model.strategy.prune_opa, model.strategy.absgrad) == (3000, 0.1, True)

    assert step(0) == pytest.approx(0.98)  # gsplat's own schedule would clamp every opacity to 0.2 here
    assert step(3000) == pytest.approx(0.2)  # splatfacto's periodic reset, as --help says


def test_rebind_optimizers_moves_the_state_to_the_models_new_tensors():
    old = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([old])
    old.grad = torch.ones(3)
    optimizer.step()
    new = torch.nn.Parameter(torch.ones(3))
    rebind_optimizers({"means": optimizer}, {"means": [new]})
    assert optimizer.param_groups[0]["params"] == [new] and old not in optimizer.state
    assert int(optimizer.state[new]["step"]) == 1


def test_slerp_follows_the_shorter_arc_between_unit_quaternions():
    q0 = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    q1 = torch.tensor([[math.cos(0.5), math.sin(0.5), 0.0, 0.0]])  # a rotation by 1 radian about x
    assert torch.allclose(slerp(q0, q1, 0.0), q0) and torch.allclose(slerp(q0, q1, 1.0), q1, atol=1e-6)
    half = slerp(q0, q1, 0.5)
    assert torch.allclose(half, torch.tensor([[math.cos(0.25), math.sin(0.25), 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(slerp(q0, -q1, 0.5), half, atol=1e-6)  # -q1 is the same rotation
    assert torch.allclose(slerp(q0, q0, 0.3), q0)  # no angle: no division by zero


class _Dataset:
    scene_box = SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    metadata: dict = {}

    def __len__(self) -> int:
        return 3


def test_theta_0_keeps_the_means_and_initialises_the_rest_as_splatfacto_does():
    means = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    source = {"gauss_params.means": means}
    pipeline = SimpleNamespace(datamanager=SimpleNamespace(train_dataset=_Dataset()), device="cpu")
    fresh = SPLAT.fresh_parameters(EditSplatfactoModelConfig(random_init=True, num_random=7), pipeline, source)
    assert torch.equal(fresh["gauss_params.means"], means)  # the same Gaussians (random_init is not used)
    assert torch.allclose(torch.sigmoid(fresh["gauss_params.opacities"]), torch.full((50, 1), 0.1))
    assert torch.equal(fresh["gauss_params.features_rest"], torch.zeros(50, 15, 3))
    assert torch.allclose(fresh["gauss_params.quats"].norm(dim=-1), torch.ones(50))
    distances = torch.cdist(means, means).topk(4, largest=False).values[:, 1:]  # the 3 nearest neighbours
    assert torch.allclose(fresh["gauss_params.scales"], torch.log(distances.mean(-1, keepdim=True)).repeat(1, 3), atol=1e-5)


def test_interpolation_is_linear_in_the_parameters_and_spherical_for_rotations():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    assert torch.allclose(SPLAT.interpolate("gauss_params.scales", a, b, 0.25), 0.75 * a + 0.25 * b)  # log-scales
    q0, q1 = torch.randn(4, 4, generator=generator), torch.randn(4, 4, generator=generator)
    mixed = SPLAT.interpolate("gauss_params.quats", q0, q1, 0.5)
    assert torch.allclose(mixed.norm(dim=-1), torch.ones(4))
    angle = lambda p, q: torch.acos((torch.nn.functional.normalize(p, dim=-1) * torch.nn.functional.normalize(q, dim=-1)).sum(-1).abs().clamp(max=1))  # noqa: E731
    assert torch.allclose(angle(q0, mixed), angle(mixed, q1), atol=1e-5)  # half way along the arc


@pytest.mark.parametrize("full_sh_degree, expected", [(True, 3), (False, 0)])
def test_the_first_edit_step_renders_with_every_sh_band(full_sh_degree, expected, monkeypatch):
    used = []

    def recording(*args, **kwargs):
        used.append(kwargs["sh_degree"])
        return splat_cpu_rasterize(*args, **kwargs)

    splat_cpu_rasterize = splat_cpu.rasterize_on_cpu
    monkeypatch.setattr(splat_cpu, "rasterize_on_cpu", recording)
    config = EditSplatfactoModelConfig(random_init=True, num_random=20, random_scale=1.0, full_sh_degree=full_sh_degree)
    model = config.setup(scene_box=_Dataset.scene_box, num_train_data=3, metadata={})
    model.train()
    model.step = 0
    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8)
    camera.camera_to_worlds[0, 2, 3] = 3.0  # 3 units back, looking down -z at the origin
    image = model.get_outputs(camera)["rgb"]
    assert image.shape == (8, 8, 3) and used == [expected] and model.step == 0


def test_a_resumed_splat_edit_keeps_its_settings_and_takes_the_flags_given_now():
    from pathlib import Path

    from nerfstudio.engine.trainer import TrainerConfig

    from pds_nerfstudio.integration.source_run import Run

    started = PDSPipelineConfig(model=EditSplatfactoModelConfig(cull_alpha_thresh=0.0, sh_degree=2))  # type: ignore[arg-type]
    run = Run(config_path=Path("config.yml"), config=TrainerConfig(method_name="pds", pipeline=started), checkpoint=None)
    merged = PDSPipelineConfig().resumed_from(run, TypedFlags())
    assert isinstance(merged.model, EditSplatfactoModelConfig) and (merged.model.cull_alpha_thresh, merged.model.sh_degree) == (0.0, 2)
    now = PDSPipelineConfig(splat_model=EditSplatfactoModelConfig(sh_degree=1))
    merged = now.resumed_from(run, TypedFlags.from_argv(["--splat-model.sh-degree", "1"]))
    assert (merged.model.cull_alpha_thresh, merged.model.sh_degree) == (0.0, 1)
    # typed at the default value: the resumed run's 0.0 and 2 give way
    merged = PDSPipelineConfig().resumed_from(run, TypedFlags.from_argv(["--splat-model.cull-alpha-thresh=0.1", "--splat-model.sh-degree", "3"]))
    assert (merged.model.cull_alpha_thresh, merged.model.sh_degree) == (0.1, 3)


def test_with_full_sh_degree_the_render_and_its_target_are_downscaled_alike():
    config = EditSplatfactoModelConfig(random_init=True, num_random=20, random_scale=1.0, num_downscales=2)
    model = config.setup(scene_box=_Dataset.scene_box, num_train_data=3, metadata={})
    model.train()
    model.step = 0
    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8)
    outputs = model.get_outputs(camera)
    target = model.get_gt_img(torch.rand(8, 8, 3))
    assert outputs["rgb"].shape == target.shape == (2, 2, 3)  # 1/4 at step 0, as splatfacto's schedule says


def test_an_image_of_a_training_view_is_what_the_edit_renders_of_it():
    """render_image (results, refine's first images, the frozen source of pnr's revise steps) and the training render
    agree, pose refinement and bilateral grid of the view included, when they share the background."""
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig

    config = EditSplatfactoModelConfig(random_init=True, num_random=30, random_scale=1.0, camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
                                       use_bilateral_grid=True)  # fmt: skip
    torch.manual_seed(0)
    model = config.setup(scene_box=_Dataset.scene_box, num_train_data=3, metadata={})
    with torch.no_grad():
        model.camera_optimizer.pose_adjustment[1] = torch.tensor([0.05, -0.03, 0.02, 0.01, 0.02, -0.01])  # as a source learned
        model.bil_grids.grids[1] += 0.3 * torch.randn_like(model.bil_grids.grids[1])  # the view's learned colour transform
    model.train()
    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8)
    camera.camera_to_worlds[0, 2, 3] = 3.0
    with SPLAT.same_background(model):
        trained = SPLAT.render(model, camera, 1, "chunked", 4096)[0].permute(1, 2, 0).detach()
        image = SPLAT.render_image(model, camera, 1, 4096)
        model.eval()
        unrefined = SPLAT.render_image(model, camera, 1, 4096)
    assert torch.allclose(image, trained.clamp(0, 1), atol=1e-6)
    assert not torch.allclose(unrefined, trained, atol=1e-3)  # evaluation renders the pose as given


def test_densification_with_a_region_splits_prunes_and_resets_only_the_gaussians_inside():
    """splatfacto's densification in an edit with a frozen outside (the strategy's ``movable``): at a refinement step
    the Gaussians inside (x > 0 here) are duplicated or split and the faint ones pruned; those outside keep their rows
    exactly, faint ones too, though their screen-space gradients are as high, and no split child is left outside; at the
    opacity reset only the inside ones are clamped to twice prune_opa."""
    config = EditSplatfactoModelConfig(
        random_init=True, num_random=40, random_scale=1.0, densification="splatfacto", warmup_length=0, refine_every=2,
        reset_alpha_every=5, densify_grad_thresh=1e-12, cull_alpha_thresh=0.1,
    )  # fmt: skip
    model, step = _densifying(config)
    inside = lambda means: means[:, 0] > 0  # noqa: E731
    model.strategy.movable = inside
    means = model.gauss_params["means"].detach()
    faint = torch.cat([torch.nonzero(inside(means)).flatten()[:3], torch.nonzero(~inside(means)).flatten()[:3]])
    with torch.no_grad():
        model.gauss_params["opacities"][faint] = torch.logit(torch.tensor(0.05))

    def outside_rows():
        means = model.gauss_params["means"].detach()
        return {name: p.detach()[~inside(means)].clone() for name, p in model.gauss_params.items()}

    def inside_opacities():
        return torch.sigmoid(model.gauss_params["opacities"].detach().flatten()[inside(model.gauss_params["means"].detach())])

    before, count_inside = outside_rows(), int(inside(model.gauss_params["means"]).sum())
    assert (inside_opacities() < 0.1).sum() == 3
    for number in range(1, 7):  # step 6 refines (splatfacto pauses refinement for 5 steps after each reset)
        step(number)  # every Gaussian with a gradient is above the threshold
    after = outside_rows()
    assert all(torch.equal(before[name], after[name]) for name in before)  # the same rows, none added, none pruned
    assert int(inside(model.gauss_params["means"]).sum()) > count_inside and (inside_opacities() < 0.1).sum() == 0
    for number in range(7, 11):
        step(number)  # reset_every = 5 x 2: the opacity reset at step 10
    assert torch.equal(outside_rows()["opacities"], before["opacities"]) and (inside_opacities() <= 0.2 + 1e-6).all()
