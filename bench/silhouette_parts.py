"""Where an edit's saturated silhouette departs from the world's object: read on the kept edits of an outcome matrix.

    python bench/silhouette_parts.py --out /tmp/om_v2_scales --settings toy_world/prior_v2:70 toy_world/prior_v3:70

For each pds edit (seed 42, 200 steps) whose extra flags are exactly ``--pipeline.guidance.model-id M
--pipeline.guidance.guidance-scale S``, over its training views and as shares of the world's target object's pixels:
inside the object, the pixels read saturated (:func:`toy_world.outcome.edited_object`), those present but dull (read
by the outline, :func:`toy_world.outcome.outline_object`, but not saturated) and those absent (neither: the object
shrank there); outside it, within the silhouette's window, the pixels read saturated (the object grown or bled onto
the floor). The IoU is saturated-inside over the object plus saturated-outside (no floor cast removed, so a little
below the matrix's structure, which is also divided by the source's own IoU).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="an outcome matrix's --out (its runs.jsonl)")
    parser.add_argument("--settings", nargs="+", required=True, help="MODEL_ID:SCALE of the edits to read")
    args = parser.parse_args()
    from toy_world.outcome import backgrounds, silhouette_parts, training_poses, training_views
    from toy_world.world import Thing, render

    wanted = {tuple(setting.rsplit(":", 1)): setting for setting in args.settings}
    readings = {}
    for line in (args.out / "runs.jsonl").read_text().splitlines():
        run = json.loads(line)
        flags = run["flags"]
        if run["method"] != "pds" or run["seed"] != 42 or run["steps"] != 200 or len(flags) != 4:
            continue
        setting = wanted.get((flags[1], flags[3])) if flags[0].endswith("model-id") and flags[2].endswith("guidance-scale") else None
        key = (setting, run["shape"], run["source"], run["target"])
        if setting is None or key in readings:
            continue
        config = Path(run["run"]) / "config.yml"
        renders, _ = training_views(config)
        poses = training_poses(config)
        size = renders[0].shape[0]
        worlds = [render(Thing(run["target"], run["shape"]), pose, size) for pose in poses]
        shares = silhouette_parts(renders, worlds, backgrounds(poses, size))  # saturated, dull, absent inside; saturated outside
        readings[key] = (*shares, shares[0] / (1 + shares[3]))
        print(f"{setting} {run['shape']} {run['source']} -> {run['target']}: " + " / ".join(f"{v:.2f}" for v in readings[key]), flush=True)
    print("\n| setting | edits | inside: saturated / dull / absent | saturated outside | IoU |\n|---|---|---|---|---|")
    for setting in args.settings:
        for noop in (False, True):
            values = np.array([v for k, v in readings.items() if k[0] == setting and (k[2] == k[3]) == noop])
            if len(values):
                mean = values.mean(0)
                print(f"| {setting} | {len(values)} {'no-ops' if noop else 'edits'} | {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f} | {mean[3]:.3f} | {mean[4]:.3f} |")


if __name__ == "__main__":
    main()
