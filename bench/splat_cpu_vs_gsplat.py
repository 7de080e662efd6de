"""The CPU rasteriser (pds_nerfstudio.scenes.splat_cpu) against gsplat's CUDA kernels: same Gaussians, same camera.

    python bench/splat_cpu_vs_gsplat.py            # needs CUDA and gsplat's compiled kernels

Renders one random scene (SH degree 3, classic mode, as splatfacto calls gsplat) with both, in float32 on
the GPU, and reports the largest absolute difference of the images, of the alphas and of the gradients of
a fixed random image loss with respect to every Gaussian attribute (also relative to that gradient's
largest entry). Results go to the terminal and to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toy_world.report import replace_section  # noqa: E402


def scene(num: int, device: str, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(num, 3, generator=generator) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(num, 4, generator=generator)
    log_scales = torch.log(torch.rand(num, 3, generator=generator) * 0.08 + 0.01)
    logit_opacities = torch.logit(torch.rand(num, generator=generator) * 0.9 + 0.05)
    colors = torch.randn(num, 16, 3, generator=generator) * 0.3
    return {name: t.to(device).requires_grad_(True) for name, t in
            dict(means=means, quats=quats, log_scales=log_scales, logit_opacities=logit_opacities, colors=colors).items()}  # fmt: skip


def render(rasterize, params, size: int):
    import torch

    viewmat = torch.eye(4, device=params["means"].device)[None]
    K = torch.tensor([[[size * 1.2, 0.0, size / 2], [0.0, size * 1.2, size / 2], [0.0, 0.0, 1.0]]], device=viewmat.device)
    image, alpha, _ = rasterize(
        means=params["means"], quats=params["quats"], scales=torch.exp(params["log_scales"]),
        opacities=torch.sigmoid(params["logit_opacities"]), colors=params["colors"], viewmats=viewmat, Ks=K,
        width=size, height=size, packed=False, near_plane=0.01, far_plane=1e10, render_mode="RGB", sh_degree=3,
        rasterize_mode="classic",
    )  # fmt: skip
    return image, alpha


def compare(gaussians: int, size: int) -> Dict[str, Tuple[float, float]]:
    """gsplat's kernels against the CPU rasteriser on one random scene, both on the GPU in float32: for the image, the
    alpha and the gradient of a fixed random image loss wrt each Gaussian attribute, (largest absolute difference,
    largest gsplat value)."""
    import torch
    from gsplat.rendering import rasterization

    from pds_nerfstudio.scenes.splat_cpu import rasterize_on_cpu

    if not torch.cuda.is_available():
        raise SystemExit("gsplat's kernels need CUDA; run this on a GPU machine")
    weights = torch.randn(1, size, size, 3, generator=torch.Generator().manual_seed(1)).cuda()
    results = {}
    for name, rasterize in (("gsplat", rasterization), ("splat_cpu", rasterize_on_cpu)):
        params = scene(gaussians, "cuda")
        image, alpha = render(rasterize, params, size)
        (image * weights).sum().backward()
        results[name] = (image.detach(), alpha.detach(), {k: p.grad.detach() for k, p in params.items()})
    (image_a, alpha_a, grads_a), (image_b, alpha_b, grads_b) = results["gsplat"], results["splat_cpu"]
    rows = {"image": ((image_a - image_b).abs().max().item(), image_a.abs().max().item()),
            "alpha": ((alpha_a - alpha_b).abs().max().item(), alpha_a.abs().max().item())}  # fmt: skip
    rows.update({f"d loss / d {k}": ((grads_a[k] - grads_b[k]).abs().max().item(), grads_a[k].abs().max().item()) for k in grads_a})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gaussians", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="image side, px")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    import torch

    rows = compare(args.gaussians, args.size)
    lines = [
        f"### CPU rasteriser vs gsplat, {torch.cuda.get_device_name()}",
        "",
        f"`python bench/splat_cpu_vs_gsplat.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f": {args.gaussians} random Gaussians, SH degree 3, classic mode, {args.size}x{args.size} px, float32,"
        f" torch {torch.__version__}.",
        "",
        "| quantity | max abs difference | largest gsplat value | difference / largest |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {diff:.3g} | {top:.3g} | {diff / max(top, 1e-30):.3g} |" for name, (diff, top) in rows.items()]
    section = "\n".join(lines) + "\n"
    print(section)
    replace_section(args.output, "<!-- bench:splat-cpu-vs-gsplat -->", section)


if __name__ == "__main__":
    main()
