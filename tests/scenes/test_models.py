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
