"""zfnet: Zeiler & Fergus (2014), Visualizing and Understanding Convolutional Networks, reproduced.

The public API, one import path per name (imported on first use, so ``import zfnet`` stays light)::

    from zfnet import build, Deconvnet, top_activations, receptive_field, occlusion, correspondence, \\
        invariance, load_run, train, build_report

=========================  =======================================================================
``build``, ``list_models``  the model zoo: ZFNet, AlexNet, their variants; ``parameter_count`` (``zfnet.models``)
``load_run``                a trained run's model with its preprocessing (``zfnet.train.run``)
``load_model``              any model for the analyses: a run, or ``FILE.py:FACTORY`` (``zfnet.train.external``)
``train``, ``TrainConfig``  the paper's training recipe (``zfnet.train``)
``evaluate_runs``           top-1/top-5 error, 10 crops, ensembles (``zfnet.train.evaluate``)
``trace``                   the traced graph every algorithm runs on (``zfnet.graph``)
``Deconvnet``               projections of activations to pixel space (``zfnet.visualize.deconvnet``)
``top_activations``         the strongest activations of every feature map over a data set
``project_top_activations`` their projections beside the image patches (Fig. 2)
``receptive_field(s)``      which input pixels an activation sees
``occlusion``               occlusion sensitivity, exact and incremental (``zfnet.analysis.occlusion``)
``correspondence``          correspondence of object parts (``zfnet.analysis.correspondence``)
``invariance``              invariance to translation, scale and rotation (``zfnet.analysis.invariance``)
``experiments``             every experiment: ``Config``, ``run(config, out)`` (``zfnet.experiments``)
``build_report``            the offline HTML report of saved results (``zfnet.report``)
=========================  =======================================================================

Everything else lives in its module (``zfnet.visualize.topk.TopK``, ``zfnet.data.folders.open_dataset``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, str]] = {
    "build": ("zfnet.models", "build"),
    "list_models": ("zfnet.models", "list_models"),
    "model_info": ("zfnet.models", "model_info"),
    "renormalize_filters_": ("zfnet.models", "renormalize_filters_"),
    "parameter_count": ("zfnet.models", "parameter_count"),
    "load_run": ("zfnet.train.run", "load_run"),
    "load_model": ("zfnet.train.external", "load_run_or_model"),
    "train": ("zfnet", "train"),  # the package zfnet.train, callable as the training loop
    "TrainConfig": ("zfnet.train.config", "TrainConfig"),
    "evaluate_runs": ("zfnet.train.evaluate", "evaluate_runs"),
    "trace": ("zfnet.graph.traced", "trace"),
    "Deconvnet": ("zfnet.visualize.deconvnet", "Deconvnet"),
    "top_activations": ("zfnet.visualize.topk", "top_activations"),
    "project_top_activations": ("zfnet.visualize.topk", "project_top_activations"),
    "receptive_field": ("zfnet.visualize.receptive_field", "receptive_field"),
    "receptive_fields": ("zfnet.visualize.receptive_field", "receptive_fields"),
    "occlusion": ("zfnet.analysis.occlusion", "occlusion"),
    "correspondence": ("zfnet.analysis.correspondence", "correspondence"),
    "invariance": ("zfnet.analysis.invariance", "invariance"),
    "build_report": ("zfnet.report", "build_report"),
}

__all__ = [*_EXPORTS, "experiments", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "train":  # the subpackage, which calls zfnet.train.loop.train
        return importlib.import_module("zfnet.train")
    if name == "experiments":
        return importlib.import_module("zfnet.experiments")
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'zfnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
