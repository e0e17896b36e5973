"""Small copies of the torchvision model zoo, written the way torchvision writes them.

torchvision is not available here, so every architecture family of ``torchvision.models`` is re-created
from its source, with the same module classes, attribute names and ``forward`` code, so that layer names
(derived from module paths: ``layer3.1``, ``features.denseblock2``, ``inception4c``, ``trunk_output.block2``)
and the functional calls in ``forward`` match the real thing:

==================  ===========================================================================
builder             mirrors (torchvision)
==================  ===========================================================================
``resnet``          ``models.resnet.ResNet`` with ``BasicBlock`` (one ``self.relu`` called twice per
                    block, ``out += identity``, 1x1-conv + BN ``downsample``)
``resnet_bottleneck``  ``ResNet`` with ``Bottleneck`` (v1.5: the stride on the 3x3 conv)
``resnext``         ``ResNet`` with grouped ``Bottleneck`` (``groups``, ``width_per_group``)
``resnet_gn``       ``ResNet`` with ``norm_layer=GroupNorm`` (the ``norm_layer`` hook of torchvision)
``googlenet``       ``models.googlenet.GoogLeNet``: ``BasicConv2d`` (conv, BN, ``F.relu(inplace=True)``),
                    four-branch ``Inception`` + ``torch.cat``, ceil-mode max-pools, training-only aux heads
``inception_v3``    ``models.inception.Inception3``: ``InceptionA`` .. ``InceptionE``, factorised 1x7/7x1
                    convs, ``F.avg_pool2d(x, 3, 1, 1)`` and ``F.max_pool2d(x, 3, 2)`` branches
``densenet``        ``models.densenet.DenseNet``: ``_DenseLayer`` concatenating all previous features,
                    ``_Transition`` with ``AvgPool2d``, ``F.relu(features, inplace=True)`` at the end
``squeezenet``      ``models.squeezenet.SqueezeNet`` 1.1: ``Fire`` + ``torch.cat``, ceil-mode pools,
                    conv classifier, ``torch.flatten``
``shufflenet_v2``   ``models.shufflenetv2.ShuffleNetV2``: ``x.chunk(2, dim=1)``, ``channel_shuffle``
                    (view / transpose / contiguous / view), ``x.mean([2, 3])``
``regnet``          ``models.regnet.RegNet`` (Y): grouped ``BottleneckTransform`` + ``SqueezeExcitation``
                    (ReLU, Sigmoid, ``scale * input``), ``x + self.f(x)``, stages ``block1-0``
``mobilenet_v2``    ``models.mobilenetv2.MobileNetV2``: ReLU6, depthwise convs, ``x + self.conv(x)``
``mobilenet_v3``    ``models.mobilenetv3.MobileNetV3``: Hardswish, SE with Hardsigmoid, ``result += input``
``efficientnet``    ``models.efficientnet.EfficientNet`` (B0 layout): ``MBConv`` with SiLU, SE
                    (SiLU / Sigmoid), ``StochasticDepth`` then ``result += input``
``convnext``        ``models.convnext.ConvNeXt``: ``CNBlock`` (depthwise 7x7, ``Permute``, ``nn.LayerNorm``,
                    Linear, GELU, Linear, ``self.layer_scale * x``, stochastic depth), ``LayerNorm2d``
                    in the stem and the downsampling layers
``alexnet``         ``models.alexnet.AlexNet``
``vgg``             ``models.vgg.VGG`` (configuration "A", VGG-11; ``batch_norm`` for VGG-11-BN)
==================  ===========================================================================

Every small builder takes a keyword ``num_classes`` (default 10) and 64x64 inputs (:data:`INPUT_SIZE`); a
forward pass of a batch of a few images takes milliseconds on a CPU. Widths are torchvision's divided by
8 or 16 (or picked small where torchvision derives them), the module structure is unchanged, except:

- ``inception_v3``: ``Conv2d_1a_3x3`` has stride 1 instead of 2 and the net has one block of each kind
  (``Mixed_5b``, ``Mixed_6a``, ``Mixed_6b``, ``Mixed_7a``, ``Mixed_7b``), no aux head, so that 64x64
  inputs reach ``Mixed_7b`` at 2x2 (torchvision needs at least 75x75);
- ``googlenet`` and ``inception_v3`` default to ``init_weights=False`` (PyTorch's default init; torchvision's
  truncated normal with std 0.01 makes the small nets' activations vanish);
- ``convnext`` uses ``layer_scale=0.5`` (torchvision's 1e-6 makes every block a no-op in a random net).

:func:`resnet50` and :func:`vgg16` are the full-size torchvision architectures (25,557,032 and
138,357,544 parameters for 1000 classes) for benchmarks; build them under ``torch.device("meta")``
when only their structure is needed.

:func:`randomize_` re-draws a model's weights and normalisation statistics so that its logits and
probabilities are far from uniform (torchvision's initialisations leave several small nets with flat
outputs); use it in tests that look at probabilities.

:class:`ReorderedChain` and :class:`DataDependentBranch` are traps for error tests: children registered
in an order ``forward`` does not use, and ``if x.sum() > 0:`` control flow.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FAMILIES", "INPUT_SIZE", "resnet", "resnet_bottleneck", "resnext", "resnet_gn", "googlenet", "inception_v3",
    "densenet", "squeezenet", "shufflenet_v2", "regnet", "mobilenet_v2", "mobilenet_v3", "efficientnet",
    "convnext", "alexnet", "vgg", "resnet50", "vgg16", "randomize_", "ReorderedChain", "DataDependentBranch",
]

#: Side of the square inputs every small builder of :data:`FAMILIES` takes.
INPUT_SIZE = 64


# -- torchvision.ops.misc / models._utils ------------------------------------------------------------------


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision's rounding of channel counts to a multiple of ``divisor`` (never below 90% of ``v``)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """``torchvision.ops.misc.Conv2dNormActivation``: conv (``0``), norm (``1``), activation (``2``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU, dilation: int = 1,
                 inplace: bool | None = True, bias: bool | None = None) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            params = {} if inplace is None else {"inplace": inplace}
            layers.append(activation_layer(**params))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """``torchvision.ops.misc.SqueezeExcitation``: ``scale * input``, the scale from a pooled bottleneck."""

    def __init__(self, input_channels: int, squeeze_channels: int,
                 activation: Callable[..., nn.Module] = nn.ReLU,
                 scale_activation: Callable[..., nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input: Tensor) -> Tensor:
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input: Tensor) -> Tensor:
        scale = self._scale(input)
        return scale * input


class Permute(nn.Module):
    """``torchvision.ops.misc.Permute``."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


def stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """``torchvision.ops.stochastic_depth``: drops whole residual branches in training, identity in eval."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    if mode == "row":
        size = [input.shape[0]] + [1] * (input.ndim - 1)
    else:
        size = [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


class StochasticDepth(nn.Module):
    """``torchvision.ops.StochasticDepth``."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, input: Tensor) -> Tensor:
        return stochastic_depth(input, self.p, self.mode, self.training)


class LayerNorm2d(nn.LayerNorm):
    """``torchvision.models.convnext.LayerNorm2d``: LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = x.permute(0, 3, 1, 2)
        return x


# -- ResNet (torchvision.models.resnet) --------------------------------------------------------------------


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                     bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """``torchvision.models.resnet.BasicBlock``: the same ``self.relu`` runs twice."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class Bottleneck(nn.Module):
    """``torchvision.models.resnet.Bottleneck`` (ResNet v1.5: the stride sits on the 3x3 conv)."""

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class ResNet(nn.Module):
    """``torchvision.models.resnet.ResNet``; ``width`` (torchvision: 64) is the planes of ``layer1``."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int], num_classes: int = 1000,
                 zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
                 norm_layer: Callable[..., nn.Module] | None = None, *, width: int = 64) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer

        self.inplanes = width
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, self.dilation,
                        norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, norm_layer=norm_layer))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)        # (B, w, 32, 32) for 64x64 inputs
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)      # (B, w, 16, 16)

        x = self.layer1(x)       # (B, w * e, 16, 16)
        x = self.layer2(x)       # (B, 2w * e, 8, 8)
        x = self.layer3(x)       # (B, 4w * e, 4, 4)
        x = self.layer4(x)       # (B, 8w * e, 2, 2)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x


def resnet(*, num_classes: int = 10) -> ResNet:
    """A ResNet-10-like net: ``BasicBlock`` x [1, 2, 2, 1], widths 8/16/32/64 (``layer2.1``, ``layer3.1``)."""
    return ResNet(BasicBlock, [1, 2, 2, 1], num_classes=num_classes, width=8)


def resnet_bottleneck(*, num_classes: int = 10) -> ResNet:
    """``Bottleneck`` x [1, 2, 1, 1], planes 8/16/32/64 (outputs 32/64/128/256 channels)."""
    return ResNet(Bottleneck, [1, 2, 1, 1], num_classes=num_classes, width=8)


def resnext(*, num_classes: int = 10) -> ResNet:
    """ResNeXt-like: ``Bottleneck`` x [1, 1, 1, 1] with ``groups=4, width_per_group=16`` (grouped 3x3 convs)."""
    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=num_classes, groups=4, width_per_group=16, width=8)


def resnet_gn(*, num_classes: int = 10) -> ResNet:
    """``BasicBlock`` x [1, 1, 1, 1] with ``norm_layer=GroupNorm(2, C)`` everywhere instead of BatchNorm."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, norm_layer=partial(nn.GroupNorm, 2), width=8)


def resnet50(*, num_classes: int = 1000) -> ResNet:
    """torchvision's ``resnet50()``: 25,557,032 parameters for 1000 classes. Takes 224x224 inputs."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


# -- GoogLeNet (torchvision.models.googlenet) --------------------------------------------------------------


class BasicConv2d(nn.Module):
    """``torchvision.models.googlenet.BasicConv2d`` (and inception's): conv, BN, functional in-place ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x, inplace=True)


class Inception(nn.Module):
    """``torchvision.models.googlenet.Inception``: four branches concatenated along the channels."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int) -> None:
        super().__init__()
        conv_block = BasicConv2d
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, ch3x3red, kernel_size=1),
            conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_channels, ch5x5red, kernel_size=1),
            # torchvision's known bug (pytorch/vision#906): kernel_size=3 instead of 5.
            conv_block(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, kernel_size=1),
        )

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1 = self.branch1(x)
        branch2 = self.branch2(x)
        branch3 = self.branch3(x)
        branch4 = self.branch4(x)
        outputs = [branch1, branch2, branch3, branch4]
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class GoogLeNetAux(nn.Module):
    """``torchvision.models.googlenet.InceptionAux`` (runs only in training mode)."""

    def __init__(self, in_channels: int, num_classes: int, div: int = 1) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128 // div, kernel_size=1)
        self.fc1 = nn.Linear(2048 // div, 1024 // div)
        self.fc2 = nn.Linear(1024 // div, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x), inplace=True)
        x = F.dropout(x, 0.7, training=self.training)
        x = self.fc2(x)
        return x


class GoogLeNet(nn.Module):
    """``torchvision.models.googlenet.GoogLeNet``; every width divided by ``div`` (torchvision: 1).

    In training mode with ``aux_logits`` the forward returns ``(logits, aux2, aux1)``, else the logits.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, init_weights: bool = True,
                 div: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.aux_logits = aux_logits

        self.conv1 = BasicConv2d(3, c(64), kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(c(64), c(64), kernel_size=1)
        self.conv3 = BasicConv2d(c(64), c(192), kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = Inception(*map(c, (192, 64, 96, 128, 16, 32, 32)))
        self.inception3b = Inception(*map(c, (256, 128, 128, 192, 32, 96, 64)))
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(*map(c, (480, 192, 96, 208, 16, 48, 64)))
        self.inception4b = Inception(*map(c, (512, 160, 112, 224, 24, 64, 64)))
        self.inception4c = Inception(*map(c, (512, 128, 128, 256, 24, 64, 64)))
        self.inception4d = Inception(*map(c, (512, 112, 144, 288, 32, 64, 64)))
        self.inception4e = Inception(*map(c, (528, 256, 160, 320, 32, 128, 128)))
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(*map(c, (832, 256, 160, 320, 32, 128, 128)))
        self.inception5b = Inception(*map(c, (832, 384, 192, 384, 48, 128, 128)))

        self.aux1: GoogLeNetAux | None
        self.aux2: GoogLeNetAux | None
        if aux_logits:
            self.aux1 = GoogLeNetAux(c(512), num_classes, div)
            self.aux2 = GoogLeNetAux(c(528), num_classes, div)
        else:
            self.aux1 = None
            self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(c(1024), num_classes)

        if init_weights:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x = self.conv1(x)         # (B, 8, 32, 32) for div=8 and 64x64 inputs
        x = self.maxpool1(x)      # (B, 8, 16, 16)
        x = self.conv2(x)
        x = self.conv3(x)         # (B, 24, 16, 16)
        x = self.maxpool2(x)      # (B, 24, 8, 8)

        x = self.inception3a(x)   # (B, 32, 8, 8)
        x = self.inception3b(x)   # (B, 60, 8, 8)
        x = self.maxpool3(x)      # (B, 60, 4, 4)
        x = self.inception4a(x)   # (B, 64, 4, 4)
        aux1: Tensor | None = None
        if self.aux1 is not None:
            if self.training:
                aux1 = self.aux1(x)

        x = self.inception4b(x)
        x = self.inception4c(x)
        x = self.inception4d(x)   # (B, 66, 4, 4)
        aux2: Tensor | None = None
        if self.aux2 is not None:
            if self.training:
                aux2 = self.aux2(x)

        x = self.inception4e(x)   # (B, 104, 4, 4)
        x = self.maxpool4(x)      # (B, 104, 2, 2)
        x = self.inception5a(x)
        x = self.inception5b(x)   # (B, 128, 2, 2)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        x = self.fc(x)
        return x, aux2, aux1

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor | None, Tensor | None]:
        x, aux2, aux1 = self._forward(x)
        if self.training and self.aux_logits:
            return x, aux2, aux1
        return x


def googlenet(*, num_classes: int = 10, aux_logits: bool = True, init_weights: bool = False) -> GoogLeNet:
    """GoogLeNet with every width divided by 8 (``inception3a`` .. ``inception5b``; aux heads idle in eval)."""
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, init_weights=init_weights, div=8)


# -- Inception v3 (torchvision.models.inception) -----------------------------------------------------------


class InceptionA(nn.Module):
    """``torchvision.models.inception.InceptionA`` (widths divided by ``div``)."""

    def __init__(self, in_channels: int, pool_features: int, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.branch1x1 = BasicConv2d(in_channels, c(64), kernel_size=1)

        self.branch5x5_1 = BasicConv2d(in_channels, c(48), kernel_size=1)
        self.branch5x5_2 = BasicConv2d(c(48), c(64), kernel_size=5, padding=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, c(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(c(64), c(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(c(96), c(96), kernel_size=3, padding=1)

        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)

        branch5x5 = self.branch5x5_1(x)
        branch5x5 = self.branch5x5_2(branch5x5)

        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)

        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)

        outputs = [branch1x1, branch5x5, branch3x3dbl, branch_pool]
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class InceptionB(nn.Module):
    """``torchvision.models.inception.InceptionB``: stride-2 reduction with a functional max-pool branch."""

    def __init__(self, in_channels: int, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.branch3x3 = BasicConv2d(in_channels, c(384), kernel_size=3, stride=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, c(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(c(64), c(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(c(96), c(96), kernel_size=3, stride=2)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3(x)

        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)

        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)

        outputs = [branch3x3, branch3x3dbl, branch_pool]
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class InceptionC(nn.Module):
    """``torchvision.models.inception.InceptionC``: factorised 1x7 / 7x1 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.branch1x1 = BasicConv2d(in_channels, c(192), kernel_size=1)

        c7 = channels_7x7
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, c(192), kernel_size=(7, 1), padding=(3, 0))

        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, c(192), kernel_size=(1, 7), padding=(0, 3))

        self.branch_pool = BasicConv2d(in_channels, c(192), kernel_size=1)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)

        branch7x7 = self.branch7x7_1(x)
        branch7x7 = self.branch7x7_2(branch7x7)
        branch7x7 = self.branch7x7_3(branch7x7)

        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_2(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_3(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_4(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)

        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)

        outputs = [branch1x1, branch7x7, branch7x7dbl, branch_pool]
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class InceptionD(nn.Module):
    """``torchvision.models.inception.InceptionD``: stride-2 reduction."""

    def __init__(self, in_channels: int, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.branch3x3_1 = BasicConv2d(in_channels, c(192), kernel_size=1)
        self.branch3x3_2 = BasicConv2d(c(192), c(320), kernel_size=3, stride=2)

        self.branch7x7x3_1 = BasicConv2d(in_channels, c(192), kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(c(192), c(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(c(192), c(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(c(192), c(192), kernel_size=3, stride=2)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.branch3x3_2(branch3x3)

        branch7x7x3 = self.branch7x7x3_1(x)
        branch7x7x3 = self.branch7x7x3_2(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_3(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_4(branch7x7x3)

        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        outputs = [branch3x3, branch7x7x3, branch_pool]
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class InceptionE(nn.Module):
    """``torchvision.models.inception.InceptionE``: 1x3 / 3x1 splits concatenated inside branches."""

    def __init__(self, in_channels: int, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.branch1x1 = BasicConv2d(in_channels, c(320), kernel_size=1)

        self.branch3x3_1 = BasicConv2d(in_channels, c(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(c(384), c(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(c(384), c(384), kernel_size=(3, 1), padding=(1, 0))

        self.branch3x3dbl_1 = BasicConv2d(in_channels, c(448), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(c(448), c(384), kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(c(384), c(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(c(384), c(384), kernel_size=(3, 1), padding=(1, 0))

        self.branch_pool = BasicConv2d(in_channels, c(192), kernel_size=1)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch1x1 = self.branch1x1(x)

        branch3x3 = self.branch3x3_1(x)
        branch3x3 = [
            self.branch3x3_2a(branch3x3),
            self.branch3x3_2b(branch3x3),
        ]
        branch3x3 = torch.cat(branch3x3, 1)

        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = [
            self.branch3x3dbl_3a(branch3x3dbl),
            self.branch3x3dbl_3b(branch3x3dbl),
        ]
        branch3x3dbl = torch.cat(branch3x3dbl, 1)

        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(branch_pool)

        outputs = [branch1x1, branch3x3, branch3x3dbl, branch_pool]
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self._forward(x)
        return torch.cat(outputs, 1)


class Inception3(nn.Module):
    """``torchvision.models.inception.Inception3``, shortened: one block of each kind, widths / 16.

    ``Conv2d_1a_3x3`` has stride 1 (torchvision: 2) so that 64x64 inputs reach ``Mixed_7b`` at 2x2.
    """

    def __init__(self, num_classes: int = 1000, init_weights: bool = True, dropout: float = 0.5,
                 div: int = 16) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.Conv2d_1a_3x3 = BasicConv2d(3, c(32), kernel_size=3, stride=1)
        self.Conv2d_2a_3x3 = BasicConv2d(c(32), c(32), kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(c(32), c(64), kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(c(64), c(80), kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(c(80), c(192), kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(c(192), pool_features=c(32), div=div)
        a_out = c(64) + c(64) + c(96) + c(32)
        self.Mixed_6a = InceptionB(a_out, div=div)
        b_out = c(384) + c(96) + a_out
        self.Mixed_6b = InceptionC(b_out, channels_7x7=c(128), div=div)
        self.Mixed_7a = InceptionD(c(768), div=div)
        d_out = c(320) + c(192) + c(768)
        self.Mixed_7b = InceptionE(d_out, div=div)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(c(2048), num_classes)
        if init_weights:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv2d_1a_3x3(x)   # (B, 2, 62, 62) for 64x64 inputs
        x = self.Conv2d_2a_3x3(x)   # (B, 2, 60, 60)
        x = self.Conv2d_2b_3x3(x)   # (B, 4, 60, 60)
        x = self.maxpool1(x)        # (B, 4, 29, 29)
        x = self.Conv2d_3b_1x1(x)   # (B, 5, 29, 29)
        x = self.Conv2d_4a_3x3(x)   # (B, 12, 27, 27)
        x = self.maxpool2(x)        # (B, 12, 13, 13)
        x = self.Mixed_5b(x)        # (B, 16, 13, 13)
        x = self.Mixed_6a(x)        # (B, 46, 6, 6)
        x = self.Mixed_6b(x)        # (B, 48, 6, 6)
        x = self.Mixed_7a(x)        # (B, 80, 2, 2)
        x = self.Mixed_7b(x)        # (B, 128, 2, 2)
        x = self.avgpool(x)
        x = self.dropout(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


def inception_v3(*, num_classes: int = 10, init_weights: bool = False) -> Inception3:
    """Inception v3, shortened (``Mixed_5b``, ``Mixed_6a``, ``Mixed_6b``, ``Mixed_7a``, ``Mixed_7b``)."""
    return Inception3(num_classes=num_classes, init_weights=init_weights)


# -- DenseNet (torchvision.models.densenet) ----------------------------------------------------------------


class _DenseLayer(nn.Module):
    """``torchvision.models.densenet._DenseLayer``: takes the list of all previous feature maps."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)

        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)

        self.drop_rate = float(drop_rate)

    def bn_function(self, inputs: list[Tensor]) -> Tensor:
        concated_features = torch.cat(inputs, 1)
        bottleneck_output = self.conv1(self.relu1(self.norm1(concated_features)))
        return bottleneck_output

    def forward(self, input: Tensor | list[Tensor]) -> Tensor:
        prev_features = [input] if isinstance(input, Tensor) else input
        bottleneck_output = self.bn_function(prev_features)
        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class _DenseBlock(nn.ModuleDict):
    """``torchvision.models.densenet._DenseBlock``: ``denselayer1`` .., outputs the concatenation of all."""

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
                 drop_rate: float) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate=growth_rate, bn_size=bn_size,
                                drop_rate=drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for _name, layer in self.items():
            new_features = layer(features)
            features.append(new_features)
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """``torchvision.models.densenet._Transition``: BN, ReLU, 1x1 conv, 2x2 average pool."""

    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """``torchvision.models.densenet.DenseNet``."""

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))

        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers=num_layers, num_input_features=num_features, bn_size=bn_size,
                                growth_rate=growth_rate, drop_rate=drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features = num_features + num_layers * growth_rate
            if i != len(block_config) - 1:
                trans = _Transition(num_input_features=num_features, num_output_features=num_features // 2)
                self.features.add_module(f"transition{i + 1}", trans)
                num_features = num_features // 2

        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)   # (B, 16, 2, 2) for the small net and 64x64 inputs
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        out = self.classifier(out)
        return out


def densenet(*, num_classes: int = 10) -> DenseNet:
    """DenseNet with growth rate 4, blocks (2, 2, 2, 2), 8 initial features (``features.denseblock1`` ..)."""
    return DenseNet(growth_rate=4, block_config=(2, 2, 2, 2), num_init_features=8, bn_size=2,
                    num_classes=num_classes)


# -- SqueezeNet (torchvision.models.squeezenet) ------------------------------------------------------------


class Fire(nn.Module):
    """``torchvision.models.squeezenet.Fire``: squeeze 1x1, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(nn.Module):
    """``torchvision.models.squeezenet.SqueezeNet`` version 1.1, widths divided by ``div``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, c(64), kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(c(64), c(16), c(64), c(64)),
            Fire(c(128), c(16), c(64), c(64)),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(c(128), c(32), c(128), c(128)),
            Fire(c(256), c(32), c(128), c(128)),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(c(256), c(48), c(192), c(192)),
            Fire(c(384), c(48), c(192), c(192)),
            Fire(c(384), c(64), c(256), c(256)),
            Fire(c(512), c(64), c(256), c(256)),
        )
        final_conv = nn.Conv2d(c(512), self.num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)     # (B, 64, 3, 3) for div=8 and 64x64 inputs
        x = self.classifier(x)
        return torch.flatten(x, 1)


def squeezenet(*, num_classes: int = 10) -> SqueezeNet:
    """SqueezeNet 1.1 with widths / 8 (``features.3`` .. ``features.12`` are ``Fire`` modules)."""
    return SqueezeNet(num_classes=num_classes, div=8)


# -- ShuffleNet v2 (torchvision.models.shufflenetv2) -------------------------------------------------------


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """``torchvision.models.shufflenetv2.channel_shuffle``."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups

    # reshape
    x = x.view(batchsize, groups, channels_per_group, height, width)

    x = torch.transpose(x, 1, 2).contiguous()

    # flatten
    x = x.view(batchsize, num_channels, height, width)

    return x


class ShuffleInvertedResidual(nn.Module):
    """``torchvision.models.shufflenetv2.InvertedResidual``."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if not (1 <= stride <= 3):
            raise ValueError("illegal stride value")
        self.stride = stride

        branch_features = oup // 2
        if (self.stride == 1) and (inp != branch_features << 1):
            raise ValueError(f"Invalid combination of stride {stride}, inp {inp} and oup {oup} values. "
                             "If stride == 1 then inp should be equal to oup // 2 << 1.")

        if self.stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(inp, inp, kernel_size=3, stride=self.stride, padding=1),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()

        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if (self.stride > 1) else branch_features, branch_features, kernel_size=1, stride=1,
                      padding=0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            self.depthwise_conv(branch_features, branch_features, kernel_size=3, stride=self.stride, padding=1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def depthwise_conv(i: int, o: int, kernel_size: int, stride: int = 1, padding: int = 0,
                       bias: bool = False) -> nn.Conv2d:
        return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)

        out = channel_shuffle(out, 2)

        return out


class ShuffleNetV2(nn.Module):
    """``torchvision.models.shufflenetv2.ShuffleNetV2``."""

    def __init__(self, stages_repeats: list[int], stages_out_channels: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError("expected stages_repeats as list of 3 positive ints")
        if len(stages_out_channels) != 5:
            raise ValueError("expected stages_out_channels as list of 5 positive ints")
        self._stage_out_channels = stages_out_channels

        input_channels = 3
        output_channels = self._stage_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        input_channels = output_channels

        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.stage2: nn.Sequential
        self.stage3: nn.Sequential
        self.stage4: nn.Sequential
        stage_names = [f"stage{i}" for i in [2, 3, 4]]
        for name, repeats, output_channels in zip(stage_names, stages_repeats, self._stage_out_channels[1:]):
            seq = [ShuffleInvertedResidual(input_channels, output_channels, 2)]
            for _ in range(repeats - 1):
                seq.append(ShuffleInvertedResidual(output_channels, output_channels, 1))
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels

        output_channels = self._stage_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )

        self.fc = nn.Linear(output_channels, num_classes)

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.conv1(x)     # (B, 8, 32, 32) for the small net and 64x64 inputs
        x = self.maxpool(x)   # (B, 8, 16, 16)
        x = self.stage2(x)    # (B, 16, 8, 8)
        x = self.stage3(x)    # (B, 32, 4, 4)
        x = self.stage4(x)    # (B, 64, 2, 2)
        x = self.conv5(x)
        x = x.mean([2, 3])  # globalpool
        x = self.fc(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


def shufflenet_v2(*, num_classes: int = 10) -> ShuffleNetV2:
    """ShuffleNet v2 with repeats [2, 2, 1] and widths [8, 16, 32, 64, 128] (``stage2.1`` shuffles)."""
    return ShuffleNetV2([2, 2, 1], [8, 16, 32, 64, 128], num_classes=num_classes)


# -- RegNet (torchvision.models.regnet) --------------------------------------------------------------------


class SimpleStemIN(Conv2dNormActivation):
    """``torchvision.models.regnet.SimpleStemIN``: 3x3 stride-2 conv, BN, ReLU."""

    def __init__(self, width_in: int, width_out: int, norm_layer: Callable[..., nn.Module],
                 activation_layer: Callable[..., nn.Module]) -> None:
        super().__init__(width_in, width_out, kernel_size=3, stride=2, norm_layer=norm_layer,
                         activation_layer=activation_layer)


class BottleneckTransform(nn.Sequential):
    """``torchvision.models.regnet.BottleneckTransform``: 1x1 (``a``), grouped 3x3 (``b``), SE, 1x1 (``c``)."""

    def __init__(self, width_in: int, width_out: int, stride: int, norm_layer: Callable[..., nn.Module],
                 activation_layer: Callable[..., nn.Module], group_width: int, bottleneck_multiplier: float,
                 se_ratio: float | None) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        w_b = int(round(width_out * bottleneck_multiplier))
        g = w_b // group_width

        layers["a"] = Conv2dNormActivation(width_in, w_b, kernel_size=1, stride=1, norm_layer=norm_layer,
                                           activation_layer=activation_layer)
        layers["b"] = Conv2dNormActivation(w_b, w_b, kernel_size=3, stride=stride, groups=g, norm_layer=norm_layer,
                                           activation_layer=activation_layer)
        if se_ratio:
            width_se_out = int(round(se_ratio * width_in))
            layers["se"] = SqueezeExcitation(input_channels=w_b, squeeze_channels=width_se_out,
                                             activation=activation_layer)
        layers["c"] = Conv2dNormActivation(w_b, width_out, kernel_size=1, stride=1, norm_layer=norm_layer,
                                           activation_layer=None)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    """``torchvision.models.regnet.ResBottleneckBlock``: ``x + self.f(x)``, then ``self.activation``."""

    def __init__(self, width_in: int, width_out: int, stride: int, norm_layer: Callable[..., nn.Module],
                 activation_layer: Callable[..., nn.Module], group_width: int = 1,
                 bottleneck_multiplier: float = 1.0, se_ratio: float | None = None) -> None:
        super().__init__()
        self.proj = None
        should_proj = (width_in != width_out) or (stride != 1)
        if should_proj:
            self.proj = Conv2dNormActivation(width_in, width_out, kernel_size=1, stride=stride,
                                             norm_layer=norm_layer, activation_layer=None)
        self.f = BottleneckTransform(width_in, width_out, stride, norm_layer, activation_layer, group_width,
                                     bottleneck_multiplier, se_ratio)
        self.activation = activation_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class AnyStage(nn.Sequential):
    """``torchvision.models.regnet.AnyStage``: blocks named ``block{stage}-{i}``."""

    def __init__(self, width_in: int, width_out: int, stride: int, depth: int,
                 block_constructor: Callable[..., nn.Module], norm_layer: Callable[..., nn.Module],
                 activation_layer: Callable[..., nn.Module], group_width: int, bottleneck_multiplier: float,
                 se_ratio: float | None = None, stage_index: int = 0) -> None:
        super().__init__()
        for i in range(depth):
            block = block_constructor(width_in if i == 0 else width_out, width_out, stride if i == 0 else 1,
                                      norm_layer, activation_layer, group_width, bottleneck_multiplier, se_ratio)
            self.add_module(f"block{stage_index}-{i}", block)


class RegNet(nn.Module):
    """``torchvision.models.regnet.RegNet`` with explicit per-stage settings (torchvision derives them)."""

    def __init__(self, depths: Sequence[int], widths: Sequence[int], group_width: int, se_ratio: float | None,
                 num_classes: int = 1000, stem_width: int = 32, bottleneck_multiplier: float = 1.0) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1)
        activation = nn.ReLU
        self.stem = SimpleStemIN(3, stem_width, norm_layer, activation)

        current_width = stem_width
        blocks = []
        for i, (width_out, depth) in enumerate(zip(widths, depths)):
            blocks.append((f"block{i + 1}", AnyStage(current_width, width_out, 2, depth, ResBottleneckBlock,
                                                      norm_layer, activation, group_width, bottleneck_multiplier,
                                                      se_ratio, stage_index=i + 1)))
            current_width = width_out
        self.trunk_output = nn.Sequential(OrderedDict(blocks))

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_features=current_width, out_features=num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)            # (B, 8, 32, 32) for the small net and 64x64 inputs
        x = self.trunk_output(x)    # (B, 32, 2, 2)

        x = self.avgpool(x)
        x = x.flatten(start_dim=1)
        x = self.fc(x)

        return x


def regnet(*, num_classes: int = 10) -> RegNet:
    """RegNetY-like: depths [1, 2, 1, 1], widths [8, 16, 24, 32], group width 4, SE ratio 0.25.

    Blocks are ``trunk_output.block1.block1-0`` .. ``trunk_output.block4.block4-0``; SE modules
    ``trunk_output.block2.block2-1.f.se``.
    """
    return RegNet([1, 2, 1, 1], [8, 16, 24, 32], group_width=4, se_ratio=0.25, num_classes=num_classes,
                  stem_width=8)


# -- MobileNet v2 (torchvision.models.mobilenetv2) ---------------------------------------------------------


class InvertedResidual(nn.Module):
    """``torchvision.models.mobilenetv2.InvertedResidual``: ``x + self.conv(x)`` when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        self.stride = stride
        if stride not in [1, 2]:
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d

        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = self.stride == 1 and inp == oup

        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=nn.ReLU6))
        layers.extend([
            Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU6),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            norm_layer(oup),
        ])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        else:
            return self.conv(x)


class MobileNetV2(nn.Module):
    """``torchvision.models.mobilenetv2.MobileNetV2`` with an explicit setting and widths."""

    def __init__(self, num_classes: int = 1000, inverted_residual_setting: list[list[int]] | None = None,
                 input_channel: int = 32, last_channel: int = 1280, dropout: float = 0.2) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d
        if inverted_residual_setting is None:
            inverted_residual_setting = [
                [1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                [6, 320, 1, 1],
            ]
        self.last_channel = last_channel
        features: list[nn.Module] = [
            Conv2dNormActivation(3, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)
        ]
        for t, c, n, s in inverted_residual_setting:
            output_channel = c
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(InvertedResidual(input_channel, output_channel, stride, expand_ratio=t,
                                                 norm_layer=norm_layer))
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1, norm_layer=norm_layer,
                                             activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)

        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(self.last_channel, num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)   # (B, 64, 4, 4) for the small net and 64x64 inputs
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


def mobilenet_v2(*, num_classes: int = 10) -> MobileNetV2:
    """MobileNet v2 with setting [[1, 8, 1, 1], [6, 12, 2, 2], [6, 16, 2, 2], [6, 24, 1, 2]].

    ``features.1``, ``features.3`` and ``features.5`` are residual (``x + self.conv(x)``).
    """
    setting = [[1, 8, 1, 1], [6, 12, 2, 2], [6, 16, 2, 2], [6, 24, 1, 2]]
    return MobileNetV2(num_classes=num_classes, inverted_residual_setting=setting, input_channel=8,
                       last_channel=64)


# -- MobileNet v3 (torchvision.models.mobilenetv3) ---------------------------------------------------------


class InvertedResidualConfig:
    """``torchvision.models.mobilenetv3.InvertedResidualConfig`` (width multiplier 1)."""

    def __init__(self, input_channels: int, kernel: int, expanded_channels: int, out_channels: int, use_se: bool,
                 activation: str, stride: int, dilation: int) -> None:
        self.input_channels = input_channels
        self.kernel = kernel
        self.expanded_channels = expanded_channels
        self.out_channels = out_channels
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride
        self.dilation = dilation


class InvertedResidualV3(nn.Module):
    """``torchvision.models.mobilenetv3.InvertedResidual``: expand, depthwise, SE (Hardsigmoid), project."""

    def __init__(self, cnf: InvertedResidualConfig, norm_layer: Callable[..., nn.Module],
                 se_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if se_layer is None:
            se_layer = partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)
        if not (1 <= cnf.stride <= 2):
            raise ValueError("illegal stride value")

        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels

        layers: list[nn.Module] = []
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU

        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))

        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, kernel_size=cnf.kernel,
                                           stride=stride, dilation=cnf.dilation, groups=cnf.expanded_channels,
                                           norm_layer=norm_layer, activation_layer=activation_layer))
        if cnf.use_se:
            squeeze_channels = _make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(se_layer(cnf.expanded_channels, squeeze_channels))

        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))

        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result += input
        return result


class MobileNetV3(nn.Module):
    """``torchvision.models.mobilenetv3.MobileNetV3``."""

    def __init__(self, inverted_residual_setting: list[InvertedResidualConfig], last_channel: int,
                 num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)

        layers: list[nn.Module] = []
        firstconv_output_channels = inverted_residual_setting[0].input_channels
        layers.append(Conv2dNormActivation(3, firstconv_output_channels, kernel_size=3, stride=2,
                                           norm_layer=norm_layer, activation_layer=nn.Hardswish))
        for cnf in inverted_residual_setting:
            layers.append(InvertedResidualV3(cnf, norm_layer))

        lastconv_input_channels = inverted_residual_setting[-1].out_channels
        lastconv_output_channels = 6 * lastconv_input_channels
        layers.append(Conv2dNormActivation(lastconv_input_channels, lastconv_output_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=nn.Hardswish))

        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_output_channels, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)   # (B, 96, 4, 4) for the small net and 64x64 inputs
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


def mobilenet_v3(*, num_classes: int = 10) -> MobileNetV3:
    """MobileNet v3 (small layout): SE + ReLU, plain ReLU, residual ReLU, SE + Hardswish, residual SE + Hardswish.

    ``features.3`` and ``features.5`` are residual (``result += input``); SE at ``features.1.block.1``,
    ``features.4.block.2``, ``features.5.block.2``.
    """
    cnf = InvertedResidualConfig
    setting = [
        cnf(8, 3, 8, 8, True, "RE", 2, 1),
        cnf(8, 3, 24, 12, False, "RE", 2, 1),
        cnf(12, 3, 36, 12, False, "RE", 1, 1),
        cnf(12, 5, 48, 16, True, "HS", 2, 1),
        cnf(16, 5, 64, 16, True, "HS", 1, 1),
    ]
    return MobileNetV3(setting, last_channel=64, num_classes=num_classes)


# -- EfficientNet (torchvision.models.efficientnet) --------------------------------------------------------


class MBConvConfig:
    """``torchvision.models.efficientnet.MBConvConfig`` (width and depth multipliers 1)."""

    def __init__(self, expand_ratio: float, kernel: int, stride: int, input_channels: int, out_channels: int,
                 num_layers: int) -> None:
        self.expand_ratio = expand_ratio
        self.kernel = kernel
        self.stride = stride
        self.input_channels = input_channels
        self.out_channels = out_channels
        self.num_layers = num_layers

    @staticmethod
    def adjust_channels(channels: int, width_mult: float, min_value: int | None = None) -> int:
        return _make_divisible(channels * width_mult, 8, min_value)


class MBConv(nn.Module):
    """``torchvision.models.efficientnet.MBConv``: SiLU, SE (SiLU / Sigmoid), stochastic depth, ``+=``."""

    def __init__(self, cnf: MBConvConfig, stochastic_depth_prob: float, norm_layer: Callable[..., nn.Module],
                 se_layer: Callable[..., nn.Module] = SqueezeExcitation) -> None:
        super().__init__()
        if not (1 <= cnf.stride <= 2):
            raise ValueError("illegal stride value")

        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels

        layers: list[nn.Module] = []
        activation_layer = nn.SiLU

        expanded_channels = cnf.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        if expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))

        layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel_size=cnf.kernel,
                                           stride=cnf.stride, groups=expanded_channels, norm_layer=norm_layer,
                                           activation_layer=activation_layer))

        squeeze_channels = max(1, cnf.input_channels // 4)
        layers.append(se_layer(expanded_channels, squeeze_channels, activation=partial(nn.SiLU, inplace=True)))

        layers.append(Conv2dNormActivation(expanded_channels, cnf.out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))

        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += input
        return result


class EfficientNet(nn.Module):
    """``torchvision.models.efficientnet.EfficientNet`` (v1 blocks)."""

    def __init__(self, inverted_residual_setting: list[MBConvConfig], dropout: float,
                 stochastic_depth_prob: float = 0.2, num_classes: int = 1000) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d

        layers: list[nn.Module] = []
        firstconv_output_channels = inverted_residual_setting[0].input_channels
        layers.append(Conv2dNormActivation(3, firstconv_output_channels, kernel_size=3, stride=2,
                                           norm_layer=norm_layer, activation_layer=nn.SiLU))

        total_stage_blocks = sum(cnf.num_layers for cnf in inverted_residual_setting)
        stage_block_id = 0
        for cnf in inverted_residual_setting:
            stage: list[nn.Module] = []
            for _ in range(cnf.num_layers):
                block_cnf = MBConvConfig(cnf.expand_ratio, cnf.kernel, cnf.stride, cnf.input_channels,
                                         cnf.out_channels, cnf.num_layers)
                if stage:
                    block_cnf.input_channels = block_cnf.out_channels
                    block_cnf.stride = 1
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total_stage_blocks
                stage.append(MBConv(block_cnf, sd_prob, norm_layer))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))

        lastconv_input_channels = inverted_residual_setting[-1].out_channels
        lastconv_output_channels = 4 * lastconv_input_channels
        layers.append(Conv2dNormActivation(lastconv_input_channels, lastconv_output_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=nn.SiLU))

        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(lastconv_output_channels, num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)   # (B, 96, 4, 4) for the small net and 64x64 inputs
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


def efficientnet(*, num_classes: int = 10) -> EfficientNet:
    """EfficientNet-B0 layout, shortened: stages (1, 3x3, 8->8), (4, 3x3, s2, 8->12, x2), (4, 5x5, s2, 12->16, x2),
    (4, 3x3, s2, 16->24).

    ``features.1.0`` (expand ratio 1, no expand conv), ``features.2.1`` and ``features.3.1`` are residual.
    """
    setting = [
        MBConvConfig(1, 3, 1, 8, 8, 1),
        MBConvConfig(4, 3, 2, 8, 12, 2),
        MBConvConfig(4, 5, 2, 12, 16, 2),
        MBConvConfig(4, 3, 2, 16, 24, 1),
    ]
    return EfficientNet(setting, dropout=0.2, num_classes=num_classes)


# -- ConvNeXt (torchvision.models.convnext) ----------------------------------------------------------------


class CNBlock(nn.Module):
    """``torchvision.models.convnext.CNBlock``: ``self.layer_scale * self.block(input)``, stochastic depth, ``+=``."""

    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = partial(nn.LayerNorm, eps=1e-6)

        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            norm_layer(dim),
            nn.Linear(in_features=dim, out_features=4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(in_features=4 * dim, out_features=dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, input: Tensor) -> Tensor:
        result = self.layer_scale * self.block(input)
        result = self.stochastic_depth(result)
        result += input
        return result


class CNBlockConfig:
    """``torchvision.models.convnext.CNBlockConfig``."""

    def __init__(self, input_channels: int, out_channels: int | None, num_layers: int) -> None:
        self.input_channels = input_channels
        self.out_channels = out_channels
        self.num_layers = num_layers


class ConvNeXt(nn.Module):
    """``torchvision.models.convnext.ConvNeXt``."""

    def __init__(self, block_setting: list[CNBlockConfig], stochastic_depth_prob: float = 0.0,
                 layer_scale: float = 1e-6, num_classes: int = 1000) -> None:
        super().__init__()
        block = CNBlock
        norm_layer = partial(LayerNorm2d, eps=1e-6)

        layers: list[nn.Module] = []

        firstconv_output_channels = block_setting[0].input_channels
        layers.append(Conv2dNormActivation(3, firstconv_output_channels, kernel_size=4, stride=4, padding=0,
                                           norm_layer=norm_layer, activation_layer=None, bias=True))

        total_stage_blocks = sum(cnf.num_layers for cnf in block_setting)
        stage_block_id = 0
        for cnf in block_setting:
            stage: list[nn.Module] = []
            for _ in range(cnf.num_layers):
                sd_prob = stochastic_depth_prob * stage_block_id / (total_stage_blocks - 1.0)
                stage.append(block(cnf.input_channels, layer_scale, sd_prob))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))
            if cnf.out_channels is not None:
                layers.append(nn.Sequential(
                    norm_layer(cnf.input_channels),
                    nn.Conv2d(cnf.input_channels, cnf.out_channels, kernel_size=2, stride=2),
                ))

        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        lastblock = block_setting[-1]
        lastconv_output_channels = (lastblock.out_channels if lastblock.out_channels is not None
                                    else lastblock.input_channels)
        self.classifier = nn.Sequential(
            norm_layer(lastconv_output_channels), nn.Flatten(1), nn.Linear(lastconv_output_channels, num_classes)
        )

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)   # (B, 64, 2, 2) for the small net and 64x64 inputs
        x = self.avgpool(x)
        x = self.classifier(x)
        return x


def convnext(*, num_classes: int = 10, layer_scale: float = 0.5) -> ConvNeXt:
    """ConvNeXt with stages (8, 1 block), (16, 1), (32, 2), (64, 1); stochastic depth 0.1 (identity in eval).

    Stages are ``features.1``, ``.3``, ``.5``, ``.7``; ``features.2``, ``.4``, ``.6`` downsample
    (``LayerNorm2d`` + 2x2 stride-2 conv); ``features.5.1`` is a ``CNBlock``.
    """
    setting = [
        CNBlockConfig(8, 16, 1),
        CNBlockConfig(16, 32, 1),
        CNBlockConfig(32, 64, 2),
        CNBlockConfig(64, None, 1),
    ]
    return ConvNeXt(setting, stochastic_depth_prob=0.1, layer_scale=layer_scale, num_classes=num_classes)


# -- AlexNet and VGG (torchvision.models.alexnet, torchvision.models.vgg) -----------------------------------


class AlexNet(nn.Module):
    """``torchvision.models.alexnet.AlexNet``; widths divided by ``div``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, div: int = 1) -> None:
        super().__init__()
        c = lambda n: n // div  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, c(64), kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c(64), c(192), kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c(192), c(384), kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c(384), c(256), kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c(256), c(256), kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c(256) * 6 * 6, c(4096)),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(c(4096), c(4096)),
            nn.ReLU(inplace=True),
            nn.Linear(c(4096), num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)   # (B, 32, 1, 1) for div=8 and 64x64 inputs
        x = self.avgpool(x)    # (B, 32, 6, 6)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


def alexnet(*, num_classes: int = 10) -> AlexNet:
    """AlexNet with widths / 8 (convs at ``features.0, 3, 6, 8, 10``)."""
    return AlexNet(num_classes=num_classes, div=8)


class VGG(nn.Module):
    """``torchvision.models.vgg.VGG``; ``width`` is the channels of the last conv (512), ``hidden`` 4096."""

    def __init__(self, features: nn.Module, num_classes: int = 1000, init_weights: bool = True,
                 dropout: float = 0.5, *, width: int = 512, hidden: int = 4096) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(width * 7 * 7, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


def make_layers(cfg: Sequence[str | int], batch_norm: bool = False) -> nn.Sequential:
    """``torchvision.models.vgg.make_layers``."""
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            v = int(v)
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


_VGG_CFGS: dict[str, list[str | int]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(*, num_classes: int = 10, batch_norm: bool = False) -> VGG:
    """VGG-11 (configuration "A") with widths / 8; with ``batch_norm`` VGG-11-BN."""
    cfg = [v if v == "M" else int(v) // 8 for v in _VGG_CFGS["A"]]
    return VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=num_classes, width=64, hidden=512)


def vgg16(*, num_classes: int = 1000) -> VGG:
    """torchvision's ``vgg16()``: 138,357,544 parameters for 1000 classes. Takes 224x224 inputs."""
    return VGG(make_layers(_VGG_CFGS["D"]), num_classes=num_classes)


def randomize_(model: nn.Module, generator: torch.Generator | None = None, *,
               input_size: int | None = INPUT_SIZE, spread: float = 2.0) -> nn.Module:
    """Re-initialise ``model`` in place so that no signal vanishes and no normalisation is the identity.

    torchvision's initialisations (std 0.01 linear layers, BN at identity statistics) leave several small
    nets' logits within 1e-5 of each other, so their probability maps are flat. This draws every conv and
    linear weight from N(0, 2 / fan_in) (He) and every bias from N(0, 0.1^2); BatchNorm running means from
    N(0, 0.1^2), running variances and every norm layer's scale from U(0.5, 1.5), its shift from
    N(0, 0.1^2). Other parameters (ConvNeXt's layer scale) are left alone. Then, unless ``input_size`` is
    None, the last conv or linear layer (in registration order: the classifier of every zoo model) is
    scaled so that the logits of random ``input_size`` x ``input_size`` images spread by ``spread``
    (standard deviation across classes, averaged over 4 images): residual nets would otherwise saturate
    the softmax, SqueezeNet would stay flat. Training flags are restored.
    """
    def normal(t: Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    def uniform(t: Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                normal(m.weight, math.sqrt(2.0 / m.weight[0].numel()))
                if m.bias is not None:
                    normal(m.bias, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                    normal(m.running_mean, 0.1)
                    uniform(m.running_var, 0.5, 1.5)
                if m.weight is not None:
                    uniform(m.weight, 0.5, 1.5)
                    normal(m.bias, 0.1)
        if input_size is not None:
            last = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
            flags = {m: m.training for m in model.modules()}
            model.eval()
            try:
                x = torch.randn(4, 3, input_size, input_size, generator=generator)
                logits = model(x.to(last.weight))
            finally:
                for m, flag in flags.items():
                    m.training = flag
            current = float(logits.float().std(dim=1).mean())
            if current > 0:
                last.weight.mul_(spread / current)
                if last.bias is not None:
                    last.bias.mul_(spread / current)
    return model


#: The small builders by family name; each takes ``num_classes`` and :data:`INPUT_SIZE` x ``INPUT_SIZE`` inputs.
FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "resnet": resnet,
    "resnet_bottleneck": resnet_bottleneck,
    "resnext": resnext,
    "resnet_gn": resnet_gn,
    "googlenet": googlenet,
    "inception_v3": inception_v3,
    "densenet": densenet,
    "squeezenet": squeezenet,
    "shufflenet_v2": shufflenet_v2,
    "regnet": regnet,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet": efficientnet,
    "convnext": convnext,
    "alexnet": alexnet,
    "vgg": vgg,
}


# -- traps for error tests ---------------------------------------------------------------------------------


class ReorderedChain(nn.Module):
    """Registers ``relu`` BEFORE ``pool`` but ``forward`` max-pools first, then rectifies. Takes 32x32 inputs.

    The output is the same either way (max-pooling and ReLU commute in the forward pass), but the
    deconvnet is not: the pool's switches differ wherever a window's maximum is negative, and with
    overlapping windows (3x3, stride 2) rectifying before or after unpooling differs too. A tool that
    trusts the registration order passes every output check and still projects wrongly.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(8 * 2 * 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)     # (B, 6, 32, 32)
        x = self.pool(x)      # (B, 6, 15, 15)
        x = self.relu(x)
        x = self.relu2(self.conv2(x))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class DataDependentBranch(nn.Module):
    """``forward`` branches on the data (``if x.sum() > 0:``): symbolic tracing must refuse it. 32x32 inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(6 * 16 * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv1(x))
        if x.sum() > 0:
            x = self.pool(x)
        else:
            x = self.avg(x)
        return self.fc(torch.flatten(x, 1))
