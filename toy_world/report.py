"""The benchmarks' one way of writing their figures into docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

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
