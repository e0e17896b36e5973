"""The layers of a model that the deconvnet figures show, and a one-line error for a model it cannot trace.

ZFNet-family models name their layers as the paper does (``conv1`` ... ``conv5``); a model from
elsewhere has module paths (``layer1``, ``features.denseblock4``). :func:`default_layers` picks the
stages of such a model worth a figure each: its top-level children that hold a convolution and
output feature maps (a ResNet's ``conv1``, ``layer1`` ... ``layer4``); when there is only one such
child (VGG's ``features``), its children of that kind instead. Only the deconvnet's public
``layer_names`` and ``output_shape`` are used, so this holds for any model it traces.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import ZFNetError
from .deconvnet import Deconvnet

__all__ = ["traced_deconvnet", "map_layers", "default_layers", "PAPER_LAYERS"]

PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
"""The layers the paper's figures show, on ZFNet-family models."""

_MOST = 8  # more candidate layers than this: keep the last of each resolution


def traced_deconvnet(model: nn.Module, input_size: int, *, name: str) -> Deconvnet:
    """The deconvnet of ``model``, checked on one (3, input_size, input_size) image.

    Raises:
        ZFNetError: one line, ``cannot trace NAME for the deconvnet: ...``, when the model has a layer the
            deconvnet does not support or is not a graph it can follow.

    Example:
        >>> from zfnet.models import build
        >>> traced_deconvnet(build("zfnet-tiny"), 64, name="zfnet-tiny").layer_names[:2]
        ['conv1', 'conv1.conv']
    """
    try:
        deconv = Deconvnet(model)
        names = deconv.layer_names
        if not names:
            raise ValueError("it has no layers")
        deconv.output_shape(names[-1], (3, input_size, input_size))
    except Exception as err:  # a user's model: whatever the tracer raises is the user's to fix
        text = str(err).strip().splitlines()[0][:400] if str(err).strip() else type(err).__name__
        raise ZFNetError(f"cannot trace {name} for the deconvnet: {text}") from None
    return deconv


def map_layers(deconv: Deconvnet, input_size: int) -> list[str]:
    """The layers whose output is a (C, H, W) feature map, in the deconvnet's order."""
    shape = (3, input_size, input_size)
    return [n for n in deconv.layer_names if len(deconv.output_shape(n, shape)) == 3]


def _holds_conv(model: nn.Module, name: str) -> bool:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return False
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _children(names: Sequence[str], parent: str) -> list[str]:
    depth = parent.count(".") + 1 if parent else 0
    prefix = f"{parent}." if parent else ""
    return [n for n in names if n.startswith(prefix) and n.count(".") == depth]


def default_layers(model: nn.Module, input_size: int, deconv: Deconvnet | None = None) -> list[str]:
    """The paper's ``conv1`` ... ``conv5`` where the model has them, else its convolutional stages.

    Args:
        model: the network.
        input_size: the side of its input.
        deconv: its deconvnet, if already made.

    Raises:
        ZFNetError: the model has no convolutional layer with feature-map outputs.

    Example:
        >>> from zfnet.models import build
        >>> default_layers(build("zfnet-tiny"), 64)
        ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
    """
    deconv = deconv if deconv is not None else Deconvnet(model)
    names = deconv.layer_names
    if all(n in names for n in PAPER_LAYERS):
        return list(PAPER_LAYERS)
    maps = set(map_layers(deconv, input_size))
    chosen = [n for n in names if n in maps and "." not in n and _holds_conv(model, n)]
    while len(chosen) == 1:
        inner = [n for n in _children(names, chosen[0]) if n in maps and _holds_conv(model, n)]
        if not inner:
            break
        chosen = inner
    if not chosen:
        raise ZFNetError("the model has no convolutional layer with feature-map outputs to visualise")
    if len(chosen) > _MOST:
        shape = (3, input_size, input_size)
        sizes = [deconv.output_shape(n, shape)[1:] for n in chosen]
        chosen = [n for i, n in enumerate(chosen) if i == len(chosen) - 1 or sizes[i] != sizes[i + 1]]
    return chosen
