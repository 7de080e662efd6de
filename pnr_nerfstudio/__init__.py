"""Perturb-and-Revise (Hong et al., CVPR 2025) for nerfstudio scenes: the ``pnr`` method.

Builds on :mod:`pds_nerfstudio` (its editing pipeline and guidance); nothing there imports this package.
"""
