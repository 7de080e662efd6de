"""nerfacto as an edit target: the source run's field, with the camera poses and appearance frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch.nn import Parameter


@dataclass
class EditNerfactoModelConfig(NerfactoModelConfig):
    """nerfacto, built from the source run's model config; only its field and proposal networks are edited."""

    _target: Type = field(default_factory=lambda: EditNerfactoModel)


class EditNerfactoModel(NerfactoModel):
    """nerfacto whose camera pose refinements and appearance embeddings stay as the source learned them.

    Poses must stay fixed while editing (the official release removes the camera optimizer), and a
    source trained with an appearance embedding renders each view with its own, unchanged embedding.
    """

    config: EditNerfactoModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self.camera_optimizer.requires_grad_(False)
        if self.field.embedding_appearance is not None:
            self.field.embedding_appearance.requires_grad_(False)
        # The source finished annealing its proposal weights; an edit samples with them as they are.
        self.proposal_sampler.set_anneal(1.0)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """nerfacto's callbacks less the proposal-weight annealing, which would restart sampling from uniform
        at step 0 of every edit; the proposal networks' update schedule stays."""
        callbacks = super().get_training_callbacks(training_callback_attributes)
        return [callback for callback in callbacks if callback.func == self.proposal_sampler.step_cb]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {
            "proposal_networks": list(self.proposal_networks.parameters()),
            "fields": [p for p in self.field.parameters() if p.requires_grad],
        }
