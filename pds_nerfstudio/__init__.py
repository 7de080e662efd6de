"""Text-driven editing of nerfstudio scenes with Posterior Distillation Sampling (Koo et al., CVPR 2024).

Methods registered with ``ns-train``: ``pds`` (and, in :mod:`pnr_nerfstudio`, ``pnr``).
Importing this package is cheap: Stable Diffusion is loaded only when editing starts.
"""

__version__ = "0.1.0"
