"""The traced graph every zfnet algorithm runs on (see ``docs/deconvnet.md`` for the rules).

:func:`trace` turns an ``nn.Module`` into a :class:`Graph` of ops with ``torch.fx``; each op
(:mod:`zfnet.graph.ops`) carries its forward, deconvnet rule, receptive-field geometry and windowed
form; :mod:`zfnet.graph.windows` cuts rectangles of feature maps per item. The deconvnet, receptive
fields, top-k, the occlusion engine, correspondence and invariance use only this interface.
"""

from .ops import POINTWISE, Geometry, Op
from .traced import Graph, Layout, Node, TraceError, eval_mode, model_like, trace
from .windows import Window, crop, native_window, spans, uncrop, window_slice

__all__ = [
    "Graph", "Layout", "Node", "TraceError", "trace", "eval_mode", "model_like",
    "Op", "Geometry", "POINTWISE",
    "Window", "native_window", "crop", "uncrop", "spans", "window_slice",
]
