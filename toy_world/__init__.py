"""A small visual world for checking what an edit does: one coloured object on a grey floor, rendered analytically,
with captions that name what can be measured (the object's colour and shape), a classifier of those attributes, and
the scripts that train a Stable-Diffusion-format prior and a CLIP on it. Tiny models of a toy world, for tests, the
offline demo and benchmarks; not for real scenes.
"""

from pathlib import Path

PRIOR = Path(__file__).resolve().parent / "prior"
"""The committed trained prior (a Stable Diffusion pipeline folder; its model card is PRIOR / "README.md")."""
MULTIVIEW_PRIOR = Path(__file__).resolve().parent / "multiview_prior"
"""The committed multi-view prior (MVDream's format, :mod:`pds_nerfstudio.priors.multiview`; card: its README.md)."""
CLIP = Path(__file__).resolve().parent / "clip"
"""The committed trained CLIP (a transformers CLIPModel folder for ``pds-eval --clip-models``; card: CLIP / "README.md")."""
