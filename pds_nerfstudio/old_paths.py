"""The module paths of version 0.1 (one flat package), kept importable for runs written before the layers.

nerfstudio saves a run's config as YAML that names every config class and its ``_target`` by module path
(``!!python/object:pds_nerfstudio.pipeline.PDSPipelineConfig``), and ``ns-viewer``, ``ns-export``, ``ns-render``,
``pds-eval`` and a resumed edit rebuild the config from those names. So each old module name is served here, on its
first import, by a module whose attributes are looked up in the new modules that took over its contents (the same
objects, not copies), and ``python -m <old name>`` runs the first of them (``python -m pds_nerfstudio.splat_cpu``,
``torchrun -m pds_nerfstudio.distributed``). New code and new runs use the new paths; nothing here is a file of the
old layout.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Dict, Optional, Sequence, Tuple

OLD_MODULES: Dict[str, Tuple[str, ...]] = {
    "pds_nerfstudio.checkpoints": ("pds_nerfstudio.common.checkpoints",),
    "pds_nerfstudio.datamanager": ("pds_nerfstudio.integration.datamanager",),
    "pds_nerfstudio.distillation": ("pds_nerfstudio.score_distillation.gradients",),
    "pds_nerfstudio.distributed": ("pds_nerfstudio.cli.torchrun", "pds_nerfstudio.parallel.collectives"),
    "pds_nerfstudio.dreambooth": ("pds_nerfstudio.cli.dreambooth", "pds_nerfstudio.priors.dreambooth"),
    "pds_nerfstudio.errors": ("pds_nerfstudio.common.errors",),
    "pds_nerfstudio.evaluation": (
        "pds_nerfstudio.cli.evaluate",
        "pds_nerfstudio.metrics.scores",
        "pds_nerfstudio.metrics.clip",
        "pds_nerfstudio.metrics.views",
        "pds_nerfstudio.metrics.report",
    ),
    "pds_nerfstudio.guidance": ("pds_nerfstudio.priors.guidance", "pds_nerfstudio.priors.loading"),
    "pds_nerfstudio.method_configs": ("pds_nerfstudio.methods.method_configs", "pds_nerfstudio.integration.trainer"),
    "pds_nerfstudio.model": ("pds_nerfstudio.scenes.models", "pds_nerfstudio.scenes.strategies"),
    "pds_nerfstudio.outputs": ("pds_nerfstudio.integration.outputs",),
    "pds_nerfstudio.perceptual": ("pds_nerfstudio.priors.perceptual",),
    "pds_nerfstudio.pipeline": ("pds_nerfstudio.integration.pipeline", "pds_nerfstudio.methods.pds"),
    "pds_nerfstudio.refine": ("pds_nerfstudio.methods.refine",),
    "pds_nerfstudio.rendering": ("pds_nerfstudio.scenes.rendering",),
    "pds_nerfstudio.representations": ("pds_nerfstudio.scenes.representations",),
    "pds_nerfstudio.source_run": ("pds_nerfstudio.integration.source_run",),
    "pds_nerfstudio.splat_cpu": ("pds_nerfstudio.cli.splat_cpu", "pds_nerfstudio.scenes.splat_cpu"),
    "pds_nerfstudio.trainer_config": ("pds_nerfstudio.integration.trainer",),
    "pds_nerfstudio.typed_flags": ("pds_nerfstudio.common.typed_flags",),
    "pds_nerfstudio.viewer_controls": ("pds_nerfstudio.integration.viewer_controls",),
}
"""Each version-0.1 module, and the modules its names now live in (the first also runs for ``python -m``)."""


class _OldPathLoader(importlib.abc.Loader):
    """Makes an old module name a view of the new modules: attribute look-ups go to them, in order."""

    def __init__(self, new_modules: Sequence[str]) -> None:
        self.new_modules = tuple(new_modules)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return None  # a plain module, filled in by exec_module

    def exec_module(self, module: ModuleType) -> None:
        new_modules = self.new_modules

        def __getattr__(name: str):
            for new in new_modules:
                target = importlib.import_module(new)
                if hasattr(target, name):
                    return getattr(target, name)
            raise AttributeError(f"module {module.__name__!r} (now {', '.join(new_modules)}) has no attribute {name!r}")

        module.__getattr__ = __getattr__  # type: ignore[attr-defined]  # PEP 562
        module.__doc__ = f"Version 0.1's module path, now {', '.join(new_modules)}."

    def is_package(self, fullname: str) -> bool:
        return False

    def get_code(self, fullname: str):
        """The first new module's code: what ``python -m <old name>`` runs."""
        spec = importlib.util.find_spec(self.new_modules[0])
        assert spec is not None and spec.loader is not None
        return spec.loader.get_code(self.new_modules[0])  # type: ignore[attr-defined]


class _OldPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in OLD_MODULES:
            return None
        first = importlib.util.find_spec(OLD_MODULES[fullname][0])  # its file is what ``python -m`` reports running
        return importlib.util.spec_from_loader(fullname, _OldPathLoader(OLD_MODULES[fullname]), origin=first and first.origin)


def install() -> None:
    """Serve the old module paths (once; after every other finder, so a real module always wins)."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(_OldPathFinder())
