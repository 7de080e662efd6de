"""Command-line tools: ``pds-eval``, ``pds-dreambooth``, the torchrun launcher and ns-train on the CPU rasteriser."""
