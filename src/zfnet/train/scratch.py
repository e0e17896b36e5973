"""The from-scratch baseline of the transfer experiment: a network trained on a few images alone.

Zeiler & Fergus (2014, §5.2, Tables 4-5) set their transferred features against the same architecture
trained from scratch on the target set's few training images (Caltech-101: 22.8 / 46.5 % at 15 / 30
images per class, against 83.8 / 86.5 % pretrained). :func:`train_from_scratch` trains that baseline
with the paper's recipe (:mod:`zfnet.train.step`) for a fixed number of SGD steps, whatever the number
of images: no decision is driven by validation, so the test images play no part.

The budget matters. From the paper's initialisation (weights N(0, 0.01)) these networks sit on a plateau
at chance level for about a thousand SGD steps before they learn (the demo's ZFNet left chance after
1000 steps of its pretraining); a baseline stopped well before that may measure the plateau, not what the
few images can teach. The default :data:`SCRATCH_STEPS` gives it the steps the pretrained network needed:
on the demo's data its training accuracy is then far above chance and its test accuracy no longer
rises (docs/transfer.md gives the measurements).

Example:
    >>> imgs = torch.randint(0, 255, (8, 3, 73, 73), dtype=torch.uint8)
    >>> net, mean = train_from_scratch("zfnet-tiny", imgs, torch.arange(8) % 2, num_classes=2,
    ...                                recipe=ScratchRecipe(steps=2, batch_size=4), show_progress=False)
    >>> predict_labels(net, imgs, mean).shape
    torch.Size([8])
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from .._validate import check_fields, limits
from ..data.transforms import center_crop, random_crops
from ..errors import ZFNetError
from ..models import build
from ..models.speed import prepare_for_speed
from ..progress import progress
from .config import TrainConfig
from .step import NonFiniteLoss, sgd, sgd_step

__all__ = ["SCRATCH_STEPS", "ScratchRecipe", "train_from_scratch", "predict_labels"]

SCRATCH_STEPS = 1000
"""The default budget: the steps the demo's pretrained network needed to leave chance level."""

_TRAIN_LIMITS = {f.name: dict(f.metadata) for f in fields(TrainConfig)}


@dataclass(frozen=True)
class ScratchRecipe:
    """How the from-scratch baseline is trained: the paper's recipe for a fixed number of SGD steps.

    SGD with momentum, weight decay on weights, dropout (the model's), random crops with horizontal
    flips, filters renormalised to RMS ``max_filter_rms``; the learning rate drops by 10 after
    ``drop_at`` of the steps. Nothing is chosen on test images.

    Attributes:
        steps: SGD steps in total, whatever the number of training images.
        batch_size: images per step.
        lr, momentum, weight_decay, max_filter_rms: as in :class:`~zfnet.train.TrainConfig`.
        drop_at: fraction of the steps after which the learning rate is divided by 10.
    """

    steps: int = field(default=SCRATCH_STEPS, metadata=limits(1, 10_000_000))
    batch_size: int = field(default=32, metadata=_TRAIN_LIMITS["batch_size"])
    lr: float = field(default=1e-2, metadata=_TRAIN_LIMITS["lr"])
    momentum: float = field(default=0.9, metadata=_TRAIN_LIMITS["momentum"])
    weight_decay: float = field(default=5e-4, metadata=_TRAIN_LIMITS["weight_decay"])
    max_filter_rms: float = field(default=0.1, metadata=_TRAIN_LIMITS["max_filter_rms"])
    drop_at: float = field(default=0.75, metadata=limits(0, 1, low_open=True))

    def __post_init__(self) -> None:
        check_fields(self, "from-scratch recipe option")  # types and ranges, TrainConfig's where they are its


def train_from_scratch(model_name: str, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                       model_options: dict[str, Any] | None = None, recipe: ScratchRecipe = ScratchRecipe(),
                       seed: int = 0, device: str | torch.device = "cpu",
                       show_progress: bool = True) -> tuple[nn.Module, torch.Tensor]:
    """Train ``model_name`` from its initialisation on a few images: the baseline of Tables 4 and 5.

    Args:
        model_name: a registered model (the pretrained run's, for the paper's comparison).
        images: (N, 3, S, S) uint8 training images at base size.
        labels: (N,) int64.
        num_classes: width of the new softmax.
        model_options: the model's overrides (the pretrained run's).
        recipe: steps and SGD settings.
        seed: seeds the initialisation, the batches, crops, flips and dropout.
        device: where to train.
        show_progress: a progress bar.

    Returns:
        ``(model in eval mode, mean image (3, S, S) of the training images)``.

    Raises:
        ZFNetError: the loss became NaN or infinite (the recipe's learning rate is too high).
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build(model_name, num_classes=num_classes, **(model_options or {})).to(device)
    input_size = int(model.config.input_size)
    channels_last = device.type in ("cpu", "cuda")
    prepare_for_speed(model, train=True, channels_last=channels_last)
    opt = sgd(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    mean = images.double().mean(0).float()
    mean_dev = mean.to(device)
    drop_step = int(recipe.drop_at * recipe.steps)
    order = torch.empty(0, dtype=torch.long)
    bar = progress(total=recipe.steps, desc="training from scratch", unit="step", enabled=show_progress)
    with bar:
        for step in range(recipe.steps):
            if step == drop_step:
                for group in opt.param_groups:
                    group["lr"] = recipe.lr / 10
            if len(order) < recipe.batch_size:
                order = torch.cat([order, torch.randperm(len(images), generator=gen)])
            pick, order = order[:recipe.batch_size], order[recipe.batch_size:]
            x = random_crops(images[pick].to(device), input_size, generator=gen, mean=mean_dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            try:
                sgd_step(model, opt, x, labels[pick].to(device), max_filter_rms=recipe.max_filter_rms)
            except NonFiniteLoss as err:
                raise ZFNetError(f"the from-scratch baseline diverged at step {step + 1} (loss {err.loss}); "
                                 "try a lower learning rate") from None
            bar.update(1)
    return model.eval(), mean


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """The predicted class of each image by its centre crop, minus ``mean``: (N,) int64 on the CPU.

    Args:
        model: a network with ``config.input_size`` (a :func:`train_from_scratch` result).
        images: (N, 3, S, S) uint8 at base size.
        mean: (3, S, S) the mean image subtracted before the crop.
        batch_size: images per forward pass.
    """
    device = next(model.parameters()).device
    input_size = int(model.config.input_size)
    mean = mean.to(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = center_crop(images[i:i + batch_size].to(device).float().sub_(mean), input_size)
        out.append(model(x.contiguous(memory_format=torch.channels_last)).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
