"""The paper's published numbers, in one place: Zeiler & Fergus (2014), Tables 1-7.

Every table zfnet writes beside the paper's reads its numbers from here, as published (arXiv 1311.2901
v3), so a number is typed once. Errors and accuracies are percentages; ``None`` where the paper gives
none.

=====================  ==========================================================================
:data:`PAPER_TABLE1`   correspondence Δ of occluded parts (§5, 5 dog images)
:data:`PAPER_TABLE2`   ImageNet 2012 errors of single nets and ensembles
:data:`PAPER_TABLE3`   ablations of Krizhevsky et al.'s net and of ZFNet
:data:`PAPER_TRANSFER` Caltech-101 and Caltech-256 with frozen layers 1-7 (Tables 4-5)
:data:`PAPER_VOC_MAP`  PASCAL VOC 2012 mean average precision (Table 6)
:data:`PAPER_PROBES`   a linear classifier on one layer's features (Table 7)
=====================  ==========================================================================

Example:
    >>> PAPER_TRANSFER["caltech101"]["pretrained"][30]
    (86.5, 0.5)
    >>> PAPER_PROBES["svm"][5]
    ((86.2, 0.8), (65.6, 0.3))
"""

from __future__ import annotations

__all__ = ["PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3", "PAPER_TRANSFER", "PAPER_VOC_MAP",
           "PAPER_VOC_PUBLISHED_BEST", "PAPER_PROBES"]

PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "right_eye": {"layer 5": (0.067, 0.007), "layer 7": (0.069, 0.015)},
    "left_eye": {"layer 5": (0.069, 0.007), "layer 7": (0.068, 0.013)},
    "nose": {"layer 5": (0.079, 0.017), "layer 7": (0.069, 0.011)},
    "random": {"layer 5": (0.107, 0.017), "layer 7": (0.073, 0.014)},
}
"""Table 1: Δ ± std at layers 5 and 7 (5 dog images; lower is more consistent), by occluded part
(``"random"``: random regions of the same size, :data:`zfnet.analysis.correspondence.RANDOM`)."""

PAPER_TABLE2: list[tuple[str, float, float, float | None]] = [
    ("Krizhevsky et al., 1 convnet", 40.7, 18.2, None),
    ("Krizhevsky et al., 5 convnets", 38.1, 16.4, 16.4),
    ("replication of Krizhevsky et al., 1 convnet", 40.5, 18.1, None),
    ("1 ZFNet (Fig. 3)", 38.4, 16.5, None),
    ("5 ZFNets (a)", 36.7, 15.3, 15.3),
    ("1 ZFNet with conv3,4,5 = 512,1024,512 maps (b)", 37.5, 16.0, 16.1),
    ("6 convnets, (a) & (b) combined", 36.0, 14.7, 14.8),
]
"""Table 2: ImageNet 2012 error % as (model, val top-1, val top-5, test top-5)."""

PAPER_TABLE3: dict[str, dict[str, tuple[float, float, float]]] = {
    "alexnet": {
        "base": (35.1, 40.5, 18.1),
        "no-conv3-4": (41.8, 45.4, 22.1),
        "no-fc7": (27.4, 40.0, 18.4),
        "no-fc6-7": (27.4, 44.8, 22.4),
        "no-conv3-4+no-fc6-7": (71.1, 71.3, 50.1),
        "fc-half": (40.3, 41.7, 18.8),
        "fc-double": (26.8, 40.0, 18.1),
    },
    "zfnet": {
        "base": (33.1, 38.4, 16.5),
        "fc-half": (38.2, 40.2, 17.6),
        "fc-double": (22.0, 38.8, 17.0),
        "conv-wide": (18.8, 37.5, 16.0),
        "fc-double+conv-wide": (10.0, 38.3, 16.9),
    },
}
"""Table 3: error % (train top-1, val top-1, val top-5) by the paper's network (``alexnet``: its
replication of Krizhevsky et al.) and variant (removals are on Krizhevsky's net, widths on both)."""

PAPER_TRANSFER: dict[str, dict[str, dict[int, tuple[float, float | None]]]] = {
    "caltech101": {
        "pretrained": {15: (83.8, 0.5), 30: (86.5, 0.5)},
        "scratch": {15: (22.8, 1.5), 30: (46.5, 1.7)},
        "Bo et al.": {30: (81.4, 0.33)},
    },
    "caltech256": {
        "pretrained": {15: (65.7, 0.2), 30: (70.6, 0.2), 45: (72.7, 0.4), 60: (74.2, 0.3)},
        "scratch": {15: (9.0, None), 30: (22.5, None), 45: (31.2, None), 60: (38.8, None)},
        "Bo et al.": {15: (40.5, None), 30: (48.0, None), 45: (51.9, None), 60: (55.2, None)},
    },
}
"""Tables 4-5: mean per-class accuracy % as (mean, std) by data set, model (ImageNet-pretrained with
layers 1-7 frozen and a new softmax; the same net trained from scratch; Bo et al.) and training images
per class."""

PAPER_VOC_MAP = 79.0
"""Table 6: mean average precision % on PASCAL VOC 2012 test, frozen layers 1-7 and a new softmax."""

PAPER_VOC_PUBLISHED_BEST = (74.3, 82.2)
"""Table 6: the mean average precision % of the two best methods published then."""

PAPER_PROBES: dict[str, dict[int, tuple[tuple[float, float], tuple[float, float]]]] = {
    "svm": {1: ((44.8, 0.7), (24.6, 0.4)), 2: ((66.2, 0.5), (39.6, 0.3)), 3: ((72.3, 0.4), (46.0, 0.3)),
            4: ((76.6, 0.4), (51.3, 0.1)), 5: ((86.2, 0.8), (65.6, 0.3)), 7: ((85.5, 0.4), (71.7, 0.2))},
    "softmax": {5: ((82.9, 0.4), (65.7, 0.5)), 7: ((85.4, 0.4), (72.6, 0.1))},
}
"""Table 7: classifier -> the paper's layer number -> ((mean, std) on Caltech-101 at 30 images per
class, (mean, std) on Caltech-256 at 60), accuracy %."""
