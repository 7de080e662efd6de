"""Text-driven editing of nerfstudio scenes with Posterior Distillation Sampling (Koo et al., CVPR 2024).

Methods registered with ``ns-train``: ``pds``, ``pds-refine`` (and, in :mod:`pnr_nerfstudio`, ``pnr``).
Importing this package is cheap: Stable Diffusion is loaded only when editing starts.

The layers, bottom-up (each imports only those below it):

- :mod:`~pds_nerfstudio.common`: the input-error type, the flags typed on the command line, nerfstudio checkpoints
- :mod:`~pds_nerfstudio.score_distillation`: the PDS math (SDS, DDS, PDS gradients); torch only
- :mod:`~pds_nerfstudio.priors`: Stable Diffusion (loading, guidance, DreamBooth) and LPIPS
- :mod:`~pds_nerfstudio.scenes`: nerfacto and splatfacto as edit targets, rendering, the CPU rasteriser
- :mod:`~pds_nerfstudio.regions`: the region an edit is limited to (a box, masks)
- :mod:`~pds_nerfstudio.parallel`: torch.distributed collectives
- :mod:`~pds_nerfstudio.integration`: nerfstudio's pipeline, datamanager, trainer, source runs, viewer, outputs
- :mod:`~pds_nerfstudio.methods`: ``pds`` and ``pds-refine``
- :mod:`~pds_nerfstudio.metrics`: CLIP and LPIPS metrics of an edit, the views they are taken at, the report
- :mod:`~pds_nerfstudio.cli`: ``pds-eval``, ``pds-dreambooth``, the torchrun launcher, ns-train on the CPU rasteriser

Version 0.1's flat module paths, which runs written before the layers name, stay importable
(:mod:`pds_nerfstudio.old_paths`).
"""

from pds_nerfstudio import old_paths

__version__ = "0.1.0"

old_paths.install()
