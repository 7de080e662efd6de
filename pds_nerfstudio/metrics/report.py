"""What ``pds-eval`` writes: ``metrics.json``, the console table, ``report.html`` and the 8-bit renders it measured."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image
from rich.table import Table
from torch import Tensor

from pds_nerfstudio.metrics.scores import EDIT_CLIP_METRICS, Cosines

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def _save_images(
    output_dir: Path, names: List[str], src: List[np.ndarray], edit: List[np.ndarray]
) -> Tuple[List[Path], List[Path]]:
    saved: Tuple[List[Path], List[Path]] = ([], [])
    for folder, images, paths in (("source", src, saved[0]), ("edit", edit, saved[1])):
        (output_dir / folder).mkdir(parents=True, exist_ok=True)
        for name, image in zip(names, images):
            paths.append(output_dir / folder / f"{name}.png")
            Image.fromarray(image).save(paths[-1])
    return saved


def _clip_json(clip: Dict[str, Dict[str, Cosines]]) -> Dict[str, Any]:
    """Per model every metric's summary; under "mean" each metric's mean over the models (per view too; a
    view undefined for a model counts as 0 there, as in that model's own mean)."""
    out: Dict[str, Any] = {model_id: {k: c.summary() for k, c in metrics.items()} for model_id, metrics in clip.items()}
    mean: Dict[str, Any] = {}
    for key in EDIT_CLIP_METRICS:
        summaries = [out[model_id][key] for model_id in clip]
        values = [s["value"] for s in summaries]
        mean[key] = {
            "value": None if None in values else float(np.mean(values)),
            "per_view": np.mean([s["per_view"] for s in summaries], axis=0).tolist()
            if summaries[0]["per_view"]
            else [],
        }
    out["mean"] = mean
    return out


def _lpips_json(distances: Tensor) -> Dict[str, Any]:
    values = distances.double()
    return {"value": values.mean().item(), "per_view": values.tolist()}


_LABELS = {
    "text_image_similarity": "CLIP text-image similarity",
    "directional_similarity": "CLIP directional similarity",
    "directional_consistency": "CLIP directional consistency",
    "edit_direction_consistency": "CLIP edit-direction consistency",
}


def _rows(result: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    """Header and rows of the summary table: a column per CLIP model and their mean; LPIPS in the mean column."""

    def fmt(summary: Dict[str, Any]) -> str:
        value = summary["value"]
        text = "n/a" if value is None else f"{value:.4f}"
        return text + (f" ({summary['undefined_views']} undef.)" if summary.get("undefined_views") else "")

    clip = result["metrics"]["clip"]
    models = result["settings"]["clip_models"]
    header = ["metric", *models, "mean"]
    rows = [[label, *(fmt(clip[m][key]) for m in models), fmt(clip["mean"][key])] for key, label in _LABELS.items()]
    for net, summary in result["metrics"]["lpips"].items():
        rows.append([f"LPIPS ({net})", *([""] * len(models)), fmt(summary)])
    return header, rows


def _console_table(result: Dict[str, Any]) -> Table:
    header, rows = _rows(result)
    table = Table(*header, title=f"{result['method']} edit: {result['tgt_prompt']!r}")
    for row in rows:
        table.add_row(*row)
    return table


def _report_html(result: Dict[str, Any]) -> str:
    """A self-contained page (images linked relatively): prompts, the summary table, source | edit per view."""
    e = html.escape
    header, rows = _rows(result)
    table = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    clip_mean = result["metrics"]["clip"]["mean"]
    lpips = result["metrics"]["lpips"]
    views = result["views"]
    cells = []
    for i, name in enumerate(views["names"]):
        scores = [f"CLIP sim {clip_mean['text_image_similarity']['per_view'][i]:.3f}",
                  f"dir. sim {clip_mean['directional_similarity']['per_view'][i]:.3f}"]  # fmt: skip
        scores += [f"LPIPS {net} {s['per_view'][i]:.3f}" for net, s in lpips.items()]
        cells.append(
            f"<figure><img src='{e(views['source_images'][i])}'><img src='{e(views['edit_images'][i])}'>"
            f"<figcaption>{e(name)}<br>{e(', '.join(scores))}</figcaption></figure>"
        )
    settings = json.dumps(result["settings"], indent=2)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Edit evaluation: {e(result["edit_run"])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }} td:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.4em; }} img {{ width: 192px; image-rendering: pixelated; }}
figcaption {{ font-size: 0.8em; }}
</style></head><body>
<h1>{e(result["method"])} edit</h1>
<p>Edit run: {e(result["edit_run"])}<br>Source checkpoint: {e(result["source_checkpoint"])}<br>
Source prompt: {e(repr(result["src_prompt"]))}<br>Target prompt: {e(repr(result["tgt_prompt"]))}<br>
Views: {views["count"]} ({e(views["cameras"])}), {views["height_width"][0]}x{views["height_width"][1]} px</p>
<table>{table}</table>
<h2>Source | edit</h2>
{"".join(cells)}
<h2>Settings</h2><pre>{e(settings)}</pre>
</body></html>
"""
