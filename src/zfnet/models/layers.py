"""Layers and weight rules of the paper's recipe (Zeiler & Fergus 2014, §3).

- Contrast normalisation across feature maps: AlexNet's local response normalisation,
  size 5, alpha 1e-4, beta 0.75, k 2 (the paper gives no constants; these are Krizhevsky's).
- Initialisation: weights N(0, 1e-2), biases 0 (AlexNet starts some at 1: ``ConvNetConfig.init_bias_one``).
- Filter renormalisation: after each update, every convolutional filter whose RMS exceeds
  0.1 is rescaled to RMS 0.1.
"""

from __future__ import annotations

import torch
from torch import nn

from .speed import contrast_norm

__all__ = ["ContrastNorm", "init_paper_", "renormalize_filters_", "filter_rms"]


class ContrastNorm(nn.LocalResponseNorm):
    """Local response normalisation across feature maps, as AlexNet and ZFNet use it.

    ``b_c = a_c / (k + alpha / n * sum_{c' in window(c)} a_{c'}^2) ** beta`` with a window of
    ``n = size`` maps centred on ``c``. A subclass of :class:`torch.nn.LocalResponseNorm` (same
    arguments, same result) so that tools that know that module, the deconvnet included,
    recognise it.

    Shape:
        (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__(size=size, alpha=alpha, beta=beta, k=k)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # The same function as the parent's F.local_response_norm, computed as a banded matrix
        # product over channels: several times faster, forward and backward (models/speed.py).
        return contrast_norm(input, self.size, self.alpha, self.beta, self.k)


@torch.no_grad()
def init_paper_(model: nn.Module, std: float = 1e-2) -> nn.Module:
    """Initialise every conv and linear layer as the paper does: weights N(0, std), biases 0.

    Args:
        model: any module; its ``nn.Conv2d`` and ``nn.Linear`` submodules are initialised in place.
        std: standard deviation of the weights (the paper's 1e-2).

    Returns:
        ``model``, for chaining.

    Example:
        >>> m = init_paper_(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(4, 2)))
        >>> float(m[0].bias.abs().sum())
        0.0
    """
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def filter_rms(conv: nn.Conv2d | torch.Tensor) -> torch.Tensor:
    """RMS of each filter of a conv layer (or of its weight tensor): ``sqrt(mean(w ** 2))`` over (in, kh, kw).

    Shape:
        returns (out_channels,)
    """
    w = conv.weight if isinstance(conv, nn.Module) else conv
    return w.detach().pow(2).mean(dim=tuple(range(1, w.dim()))).sqrt()


@torch.no_grad()
def renormalize_filters_(model: nn.Module, max_rms: float = 0.1) -> int:
    """Rescale, in place, every conv filter whose RMS exceeds ``max_rms`` to RMS ``max_rms``.

    The paper (§3) applies this after each SGD step so that no layer-1 filter comes to dominate.
    A filter is one output channel's weights, (in_channels, kh, kw); its RMS is
    ``sqrt(mean(w ** 2))``. Filters at or below the radius are left untouched; biases are never
    changed.

    Args:
        model: a module; every ``nn.Conv2d`` in it is renormalised.
        max_rms: the radius (the paper's 0.1).

    Returns:
        The number of filters that were rescaled.

    Example:
        >>> conv = nn.Conv2d(1, 2, 1, bias=False)
        >>> _ = conv.weight.data.copy_(torch.tensor([0.5, 0.05]).view(2, 1, 1, 1))
        >>> renormalize_filters_(conv)
        1
        >>> conv.weight.flatten().tolist()
        [0.10000000149011612, 0.05000000074505806]
    """
    if max_rms <= 0:
        raise ValueError(f"max_rms must be positive, got {max_rms}")
    rescaled = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight
            rms = filter_rms(w).view(-1, *([1] * (w.dim() - 1)))
            scale = torch.where(rms > max_rms, max_rms / rms, torch.ones_like(rms))
            rescaled += int((rms > max_rms).sum())
            w.mul_(scale)
    return rescaled
