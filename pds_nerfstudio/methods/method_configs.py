"""The ``pds`` and ``pds-refine`` methods, registered with nerfstudio through the ``nerfstudio.method_configs``
entry point (the trainer settings every editing method shares: :func:`pds_nerfstudio.integration.trainer.edit_method`)."""

from __future__ import annotations

from pds_nerfstudio.integration.datamanager import EditDataManagerConfig
from pds_nerfstudio.integration.trainer import edit_method
from pds_nerfstudio.methods.pds import PDSPipelineConfig
from pds_nerfstudio.methods.refine import RefinePipelineConfig

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
