"""AlexNet (Krizhevsky et al. 2012) as one dense tower: the paper's "replication" baseline.

conv1 96 filters 11x11 stride 4 (pad 2) -> 55x55, normalisation, pool -> 27x27; conv2 256 filters
5x5 stride 1 pad 2 -> 27x27, normalisation, pool -> 13x13; conv3-5 384/384/256 at 13x13; pool ->
6x6x256; fc6, fc7 4096; fc8. As in Krizhevsky et al. (§3.3, §3.4, §5): the response normalisation
comes after the ReLUs of conv1 and conv2 and before their max-pools, and the biases of conv2, conv4,
conv5 and the fully connected hidden layers (fc6, fc7) start at 1, the others at 0; weights N(0, 1e-2).
Zeiler & Fergus's visualisations of its layer 1 show aliasing and dead filters, which ZFNet's 7x7
stride-2 conv1 removes (their §4.1, Fig. 6).

``alexnet-zf`` is AlexNet's conv1 and conv2 in ZFNet's layout and initialisation (pool, then
normalise; every bias 0): what this package called ``alexnet`` before it followed Krizhevsky's order
(the later CaffeNet reference model pools first too). It differs from ``zfnet`` in conv1 and conv2
alone, the two layers §4.1 changes.
"""

from __future__ import annotations

from ._registry import register
from .convnet import ConvNet, ConvNetConfig, scaled_variant

__all__ = ["ALEXNET", "ALEXNET_ZF", "KRIZHEVSKY_BIAS_ONE", "alexnet", "alexnet_zf", "alexnet_cpu", "alexnet_tiny"]

# Krizhevsky et al. §5: "We initialized the neuron biases in the second, fourth, and fifth convolutional
# layers, as well as in the fully-connected hidden layers, with the constant 1."
KRIZHEVSKY_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")

ALEXNET = ConvNetConfig(conv1=(96, 11, 4, 2), conv2=(256, 5, 1, 2), norm_before_pool=True,
                        init_bias_one=KRIZHEVSKY_BIAS_ONE)
ALEXNET_ZF = ConvNetConfig(conv1=(96, 11, 4, 2), conv2=(256, 5, 1, 2))
# The CPU variants match zfnet-cpu / zfnet-tiny in width (and their initialisation rule), with
# AlexNet's conv1 and conv2 and its stage order (normalise, then pool). alexnet-tiny keeps Krizhevsky's
# biases of 1 (it learns the tests' shapes faster with them); alexnet-cpu starts every bias at 0: with
# biases of 1 it stayed at chance for all 30 epochs of the demo's training (and for 12 epochs with the
# biases of 1 on conv2, 4, 5 alone), where with zero biases it left chance at epoch 9 (docs/model.md).
# 112 px gives 27 -> 13 -> 13 -> 6 -> 3 maps; 64 px gives 15 -> 7 -> 7 -> 3 -> 1.
ALEXNET_CPU = ConvNetConfig(input_size=112, conv1=(32, 11, 4, 2), conv2=(64, 5, 1, 2),
                            conv345=(96, 96, 64), fc=(512, 512), norm_before_pool=True)
ALEXNET_TINY = ConvNetConfig(input_size=64, conv1=(16, 11, 4, 2), conv2=(32, 5, 1, 2),
                             conv345=(48, 48, 32), fc=(128, 128), norm_before_pool=True,
                             init_bias_one=KRIZHEVSKY_BIAS_ONE)


def _alexnet(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return ALEXNET.with_overrides(num_classes=num_classes, **overrides)


def _alexnet_zf(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return ALEXNET_ZF.with_overrides(num_classes=num_classes, **overrides)


def _alexnet_cpu(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return scaled_variant(ALEXNET_CPU, ALEXNET, num_classes=num_classes, **overrides)


def _alexnet_tiny(*, num_classes: int = 1000, **overrides) -> ConvNetConfig:
    return scaled_variant(ALEXNET_TINY, ALEXNET, num_classes=num_classes, **overrides)


@register("alexnet", input_size=224, description="AlexNet, one tower: conv1 11x11 stride 4, norm before pool, "
          "Krizhevsky's biases (62.4M parameters)", config=_alexnet)
def alexnet(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_alexnet(num_classes=num_classes, **overrides), name="alexnet")


@register("alexnet-zf", input_size=224, description="AlexNet's conv1-2 in ZFNet's layout: pool before norm, "
          "zero biases", config=_alexnet_zf)
def alexnet_zf(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_alexnet_zf(num_classes=num_classes, **overrides), name="alexnet-zf")


@register("alexnet-cpu", input_size=112, description="AlexNet's structure at 112 px and 1/3 width, for CPUs",
          config=_alexnet_cpu)
def alexnet_cpu(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_alexnet_cpu(num_classes=num_classes, **overrides), name="alexnet-cpu")


@register("alexnet-tiny", input_size=64, description="AlexNet's structure at 64 px and 1/6 width, for tests",
          config=_alexnet_tiny)
def alexnet_tiny(*, num_classes: int = 1000, **overrides) -> ConvNet:
    return ConvNet(_alexnet_tiny(num_classes=num_classes, **overrides), name="alexnet-tiny")
