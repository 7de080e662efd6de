"""The edit model: what it trains, and how it samples from the first editing step on."""

from __future__ import annotations

import torch
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation

from pds_nerfstudio.scenes.models import EditNerfactoModelConfig


def tiny_model():
    config = EditNerfactoModelConfig(num_levels=4, log2_hashmap_size=10, hidden_dim=16, appearance_embed_dim=4)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    return config.setup(scene_box=SceneBox(aabb=aabb), num_train_data=4, metadata={}, device="cpu")


def test_only_field_and_proposal_networks_are_trained(torch_home):
    model = tiny_model()
    groups = model.get_param_groups()
    assert set(groups) == {"proposal_networks", "fields"}
    trained = {id(p) for params in groups.values() for p in params}
    assert all(id(p) not in trained and not p.requires_grad for p in model.camera_optimizer.parameters())
    assert all(id(p) not in trained for p in model.field.embedding_appearance.parameters())


def test_proposal_sampling_is_fully_annealed_from_the_first_step(torch_home):
    """nerfacto anneals its proposal weights from uniform over its first 1000 steps; the source has done
    that, so an edit must not start again from uniform sampling, while the update schedule still runs."""
    model = tiny_model()
    callbacks = model.get_training_callbacks(TrainingCallbackAttributes(None, None, None, None))
    for step in range(3):
        for callback in callbacks:
            callback.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
            callback.run_callback_at_location(step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    assert model.proposal_sampler._anneal == 1.0
    assert model.proposal_sampler._step == 2  # the proposal update schedule follows the steps


def box_edit_and_samples(origins):
    """A tiny nerfacto whose edit moved its field everywhere, the box of side 0.2 at the centre, and 4 samples along
    x from each of ``origins`` [R, 3] (intervals 0.5-1.5, 1.5-2.05, 2.05-3, 3-4: from x = -2 the box is met at 1.9-2.1,
    by the second and third, whose midpoints lie outside it)."""
    from nerfstudio.cameras.rays import Frustums, RaySamples

    from pds_nerfstudio.scenes.box import Box

    config = EditNerfactoModelConfig(num_levels=4, log2_hashmap_size=10, hidden_dim=16, appearance_embed_dim=4, source_outside_box=True)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=4, metadata={}, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.field.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))  # the edit has moved the field everywhere
    model.keep_outside(Box(torch.zeros(3), torch.full((3,), 0.2), torch.eye(3)))
    rays = len(origins)
    starts = torch.tensor([0.5, 1.5, 2.05, 3.0])
    ends = torch.tensor([1.5, 2.05, 3.0, 4.0])
    samples = RaySamples(
        frustums=Frustums(
            origins=origins[:, None].expand(rays, 4, 3), directions=torch.tensor([1.0, 0.0, 0.0]).expand(rays, 4, 3),
            starts=starts.expand(rays, 4)[..., None], ends=ends.expand(rays, 4)[..., None], pixel_area=torch.full((rays, 4, 1), 1e-4),
        ),
        camera_indices=torch.zeros(rays, 4, 1, dtype=torch.long),
    )  # fmt: skip
    return model, samples


def test_a_box_edit_takes_the_edited_field_for_each_sample_whose_interval_meets_the_box(torch_home):
    """With a region box the edited field answers every sample whose interval along its ray meets the box, the frozen
    source every other sample, per sample. By interval, not midpoint: the toy world's tiny nerfacto (8 samples a ray)
    had no midpoint inside a box round its ball, so the edit changed nothing; seen failing with the midpoint rule
    (samples 1 and 2 of the first ray took the source)."""
    from nerfstudio.field_components.field_heads import FieldHeadNames

    model, samples = box_edit_and_samples(torch.tensor([[-2.0, 0.0, 0.0], [-2.0, 0.5, 0.0]]))  # the second misses the box
    with torch.no_grad():
        composite = model.field.forward(samples)
        edited = type(model.field).forward(model.field, samples)
        source = type(model.source_field).forward(model.source_field, samples)
    meets = torch.tensor([[False, True, True, False], [False] * 4])
    for head in (FieldHeadNames.DENSITY, FieldHeadNames.RGB):
        for ray in range(2):
            for sample in range(4):
                expected = (edited if meets[ray, sample] else source)[head][ray, sample]
                other = (source if meets[ray, sample] else edited)[head][ray, sample]
                assert torch.equal(composite[head][ray, sample], expected), (head, ray, sample)
                assert not torch.allclose(expected, other), (head, ray, sample)  # the two fields differ there


def test_a_batch_that_misses_the_box_renders_the_source_and_still_backpropagates(torch_home):
    """The edited field is evaluated only on the rays that meet the box; a batch with none (a view that does not see
    it) gives the source's values exactly and a graph whose gradient is zero, so the step's backward runs. Seen
    failing without the fallback ray (nerfacto's field refuses the empty batch: "positions is empty"), and returning
    the source alone left no graph ("element 0 of tensors does not require grad", in tests/e2e/test_region.py)."""
    from nerfstudio.field_components.field_heads import FieldHeadNames

    model, samples = box_edit_and_samples(torch.tensor([[-2.0, 0.5, 0.0], [-2.0, 0.0, 0.6]]))  # both miss the box
    composite = model.field.forward(samples)
    with torch.no_grad():
        source = type(model.source_field).forward(model.source_field, samples)
    for head in (FieldHeadNames.DENSITY, FieldHeadNames.RGB):
        assert torch.equal(composite[head], source[head]), head
    (composite[FieldHeadNames.DENSITY].sum() + composite[FieldHeadNames.RGB].sum()).backward()
    gradients = [p.grad for p in model.field.parameters() if p.requires_grad]
    assert any(g is not None for g in gradients)
    assert all(g is None or not g.any() for g in gradients)
