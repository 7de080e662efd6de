"""A small visual world for checking what an edit does: one coloured object on a grey floor, rendered analytically,
with captions that name what can be measured (the object's colour and shape), a classifier of those attributes, and
the script that trains a Stable-Diffusion-format prior on it. A tiny model of a toy world, for tests, the offline demo
and benchmarks; not for real scenes.
"""
