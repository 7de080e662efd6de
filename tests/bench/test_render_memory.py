"""The rendering benchmark runs as documented and writes its table into the report, keeping the text around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_render_memory_benchmark_writes_its_table_with_splatfacto_beside_nerfacto(tmp_path: Path) -> None:
    marker = "<!-- bench:cpu:tiny:full-graph+chunked+splatfacto -->"
    report = tmp_path / "benchmarks.md"
    report.write_text(f"# Benchmarks\n\n{marker}\nold table\n<!-- /bench -->\n\nNotes kept.\n")
    command = [sys.executable, str(ROOT / "bench" / "render_memory.py"), "--device", "cpu", "--sizes", "32",
               "--steps", "1", "--modes", "full-graph", "chunked", "splatfacto", "--output", str(report)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]

    text = report.read_text()
    assert "old table" not in text and text.count(marker) == 1 and "Notes kept." in text
    assert "rasterised by pds_nerfstudio.scenes.splat_cpu" in text
    header = next(line for line in text.splitlines() if line.startswith("| size"))
    assert "step peak splatfacto (MiB)" in header and "s/step chunked" in header
    row = next(line for line in text.splitlines() if line.startswith("| 32 |"))
    cells = [float(cell.strip()) for cell in row.strip("|").split("|")[1:]]
    assert len(cells) == 11
    peak_naive, peak_ours, peak_splat, memory_ratio = cells[:4]
    total_naive, total_ours, total_splat = cells[4:7]
    time_naive, time_ours, time_splat, time_ratio = cells[7:]
    assert min(peak_naive, peak_ours, peak_splat, time_naive, time_ours, time_splat) > 0
    assert total_naive >= peak_naive and total_ours >= peak_ours and total_splat >= peak_splat
    # the ratios come from the unrounded figures, the cells are rounded
    assert abs(memory_ratio - peak_ours / peak_naive) < 0.02 + 0.15 * memory_ratio
    assert abs(time_ratio - time_ours / time_naive) < 0.02 + 0.15 * time_ratio
