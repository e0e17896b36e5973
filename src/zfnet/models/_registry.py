"""Model registry: ``build(name, **overrides)`` and ``list_models()`` are the single entry.

``model_config(name, **overrides)`` gives the configuration ``build`` would build, checked (types,
ranges, parameter count) without allocating anything: what validates a config file or a weights
file's metadata before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ZFNetError

__all__ = ["register", "build", "list_models", "model_info", "model_config", "parameter_count", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: its name, input size and a one-line description."""

    name: str
    input_size: int
    description: str


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CONFIGS: dict[str, Callable[..., Any]] = {}
_INFO: dict[str, ModelInfo] = {}


def register(name: str, *, input_size: int, description: str, config: Callable[..., Any] | None = None) -> Callable:
    """Decorator registering a builder ``fn(*, num_classes, **overrides) -> nn.Module`` under ``name``.

    ``config(*, num_classes, **overrides)``, when given, returns the checked configuration the builder
    builds, without allocating it (see :func:`model_config`).
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        _BUILDERS[name] = fn
        if config is not None:
            _CONFIGS[name] = config
        _INFO[name] = ModelInfo(name, input_size, description)
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    return list(_BUILDERS)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model; ``ValueError`` naming the valid ones otherwise."""
    _check(name)
    return _INFO[name]


def build(name: str, num_classes: int = 1000, **overrides) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: width of the last layer.
        **overrides: fields of :class:`~zfnet.models.ConvNetConfig` to change, e.g.
            ``removed=("conv3", "conv4")``, ``fc=(2048, 2048)``, ``conv345=(512, 1024, 512)``.

    Returns:
        The model, initialised as in the paper.

    Example:
        >>> from zfnet.models import build
        >>> sum(p.numel() for p in build("zfnet").parameters())
        62357608
    """
    _check(name)
    return _BUILDERS[name](num_classes=num_classes, **overrides)


def model_config(name: str, num_classes: int = 1000, options: Mapping[str, Any] | None = None, **overrides) -> Any:
    """The configuration ``build(name, num_classes, **options, **overrides)`` would build, checked, nothing allocated.

    Args:
        name: a registered model.
        num_classes: the width of its last layer.
        options: model options as read from a file (``model_options`` of a config or of weights' metadata).
        **overrides: more options.

    Raises:
        ZFNetError: an unknown model, an unknown option, a value of the wrong type or out of range, or
            a model over :data:`~zfnet.models.convnet.MAX_PARAMETERS` parameters.

    Example:
        >>> model_config("zfnet", num_classes=10, fc=(1024, 1024)).parameter_count()
        14224522
    """
    _check(name)
    merged = {**(options or {}), **overrides}
    if "num_classes" in merged:
        raise ZFNetError("num_classes is not a model option: it is the number of classes of the data")
    if name not in _CONFIGS:
        raise ZFNetError(f"model {name!r} was registered without a config function")
    return _CONFIGS[name](num_classes=num_classes, **merged)


def _check(name: str) -> None:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ZFNetError(f"unknown model {name!r}; available: {', '.join(_BUILDERS)}")


def parameter_count(name: str, num_classes: int = 1000, **overrides) -> int:
    """How many parameters ``build(name, num_classes, **overrides)`` has, counted without allocating them
    (the model is built on PyTorch's meta device: shapes only, no memory, no initialisation work).

    Example:
        >>> parameter_count("zfnet")
        62357608
    """
    with torch.device("meta"):
        model = build(name, num_classes, **overrides)
    return sum(p.numel() for p in model.parameters())
