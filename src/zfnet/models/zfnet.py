"""ZFNet, Zeiler & Fergus (ECCV 2014) Fig. 3, and its variants.

Fig. 3 fixes: a 224x224x3 crop; conv1 96 filters 7x7 stride 2 -> 110x110, ReLU, 3x3 stride-2
max-pool -> 55x55, contrast normalisation; conv2 256 filters 5x5 stride 2 -> 26x26, pool -> 13x13,
normalisation; conv3 384, conv4 384, conv5 256 filters 3x3 (13x13); pool -> 6x6x256 = 9216;
fc6 4096, fc7 4096 with dropout 0.5; fc8 C-way softmax: 62,357,608 parameters at C = 1000.
The paper gives no paddings: conv1 pad 1, conv2 pad 0, conv3-5 pad 1 and ceil-rounded pools
reproduce its sizes. ``zfnet-b`` is Table 2's (b): conv3, conv4, conv5 with 512, 1024, 512 maps.
"""

from __future__ import annotations

from ._registry import register
from .convnet import ConvNet, ConvNetConfig, scaled_variant

__all__ = ["ZFNET", "zfnet", "zfnet_b", "zfnet_cpu", "zfnet_tiny"]

ZFNET = ConvNetConfig()

# CPU-sized variants: the same structure with a smaller crop and narrower layers, for the demo,
# the tests and the miniature experiments. 112 px gives 54 -> 27 -> 12 -> 6 -> 3 maps;
# 64 px gives 30 -> 15 -> 6 -> 3 -> 1.
# Narrower layers have fewer inputs per unit, so N(0, 1e-2) would shrink the signal ~10x per layer
# and SGD would not leave the start; their weights are drawn with the per-layer standard deviation
# that gives each layer the same signal gain as in the full-size ZFNet (see matched_init_std).
ZFNET_CPU = ConvNetConfig(input_size=112, conv1=(32, 7, 2, 1), conv2=(64, 5, 2, 0),
                          conv345=(96, 96, 64), fc=(512, 512))
ZFNET_TINY = ConvNetConfig(input_size=64, conv1=(16, 7, 2, 1), conv2=(32, 5, 2, 0),
                           conv345=(48, 48, 32), fc=(128, 128))


def _zfnet(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return ZFNET.with_overrides(num_classes=num_classes, **overrides)


def _zfnet_b(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    overrides.setdefault("conv345", (512, 1024, 512))
    return ZFNET.with_overrides(num_classes=num_classes, **overrides)


def _zfnet_cpu(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return scaled_variant(ZFNET_CPU, ZFNET, num_classes=num_classes, **overrides)


def _zfnet_tiny(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return scaled_variant(ZFNET_TINY, ZFNET, num_classes=num_classes, **overrides)


@register("zfnet", input_size=224, description="ZFNet, the paper's Fig. 3 (62.4M parameters at 1000 classes)",
          config=_zfnet)
def zfnet(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_zfnet(num_classes=num_classes, **overrides), name="zfnet")


@register("zfnet-b", input_size=224, description="ZFNet with conv3-5 at 512/1024/512 maps (Table 2, b)",
          config=_zfnet_b)
def zfnet_b(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_zfnet_b(num_classes=num_classes, **overrides), name="zfnet-b")


@register("zfnet-cpu", input_size=112, description="ZFNet's structure at 112 px and 1/3 width, for CPUs",
          config=_zfnet_cpu)
def zfnet_cpu(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_zfnet_cpu(num_classes=num_classes, **overrides), name="zfnet-cpu")


@register("zfnet-tiny", input_size=64, description="ZFNet's structure at 64 px and 1/6 width, for tests",
          config=_zfnet_tiny)
def zfnet_tiny(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_zfnet_tiny(num_classes=num_classes, **overrides), name="zfnet-tiny")
