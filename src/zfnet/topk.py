"""``zfnet.topk.top_activations``: the top-k activations of every feature map over a data set."""

from .visualize.topk import TopK, TopKProjections, project_top_activations, top_activations

__all__ = ["top_activations", "project_top_activations", "TopK", "TopKProjections"]
