"""The rendering benchmark runs as documented and writes its table into the report, keeping the text around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_render_memory_benchmark_writes_its_table(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n<!-- bench:cpu:tiny -->\nold table\n<!-- /bench -->\n\nNotes kept.\n")
    command = [sys.executable, str(ROOT / "bench" / "render_memory.py"), "--device", "cpu", "--sizes", "32",
               "--steps", "1", "--output", str(report)]
    out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    text = report.read_text()
    assert "old table" not in text and text.count("<!-- bench:cpu:tiny -->") == 1 and "Notes kept." in text
    row = next(line for line in text.splitlines() if line.startswith("| 32 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert len(cells) == 9
    peak_naive, peak_ours, memory_ratio, total_naive, total_ours, time_naive, time_ours, time_ratio = map(float, cells[1:])
    assert peak_naive > 0 and peak_ours > 0 and time_naive > 0 and time_ours > 0
    assert total_naive >= peak_naive and total_ours >= peak_ours
    # the ratios come from the unrounded figures, the cells are rounded
    assert abs(memory_ratio - peak_ours / peak_naive) < 0.02 + 0.15 * memory_ratio
    assert abs(time_ratio - time_ours / time_naive) < 0.02 + 0.15 * time_ratio


def test_render_memory_benchmark_puts_splatfacto_beside_nerfacto(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    command = [sys.executable, str(ROOT / "bench" / "render_memory.py"), "--device", "cpu", "--sizes", "32",
               "--steps", "1", "--modes", "chunked", "splatfacto", "--output", str(report)]
    out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    text = report.read_text()
    assert "<!-- bench:cpu:tiny:chunked+splatfacto -->" in text and "rasterised by pds_nerfstudio.splat_cpu" in text
    header = next(line for line in text.splitlines() if line.startswith("| size"))
    assert "step peak splatfacto (MiB)" in header and "s/step chunked" in header
    row = next(line for line in text.splitlines() if line.startswith("| 32 |"))
    values = [float(cell) for cell in row.strip("|").split("|")[1:]]
    assert len(values) == 6 and all(value > 0 for value in values)
