"""The five-conv, three-FC network family shared by ZFNet and AlexNet.

One configurable class builds ZFNet (Zeiler & Fergus 2014, Fig. 3), the single-tower AlexNet
baseline, the paper's Table 3 ablations (layers removed, widths changed) and small CPU-sized
variants of the same structure. The network is an ``nn.Sequential`` whose children carry the
paper's names, so ``model.get_submodule("conv5")`` is the rectified conv5 output and forward
hooks, the deconvnet and the analyses see every stage:

    conv1 (conv, relu) pool1 norm1 conv2 (conv, relu) pool2 norm2
    conv3 conv4 conv5 (conv, relu each) pool5 flatten
    fc6 (linear, relu) drop6 fc7 (linear, relu) drop7 fc8

That is ZFNet's order (Fig. 3: pool, then normalise). Krizhevsky et al.'s AlexNet normalises first
(``norm_before_pool``: ``conv1 norm1 pool1 conv2 norm2 pool2 ...``); the names are the same either way.
Pools are 3x3 stride 2 with ceil rounding, which gives the paper's map sizes
(ZFNet at 224 px: 110 -> 55 -> 26 -> 13 -> 6).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from .._validate import Limits, check_fields, limits
from ..errors import ZFNetError
from .layers import ContrastNorm, init_paper_

__all__ = ["ConvNetConfig", "ConvNet", "REMOVABLE_LAYERS", "LAYER_NAMES", "matched_init_std",
           "scaled_variant", "MAX_PARAMETERS", "MAX_CLASSES", "MAX_INPUT_SIZE", "MAX_WIDTH"]

REMOVABLE_LAYERS = ("conv3", "conv4", "fc6", "fc7")
LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

# Upper bounds of a configuration, checked before anything is allocated. The parameter count bounds
# memory (2e9 float32 weights are 8 GB, before gradients and momentum; ZFNet has 62M); the others
# keep each number sane on its own (ImageNet-21k has 21,841 classes; the paper's widest layer 4096).
MAX_PARAMETERS = 2_000_000_000
MAX_CLASSES = 1_000_000
MAX_INPUT_SIZE = 2048
MAX_WIDTH = 65_536
_MAX_KERNEL = 255
_WIDTH = Limits(1, MAX_WIDTH)
_CONV = limits(items=(_WIDTH, Limits(1, _MAX_KERNEL), Limits(1, _MAX_KERNEL), Limits(0, _MAX_KERNEL)))


@dataclass(frozen=True)
class ConvNetConfig:
    """Hyperparameters of a ZFNet-family network.

    Every field is checked by type and range when the config is made (widths 1 to :data:`MAX_WIDTH`,
    kernels and strides up to 255, input size up to :data:`MAX_INPUT_SIZE`, classes up to
    :data:`MAX_CLASSES`), and so is the parameter count (at most :data:`MAX_PARAMETERS`): a bad config
    is a :class:`~zfnet.errors.ZFNetError` before any memory is allocated.

    Attributes:
        num_classes: width of fc8 (the softmax).
        input_size: side of the square input crop in pixels.
        in_channels: input channels.
        conv1: (filters, kernel, stride, padding) of conv1.
        conv2: (filters, kernel, stride, padding) of conv2.
        conv345: filters of conv3, conv4, conv5 (3x3, stride 1, padding 1).
        fc: widths of fc6 and fc7.
        removed: layers left out, any of ``conv3, conv4, fc6, fc7`` (the paper's Table 3).
        dropout: dropout probability after fc6 and fc7.
        lrn: (size, alpha, beta, k) of the contrast normalisation.
        init_std: standard deviation of the initial weights: one value for every layer (the
            paper's 1e-2), or one per layer present, conv1 ... fc8 in order.
        norm_before_pool: normalise conv1's and conv2's maps before their max-pools (Krizhevsky et
            al. 2012) instead of after them (ZFNet's Fig. 3). It changes no parameter and no map size.
        init_bias_one: layers whose biases start at 1 instead of 0 (Krizhevsky et al.'s conv2,
            conv4, conv5, fc6, fc7); a layer that is removed is skipped.
    """

    num_classes: int = field(default=1000, metadata=limits(1, MAX_CLASSES))
    input_size: int = field(default=224, metadata=limits(1, MAX_INPUT_SIZE))
    in_channels: int = field(default=3, metadata=limits(1, MAX_WIDTH))
    conv1: tuple[int, int, int, int] = field(default=(96, 7, 2, 1), metadata=_CONV)
    conv2: tuple[int, int, int, int] = field(default=(256, 5, 2, 0), metadata=_CONV)
    conv345: tuple[int, int, int] = field(default=(384, 384, 256), metadata=limits(1, MAX_WIDTH))
    fc: tuple[int, int] = field(default=(4096, 4096), metadata=limits(1, MAX_WIDTH))
    removed: tuple[str, ...] = field(default=(), metadata=limits(max_items=len(REMOVABLE_LAYERS)))
    dropout: float = field(default=0.5, metadata=limits(0, 1, high_open=True))
    lrn: tuple[int, float, float, float] = field(default=(5, 1e-4, 0.75, 2.0), metadata=limits(
        items=(Limits(1, _MAX_KERNEL), Limits(0, 1e3), Limits(0, 10), Limits(0, 1e3, low_open=True))))
    init_std: float | tuple[float, ...] = field(default=1e-2, metadata=limits(
        0, 10, low_open=True, max_items=len(LAYER_NAMES)))
    norm_before_pool: bool = False
    init_bias_one: tuple[str, ...] = field(default=(), metadata=limits(choices=LAYER_NAMES,
                                                                        max_items=len(LAYER_NAMES)))

    def __post_init__(self) -> None:
        # Types and ranges first (sequences from JSON or the CLI become tuples, so configs compare
        # and hash), then the rules between fields; all before anything is allocated.
        check_fields(self, "model option")
        bad = [r for r in self.removed if r not in REMOVABLE_LAYERS]
        if bad:
            raise ZFNetError(f"cannot remove {bad}: removable layers are {', '.join(REMOVABLE_LAYERS)}")
        object.__setattr__(self, "removed", tuple(n for n in REMOVABLE_LAYERS if n in self.removed))
        object.__setattr__(self, "init_bias_one", tuple(n for n in LAYER_NAMES if n in self.init_bias_one))
        if isinstance(self.init_std, tuple) and len(self.init_std) != len(self.layers()):
            raise ZFNetError(f"init_std needs one value per layer ({', '.join(self.layers())}), "
                             f"got {len(self.init_std)}")
        self.map_sizes()  # raises if the input is too small for the structure
        count = self.parameter_count()
        if count > MAX_PARAMETERS:
            raise ZFNetError(f"this model would have {count:,} parameters ({4 * count / 2**30:.0f} GiB of float32 "
                             f"weights), more than the {MAX_PARAMETERS:,} zfnet builds; narrow fc or conv345, "
                             "or lower input_size or num_classes")

    def parameter_count(self) -> int:
        """The number of weights and biases of the network, computed without building it.

        Example:
            >>> ConvNetConfig().parameter_count()
            62357608
        """
        widths = {"conv1": self.conv1[0], "conv2": self.conv2[0], "conv3": self.conv345[0],
                  "conv4": self.conv345[1], "conv5": self.conv345[2], "fc6": self.fc[0], "fc7": self.fc[1],
                  "fc8": self.num_classes}
        return sum((fan_in + 1) * widths[name] for name, fan_in in self.fan_ins().items())

    def layers(self) -> list[str]:
        """The paper's layer names present in this configuration, conv1 ... fc8."""
        return [n for n in LAYER_NAMES if n not in self.removed]

    def fan_ins(self) -> dict[str, int]:
        """Inputs per unit of each layer present (in_channels x kernel area; in_features for FC)."""
        out: dict[str, int] = {"conv1": self.in_channels * self.conv1[1] ** 2}
        channels = self.conv1[0]
        out["conv2"] = channels * self.conv2[1] ** 2
        channels = self.conv2[0]
        for name, width in zip(("conv3", "conv4", "conv5"), self.conv345):
            if name not in self.removed:
                out[name] = channels * 9
                channels = width
        features = channels * self.map_sizes()["pool5"] ** 2
        for name, width in zip(("fc6", "fc7"), self.fc):
            if name not in self.removed:
                out[name] = features
                features = width
        out["fc8"] = features
        return out

    def map_sizes(self) -> dict[str, int]:
        """Side of each stage's output maps, e.g. ZFNet: conv1 110, pool1 55, ..., pool5 6.

        Raises:
            ValueError: if a stage would produce maps smaller than 1x1.
        """
        sizes: dict[str, int] = {}
        s = self.input_size

        def step(name: str, kernel: int, stride: int, padding: int, ceil: bool = False) -> None:
            nonlocal s
            span = s + 2 * padding - kernel
            out = (math.ceil(span / stride) if ceil else span // stride) + 1
            if ceil and (out - 1) * stride >= s + padding:  # PyTorch drops a window starting off the map
                out -= 1
            if span < 0 or out < 1:
                raise ZFNetError(
                    f"input size {self.input_size} px is too small: {name} would have no output "
                    f"({s}x{s} maps into a {kernel}x{kernel} window)"
                )
            s = out
            sizes[name] = s

        step("conv1", *self.conv1[1:])
        step("pool1", 3, 2, 0, ceil=True)
        step("conv2", *self.conv2[1:])
        step("pool2", 3, 2, 0, ceil=True)
        for name in ("conv3", "conv4", "conv5"):
            if name not in self.removed:
                step(name, 3, 1, 1)
        step("pool5", 3, 2, 0, ceil=True)
        return sizes

    def with_overrides(self, **overrides) -> ConvNetConfig:
        """A copy with some fields changed.

        Raises:
            ValueError: an unknown option (the valid ones are listed), or widths of fc6 and fc7
                given together with the removal of both (they would be silently unused).
        """
        valid = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ZFNetError(f"unknown model option(s) {unknown}; valid options: {', '.join(sorted(valid))}")
        config = replace(self, **overrides)
        if "fc" in overrides and {"fc6", "fc7"} <= set(config.removed):
            raise ZFNetError(f"fc={tuple(config.fc)} sets the widths of fc6 and fc7, which removed="
                             f"{config.removed} leaves out; give one or the other")
        return config


def matched_init_std(config: ConvNetConfig, reference: ConvNetConfig, std: float = 1e-2) -> ConvNetConfig:
    """``config`` with per-layer init std giving each layer the signal gain it has in ``reference``.

    A layer's output scale at initialisation is about ``std * sqrt(fan_in)`` times its input's,
    so ``std_l = std * sqrt(fan_in_reference_l / fan_in_l)`` keeps the full-size network's gains
    in a narrower copy of it (the paper's N(0, 1e-2) where the fan-ins agree, as for conv1).
    """
    ref, own = reference.fan_ins(), config.fan_ins()
    stds = tuple(std * math.sqrt(ref.get(n, own[n]) / own[n]) for n in config.layers())
    return replace(config, init_std=stds)


def scaled_variant(base: ConvNetConfig, reference: ConvNetConfig, **overrides) -> ConvNetConfig:
    """A narrow variant ``base`` with ``overrides``, initialised with the gains of ``reference``.

    The reference gets the same removed layers, so each layer is matched with its counterpart.
    An explicit ``init_std`` override wins.
    """
    config = base.with_overrides(**overrides)
    if "init_std" in overrides:
        return config
    return matched_init_std(config, replace(reference, removed=config.removed))


def _conv_block(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding),
        relu=nn.ReLU(),
    ))


def _fc_block(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(linear=nn.Linear(in_features, out_features), relu=nn.ReLU()))


def _pool_and_norm(i: int, c: ConvNetConfig) -> list[tuple[str, nn.Module]]:
    """``pool{i}`` then ``norm{i}`` (ZFNet), or the other way round (AlexNet: the same map sizes)."""
    size, alpha, beta, k = c.lrn
    stages = [(f"pool{i}", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
              (f"norm{i}", ContrastNorm(int(size), alpha, beta, k))]
    return stages[::-1] if c.norm_before_pool else stages


@torch.no_grad()
def _set_bias_(module: nn.Module, value: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.constant_(m.bias, value)


class ConvNet(nn.Sequential):
    """ZFNet-family network built from a :class:`ConvNetConfig`.

    Args:
        config: the hyperparameters.
        name: the registry name it was built under (kept for checkpoints and reports).

    Shape:
        (B, in_channels, input_size, input_size) -> (B, num_classes) logits.

    Example:
        >>> import torch
        >>> net = ConvNet(ConvNetConfig(num_classes=10, input_size=64, conv1=(8, 7, 2, 1),
        ...                             conv2=(16, 5, 2, 0), conv345=(16, 16, 16), fc=(32, 32)))
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    def __init__(self, config: ConvNetConfig, name: str = "convnet") -> None:
        c = config
        sizes = c.map_sizes()
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        stages["conv1"] = _conv_block(c.in_channels, *c.conv1)          # (B, 96, 110, 110) for ZFNet
        stages.update(_pool_and_norm(1, c))                            # (B, 96, 55, 55)
        stages["conv2"] = _conv_block(c.conv1[0], *c.conv2)             # (B, 256, 26, 26)
        stages.update(_pool_and_norm(2, c))                            # (B, 256, 13, 13)
        channels = c.conv2[0]
        for name, width in zip(("conv3", "conv4", "conv5"), c.conv345):
            if name in c.removed:
                continue
            stages[name] = _conv_block(channels, width, 3, 1, 1)      # (B, width, 13, 13)
            channels = width
        stages["pool5"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)     # (B, 256, 6, 6)
        stages["flatten"] = nn.Flatten()                               # (B, 9216)
        features = channels * sizes["pool5"] ** 2
        for i, (name, width) in enumerate(zip(("fc6", "fc7"), c.fc)):
            if name in c.removed:
                continue
            stages[name] = _fc_block(features, width)                  # (B, 4096)
            stages[f"drop{6 + i}"] = nn.Dropout(c.dropout)
            features = width
        stages["fc8"] = nn.Linear(features, c.num_classes)             # (B, num_classes)
        super().__init__(stages)
        self.config = config
        self.name = name
        if isinstance(c.init_std, tuple):
            for layer, std in zip(c.layers(), c.init_std):
                init_paper_(self.get_submodule(layer), std=std)
        else:
            init_paper_(self, std=c.init_std)
        for layer in c.init_bias_one:
            if layer not in c.removed:
                _set_bias_(self.get_submodule(layer), 1.0)

    @property
    def input_size(self) -> int:
        """Side of the square input crop in pixels."""
        return self.config.input_size

    @property
    def layer_names(self) -> list[str]:
        """The paper's layer names present in this network, in order (``conv1`` ... ``fc8``)."""
        return [n for n in LAYER_NAMES if n in self._modules]
