"""Model registry: ``build(name, **overrides)`` and ``list_models()`` are the single entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["register", "build", "list_models", "model_info", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model: its name, input size and a one-line description."""

    name: str
    input_size: int
    description: str


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register(name: str, *, input_size: int, description: str) -> Callable:
    """Decorator registering a builder ``fn(*, num_classes, **overrides) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        _BUILDERS[name] = fn
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


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_BUILDERS)}")
