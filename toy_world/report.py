"""The benchmarks' one way of writing their figures into docs/benchmarks.md, and of naming their files by their flags."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

END = "<!-- /bench -->"


def replace_section(path: Path, marker: str, body: str) -> None:
    """Write ``body`` between ``marker`` (e.g. ``<!-- bench:cpu:tiny -->``) and the next END in ``path``,
    replacing what a previous run wrote there, or append it; the rest of the file stays as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = marker + "\n" + body.rstrip("\n") + "\n" + END
    if marker in text:
        head, rest = text.split(marker, 1)
        tail = rest.split(END, 1)[1] if END in rest else ""
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def flags_digest(flags: Sequence[str]) -> str:
    """Eight hex digits that stand for a list of ``ns-train`` flags in a benchmark's folder and picture names: the same
    flags give the same name, other flags another."""
    return hashlib.sha1(" ".join(flags).encode()).hexdigest()[:8]
