"""One SGD step of the paper's recipe, the same for every network zfnet trains.

Zeiler & Fergus (2014, §3) train with SGD, momentum 0.9, weight decay on the weights, and after each
step renormalise every convolutional filter whose RMS exceeds 0.1 back to 0.1. :func:`sgd` builds the
optimiser (weight decay on weights only, not on biases, as in Krizhevsky et al.'s and the usual Caffe
set-ups) and :func:`sgd_step` takes one step: zero the gradients, forward, cross-entropy, stop on a
loss that is not finite, backward, step, renormalise. The training loop (:mod:`zfnet.train.loop`) and
the from-scratch baseline of the transfer experiment (:mod:`zfnet.train.scratch`) both step with it.

Example:
    >>> from zfnet.models import build
    >>> net = build("zfnet-tiny", num_classes=2)
    >>> opt = sgd(net, lr=1e-2, momentum=0.9, weight_decay=5e-4)
    >>> loss, logits = sgd_step(net, opt, torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]), max_filter_rms=0.1)
    >>> logits.shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TrainingDiverged
from ..models import renormalize_filters_

__all__ = ["param_groups", "sgd", "sgd_step", "NonFiniteLoss"]


class NonFiniteLoss(TrainingDiverged):
    """The loss of a step is NaN or infinite; no update was made. ``loss`` holds its value."""

    def __init__(self, loss: float) -> None:
        super().__init__(f"the loss is {loss}")
        self.loss = loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The model's parameters in two SGD groups: weights with ``weight_decay``, biases without.

    Example:
        >>> [len(g["params"]) for g in param_groups(nn.Linear(2, 3), 5e-4)]
        [1, 1]
    """
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def sgd(model: nn.Module, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum over :func:`param_groups`: the paper's optimiser."""
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum)


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
             max_filter_rms: float = 0.0, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
             any_rank: Callable[[bool], bool] = bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: zero the gradients, forward, cross-entropy, check, backward, step, renormalise the filters.

    Args:
        model: the network; its conv filters are renormalised (the module itself, not a wrapper).
        optimizer: its optimiser (:func:`sgd`).
        x: (B, 3, S, S) the batch, as the network takes it (cropped, normalised).
        y: (B,) int64 labels.
        max_filter_rms: renormalise every conv filter whose RMS exceeds this to it (0: off).
        forward: what computes the logits, when it is not ``model`` itself (a DistributedDataParallel
            wrapper of it).
        any_rank: whether a flag is true on any process (``DistContext.any``), so that every process
            stops at the same step; one process: the flag itself.

    Returns:
        ``(loss, logits)``: the batch's mean cross-entropy (a scalar) and its (B, C) logits, detached.

    Raises:
        NonFiniteLoss: the loss is NaN or infinite (on any process); nothing was updated.
    """
    optimizer.zero_grad(set_to_none=True)
    logits = (forward or model)(x)
    loss = F.cross_entropy(logits, y)
    if any_rank(not bool(torch.isfinite(loss))):
        raise NonFiniteLoss(loss.item())
    loss.backward()
    optimizer.step()
    if max_filter_rms > 0:
        renormalize_filters_(model, max_filter_rms)
    return loss.detach(), logits.detach()
