"""What a nerfacto box edit costs a step: the field's forward and backward passes over a batch of rays with the source
field answering outside the box (``--pipeline.region.box``, ``freeze_outside``), against the same batch without a
region and with a box that every ray meets.

The edited field is evaluated only on the rays that meet the box (pds_nerfstudio/scenes/models.py), the frozen source
field on every ray without a gradient: a small box costs little more than no region, a box that every ray meets what
evaluating both fields everywhere costs. nerfacto at its default size (16 levels, 2^19 entries, proposal sampling
256 / 96 / 48), random weights (the time does not depend on them), parallel rays through a box at the scene's centre.

    python bench/region_composite.py            # writes its table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.report import replace_section  # noqa: E402

MARKER = "<!-- bench:region-composite -->"


def model_and_rays(rays: int, region: bool, seed: int = 0):
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.data.scene_box import SceneBox

    from pds_nerfstudio.scenes.models import EditNerfactoModelConfig

    torch.manual_seed(seed)
    config = EditNerfactoModelConfig(source_outside_box=region)  # without it: nerfacto's own field and sampling
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={}, device="cpu")
    model.train()
    yz = torch.rand(rays, 2) * 2 - 1  # rays along +x through the square [-1, 1]^2 of y and z
    bundle = RayBundle(
        origins=torch.cat([torch.full((rays, 1), -2.0), yz], -1),
        directions=torch.tensor([[1.0, 0.0, 0.0]]).expand(rays, 3).contiguous(),
        pixel_area=torch.full((rays, 1), 1e-5),
        camera_indices=torch.zeros(rays, 1, dtype=torch.long),
    )
    return model, bundle


def seconds_a_step(model, bundle, box_side, repeats: int) -> float:
    """Median seconds of a forward and backward pass of the rendered colours; ``box_side`` None: no region."""
    from pds_nerfstudio.scenes.box import Box

    if box_side is not None:
        model.keep_outside(Box(torch.zeros(3), torch.full((3,), float(box_side)), torch.eye(3)))
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        outputs = model(bundle)
        outputs["rgb"].sum().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "region_composite", help="its TORCH_HOME (nerfacto's metrics)")
    args = parser.parse_args()
    from toy_world.models import seed_torch_home

    os.environ.update(TORCH_HOME=str(seed_torch_home(args.out / "torch_home")), HF_HUB_OFFLINE="1")  # no download

    rows = []
    for label, side in (("box meeting 6% of the rays (side 0.5)", 0.5), ("box meeting 25% (side 1)", 1.0),
                        ("box meeting every ray (side 4)", 4.0), ("no region", None)):  # fmt: skip
        model, bundle = model_and_rays(args.rays, region=side is not None)
        rows.append((label, seconds_a_step(model, bundle, side, args.repeats)))
        print(f"{label}: {rows[-1][1]:.3f} s", flush=True)
    alone = rows[-1][1]
    lines = [
        f"`python bench/region_composite.py {' '.join(sys.argv[1:])}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads), nerfacto at its "
        f"default size, {args.rays} rays, the median of {args.repeats} forward and backward passes.",
        "",
        "| nerfacto step | seconds | against no region |",
        "|---|---|---|",
        *(f"| {label} | {seconds:.3f} | {seconds / alone:.2f}x |" for label, seconds in rows),
    ]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        replace_section(ROOT / "docs" / "benchmarks.md", MARKER, body)


if __name__ == "__main__":
    main()
