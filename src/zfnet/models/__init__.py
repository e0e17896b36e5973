"""Model zoo: ZFNet, AlexNet, their variants; ``build(name)`` and ``list_models()``."""

from . import alexnet as _alexnet  # noqa: F401  (registers the builders)
from . import zfnet as _zfnet  # noqa: F401
from ._registry import ModelInfo, build, list_models, model_config, model_info, parameter_count, register
from .convnet import LAYER_NAMES, REMOVABLE_LAYERS, ConvNet, ConvNetConfig
from .layers import ContrastNorm, filter_rms, init_paper_, renormalize_filters_

__all__ = [
    "build", "list_models", "model_info", "model_config", "parameter_count", "register", "ModelInfo",
    "ConvNet", "ConvNetConfig", "LAYER_NAMES", "REMOVABLE_LAYERS",
    "ContrastNorm", "init_paper_", "renormalize_filters_", "filter_rms",
]
