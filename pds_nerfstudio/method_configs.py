"""The ``pds`` and ``pds-refine`` methods, registered with nerfstudio through the ``nerfstudio.method_configs`` entry point."""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from pds_nerfstudio.datamanager import EditDataManagerConfig
from pds_nerfstudio.pipeline import PDSPipelineConfig
from pds_nerfstudio.refine import RefinePipelineConfig
from pds_nerfstudio.trainer_config import EditTrainerConfig


def field_optimizers():
    """Adam on the field and proposal networks, as the official PDS release edits nerfacto."""
    return {
        group: {
            "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, warmup_steps=1000),
        }
        for group in ("proposal_networks", "fields")
    }


pds_method = MethodSpecification(
    config=EditTrainerConfig(
        method_name="pds",
        max_num_iterations=30000,
        steps_per_save=1000,
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=0,  # 0: never; renders of every training view are saved at the end instead
        save_only_latest_checkpoint=True,
        mixed_precision=False,
        pipeline=PDSPipelineConfig(),
        optimizers=field_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="Edit a nerfacto scene from a text prompt with Posterior Distillation Sampling (Koo et al., CVPR 2024).",
)

pds_refine_method = MethodSpecification(
    config=EditTrainerConfig(
        method_name="pds-refine",
        max_num_iterations=15000,
        steps_per_save=1000,
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=0,
        save_only_latest_checkpoint=True,
        mixed_precision=False,
        pipeline=RefinePipelineConfig(datamanager=EditDataManagerConfig(train_num_rays_per_batch=4096)),
        optimizers=field_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="Refine a pds edit: SDEdit the edited views in turn and train on them (PDS paper, Sec. 5).",
)
