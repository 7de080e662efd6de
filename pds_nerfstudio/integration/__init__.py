"""The nerfstudio integration every editing method shares: the base editing pipeline and its --load-dir hooks, the
datamanager, the trainer and its config, source runs, the viewer's controls and the outputs written at the end."""
