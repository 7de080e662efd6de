"""Which flags the user typed, read from the command line: the one place that decides "given" from "not given".

tyro turns the command line into a config, but a value equal to its default looks the same whether it was
typed or not. An edit combines three configs (the flags typed now, the source run's or the resumed run's
config, and a protocol's values), and a typed flag must always win, also when it equals the default
(``--pipeline.splat-model.cull-alpha-thresh 0.1`` on a splatfacto-big source, whose value is 0.005). So the
record of what was typed is the command line itself, with the names tyro gives the config's fields:
``--pipeline.guidance.guidance-scale 100`` is the path ``pipeline.guidance.guidance_scale``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, FrozenSet, Mapping, Optional, Sequence

ALIASES: Mapping[str, str] = {
    "data": "pipeline.datamanager.data",  # nerfstudio's --data
    "prompt": "pipeline.model.prompt",  # nerfstudio's --prompt (its text-to-3D models' prompt)
}
"""nerfstudio's short flags, by the path of the field they set."""


@dataclass(frozen=True)
class TypedFlags:
    """The dotted field paths of the flags typed, relative to one config (the trainer's, or a part of it)."""

    paths: FrozenSet[str] = frozenset()
    prefix: str = ""
    """Where these paths are, in the trainer config (for messages): ``pipeline.`` for the pipeline's flags."""

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> "TypedFlags":
        """The flags in ``argv`` (without the program name): ``--a.b-c``, ``--a.b-c=value``; values are skipped."""
        paths = set()
        for token in argv:
            if not token.startswith("--") or token == "--":
                continue
            path = token[2:].split("=", 1)[0].replace("-", "_")
            paths.add(ALIASES.get(path, path))
        return cls(frozenset(paths))

    @classmethod
    def from_command_line(cls, argv: Optional[Sequence[str]] = None) -> "TypedFlags":
        """The flags of this process's command line (``sys.argv``), or of ``argv`` when given."""
        return cls.from_argv(sys.argv[1:] if argv is None else argv)

    def __contains__(self, path: str) -> bool:
        """Whether the flag of ``path`` itself was typed."""
        return path in self.paths

    def any_under(self, path: str) -> bool:
        """Whether ``path`` or any flag inside it (``path.*``) was typed."""
        return path in self.paths or any(p.startswith(path + ".") for p in self.paths)

    def under(self, path: str) -> "TypedFlags":
        """The flags inside ``path``, relative to it."""
        inside = path + "."
        return TypedFlags(frozenset(p[len(inside) :] for p in self.paths if p.startswith(inside)), self.prefix + inside)

    def typed_under(self, path: str) -> Sequence[str]:
        """The flags typed inside ``path``, as tyro names them (``--pipeline.model.near-plane``)."""
        inside = [p for p in self.paths if p == path or p.startswith(path + ".")]
        return sorted("--" + (self.prefix + p).replace("_", "-") for p in inside)


def merge_typed(user: Any, base: Any, typed: TypedFlags) -> Any:
    """``base`` with every value the user typed taken from ``user`` (``typed`` relative to both).

    Recurses into dataclasses of related types (one a subclass of the other, e.g. EditNerfactoModelConfig and
    NerfactoModelConfig), into dicts (the optimizers) and lists (``proposal_net_args_list.0.hidden_dim``). Dataclass
    fields that ``base`` lacks keep the user's value, and private fields (``_target``) always keep the user's; dict
    keys that ``base`` lacks are taken only when typed. Returns a new object of ``user``'s type (``base``'s for
    dicts and lists).
    """
    if isinstance(user, dict) and isinstance(base, dict):
        merged = dict(base)
        for key, value in user.items():
            if key in typed or (key not in base and typed.any_under(key)):
                merged[key] = value
            elif key in base and typed.any_under(key):
                merged[key] = merge_typed(value, base[key], typed.under(key))
        return merged
    if isinstance(user, (list, tuple)) and isinstance(base, (list, tuple)) and typed.paths:
        if len(user) != len(base):  # a flag inside a list of another length: the user's list
            return user
        items = [
            item if str(i) in typed else merge_typed(item, base_item, typed.under(str(i))) if typed.any_under(str(i)) else base_item
            for i, (item, base_item) in enumerate(zip(user, base))
        ]  # fmt: skip
        return type(base)(items)
    related = isinstance(user, type(base)) or isinstance(base, type(user))
    if not (dataclasses.is_dataclass(user) and dataclasses.is_dataclass(base) and related):
        return base
    values = {}
    for f in dataclasses.fields(user):
        if not f.init:
            continue
        value = getattr(user, f.name)
        if f.name.startswith("_") or not hasattr(base, f.name) or f.name in typed:
            values[f.name] = value
        else:
            values[f.name] = merge_typed(value, getattr(base, f.name), typed.under(f.name))
    return type(user)(**values)
