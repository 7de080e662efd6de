"""The ``pds`` and ``pds-refine`` methods, registered with nerfstudio through the ``nerfstudio.method_configs``
entry point, and the trainer settings every editing method shares."""

from __future__ import annotations

from typing import Optional, Type

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from pds_nerfstudio.datamanager import EditDataManagerConfig
from pds_nerfstudio.pipeline import EditPipelineConfig, PDSPipelineConfig
from pds_nerfstudio.refine import RefinePipelineConfig
from pds_nerfstudio.representations import Nerfacto, Splatfacto
from pds_nerfstudio.trainer_config import EditTrainerConfig


def edit_method(
    method_name: str,
    description: str,
    pipeline: EditPipelineConfig,
    max_num_iterations: Optional[int],
    steps_per_save: int = 1000,
    trainer_config: Type[EditTrainerConfig] = EditTrainerConfig,
) -> MethodSpecification:
    """An editing method: nerfstudio's trainer with the settings all our methods share."""
    return MethodSpecification(
        config=trainer_config(
            method_name=method_name,
            max_num_iterations=max_num_iterations,  # type: ignore[arg-type]
            steps_per_save=steps_per_save,
            # 0: never. nerfstudio's evaluation scores the scene against the unedited source's eval images, which
            # means nothing for an edit; pds-eval measures an edit, and renders are saved at the end.
            steps_per_eval_batch=0,
            steps_per_eval_image=0,
            steps_per_eval_all_images=0,
            save_only_latest_checkpoint=True,
            mixed_precision=False,
            pipeline=pipeline,
            # both representations' groups, so that --optimizers.<group>.* exists for each; an edit keeps its scene's
            optimizers={**Nerfacto().optimizers(), **Splatfacto().optimizers()},
            viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
            vis="viewer",
        ),
        description=description,
    )


pds_method = edit_method(
    "pds",
    "Edit a nerfacto or splatfacto scene from a text prompt with Posterior Distillation Sampling (Koo et al., CVPR 2024).",
    PDSPipelineConfig(),
    max_num_iterations=30000,
)

pds_refine_method = edit_method(
    "pds-refine",
    "Refine a pds edit: SDEdit the edited views in turn and train on them (PDS paper, Sec. 5).",
    # the official refinement trains on 32x32 patches: 4 of them a step
    RefinePipelineConfig(datamanager=EditDataManagerConfig(train_num_rays_per_batch=4096, patch_size=32)),
    max_num_iterations=15000,
)
