"""``python -m pds_nerfstudio.cli.splat_cpu splatfacto --data ...``: nerfstudio's ``ns-train`` with splatfacto
rasterised on the CPU (:mod:`pds_nerfstudio.scenes.splat_cpu`), for machines without CUDA."""

from __future__ import annotations

from pds_nerfstudio.scenes.splat_cpu import splatfacto_on_cpu


def main() -> None:
    """nerfstudio's own ``ns-train`` with splatfacto
    rasterised on the CPU (tests, the offline demo). Slow: for tiny scenes, a few hundred Gaussians."""
    import sys

    from nerfstudio.scripts.train import entrypoint

    sys.argv = ["ns-train", *sys.argv[1:]]
    with splatfacto_on_cpu():
        entrypoint()


if __name__ == "__main__":
    main()
