"""zfnet: Zeiler & Fergus (2014), Visualizing and Understanding Convolutional Networks, reproduced.

The model zoo (``zfnet.models``), the data pipeline (``zfnet.data``), the paper's training
recipe (``zfnet.train``), and the visualisations and analyses built on them.
"""

from .models import build, list_models, model_info, renormalize_filters_

__version__ = "0.1.0"

__all__ = ["build", "list_models", "model_info", "renormalize_filters_", "__version__"]
