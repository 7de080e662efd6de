"""LPIPS (Zhang et al., CVPR 2018) from the ``lpips`` package, with its torchvision trunk weights checked first.

One loader for both users: ``pds-eval``'s LPIPS metrics and pnr's identity-preserving revise steps.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Union

import torch

from pds_nerfstudio.common.errors import InputError

LpipsNet = Literal["vgg", "alex", "squeeze"]
LPIPS_VERSION = "0.1"
"""Version of the lpips package's learned linear layers."""


def _torchvision_weights(net: LpipsNet):
    import torchvision

    weights = {
        "vgg": torchvision.models.VGG16_Weights,
        "alex": torchvision.models.AlexNet_Weights,
        "squeeze": torchvision.models.SqueezeNet1_1_Weights,
    }
    if net not in weights:
        raise ValueError(f"Unknown LPIPS network {net!r}; choose one of: {', '.join(weights)}.")
    return weights[net].IMAGENET1K_V1


def ensure_lpips_weights(net: LpipsNet) -> Path:
    """The torchvision ImageNet weights of LPIPS' ``net`` trunk in torch's hub cache, downloaded if missing.

    Raises:
        InputError: they are missing and cannot be downloaded (offline), with where to put them.
    """
    url = _torchvision_weights(net).url
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as error:  # offline, proxy, disk: all end the same way for the user
        raise InputError(
            f"LPIPS ({net}) needs torchvision's ImageNet weights {target.name}, which are not in {target.parent} and "
            f"cannot be downloaded ({type(error).__name__}); download {url} where it is reachable and put it in "
            f"{target.parent} (or set TORCH_HOME to a folder whose hub/checkpoints holds it)"
        ) from None
    return target


def load_lpips(net: LpipsNet, device: Union[str, torch.device]) -> torch.nn.Module:
    """``lpips.LPIPS(net=net)`` (linear layers v0.1), frozen, in eval mode; its trunk's weights must be available."""
    try:
        import lpips
    except ImportError as error:
        raise ImportError("LPIPS needs the lpips package: pip install lpips") from error
    ensure_lpips_weights(net)
    with warnings.catch_warnings():  # lpips 0.1.4 builds its trunk with torchvision's deprecated pretrained=True
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        network = lpips.LPIPS(net=net, version=LPIPS_VERSION, verbose=False)
    return network.eval().requires_grad_(False).to(device)
