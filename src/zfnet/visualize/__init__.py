"""Visualisations of Zeiler & Fergus (2014), as algorithms: the deconvnet, receptive fields, top activations.

- :mod:`~zfnet.visualize.deconvnet`: :class:`Deconvnet` projects feature activations back to pixel space (§2.1);
- :mod:`~zfnet.visualize.receptive_field`: which input pixels an activation sees;
- :mod:`~zfnet.visualize.topk`: the strongest activations of every feature map over a data set, and their
  projections beside the image patches (Fig. 2);
- :mod:`~zfnet.visualize.figures`, :mod:`~zfnet.visualize.occlusion_figure`,
  :mod:`~zfnet.visualize.analysis_figures`: tensors to the paper's pictures.

The public names are imported from ``zfnet`` itself (``from zfnet import Deconvnet, top_activations,
receptive_field``); the others from their module (``from zfnet.visualize.topk import TopK``).
"""
