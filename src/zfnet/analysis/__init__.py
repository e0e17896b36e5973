"""The paper's analyses of a trained network, as algorithms: tensors in, tensors (or dataclasses) out.

- ``occlusion``: occlusion sensitivity (§4.2, Fig. 7), exact and incremental;
- ``correspondence``: correspondence analysis of object parts (§5, Table 1);
- ``invariance``: feature invariance to translation, scale and rotation (§4.1, Fig. 5);
- ``features``: frozen features of a data set, cached; ``linear``: linear classifiers on them;
  ``probes``: a classifier per layer (Table 7);
- ``stats``: the permutation tests behind every verdict zfnet prints.

The experiments that load models, read data and write figures and tables on top of these live in
:mod:`zfnet.experiments`. Each module is imported on its own (``from zfnet.analysis.occlusion import
occlusion``), so using one analysis does not load the others.
"""
