"""The ``pnr`` method, registered with nerfstudio through the ``nerfstudio.method_configs`` entry point."""

from __future__ import annotations

from pds_nerfstudio.integration.trainer import edit_method
from pnr_nerfstudio.objects import released_nerfacto_optimizers
from pnr_nerfstudio.pipeline import PnRPipelineConfig
from pnr_nerfstudio.trainer_config import PnRTrainerConfig

pnr_method = edit_method(
    "pnr",
    "Edit a nerfacto or splatfacto scene with large geometric changes: Perturb-and-Revise (Hong et al., CVPR 2025).",
    PnRPipelineConfig(),
    max_num_iterations=None,  # the phases: 50 eta-selection + 1500 edit + 1000 revise steps by default
    steps_per_save=500,
    trainer_config=PnRTrainerConfig,
    optimizers={"field_grid": released_nerfacto_optimizers()["field_grid"]},
)
