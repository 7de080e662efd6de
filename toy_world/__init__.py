"""A small visual world for checking what an edit does: one coloured object on a grey floor, rendered analytically,
with captions that name what can be measured (the object's colour and shape), a classifier of those attributes, and
the script that trains a Stable-Diffusion-format prior on it. A tiny model of a toy world, for tests, the offline demo
and benchmarks; not for real scenes.
"""

from pathlib import Path

PRIOR = Path(__file__).resolve().parent / "prior"
"""The committed trained prior (a Stable Diffusion pipeline folder; its model card is PRIOR / "README.md")."""
