"""Visualisations of Zeiler & Fergus (2014): the deconvnet, receptive fields, top activations.

- :class:`Deconvnet`: project feature activations back to pixel space (§2.1).
- :func:`receptive_field`, :func:`receptive_fields`: which input pixels an activation sees.
- :func:`top_activations`, :func:`project_top_activations`: the strongest activations of every
  feature map over a data set, and their projections beside the image patches (Fig. 2).
"""

from .deconvnet import KEEP_MODES, SUPPORTED_MODULES, Deconvnet
from .receptive_field import ReceptiveField, receptive_field, receptive_fields
from .topk import TopK, TopKProjections, project_top_activations, top_activations

__all__ = [
    "Deconvnet", "KEEP_MODES", "SUPPORTED_MODULES",
    "ReceptiveField", "receptive_field", "receptive_fields",
    "TopK", "TopKProjections", "top_activations", "project_top_activations",
]
