"""The paper's analyses of a trained network, one module per analysis.

- ``occlusion``: occlusion sensitivity (§4.2, Fig. 7), exact and incremental;
- ``correspondence``: correspondence analysis of object parts (§5, Table 1);
- ``invariance``: feature invariance to translation, scale and rotation (§4.1, Fig. 5);
- ``ablation``, ``transfer``, ``probes``: the experiments of Tables 2-7.

Each module is imported on its own (``from zfnet.analysis.occlusion import occlusion``), so using one
analysis does not load the others.
"""
