"""Experiments: each one loads what it needs, runs the algorithms and writes figures, tables and JSON.

Every experiment module has the same shape (see :mod:`zfnet.experiments.base`): a frozen ``Config``
whose fields carry their defaults, help texts and limits, ``run(config, out) -> Result``, and the
resolved config written beside its outputs. The command line generates its flags from the configs.

=================  ==============================================================================
``visualize``      the deconvnet's top-k projections, filters, feature evolution (Figs. 2, 4, 6)
``occlusion``      occlusion sensitivity and the pointing game (Fig. 7)
``correspondence`` correspondence of object parts (Table 1)
``invariance``     invariance to translation, scale and rotation (Fig. 5)
``ablation``       layer and width variants (Table 3)
``ensemble``       runs and their averaged softmax (Table 2)
``transfer``       frozen features on another data set (Tables 4-6)
``probes``         a linear classifier per layer (Table 7)
``miniature``      the paper's findings in miniature on the synthetic data
``demo``           everything, from nothing, with an HTML report
=================  ==============================================================================

Example:
    >>> from zfnet.experiments import occlusion
    >>> config = occlusion.Config(run="runs/zfnet", data="data/synth", window=16)  # doctest: +SKIP
    >>> print(occlusion.run(config, "out/occlusion").summary())  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["COMMANDS", "STUDIES", "experiment"]

COMMANDS = ("visualize", "occlusion", "correspondence", "invariance")
"""Experiments that are top-level commands: ``zfnet occlusion ...``."""
STUDIES = ("ablation", "ensemble", "transfer", "probes", "miniature")
"""Experiments under ``zfnet experiment ...``: the paper's tables."""


def experiment(name: str) -> ModuleType:
    """The experiment module ``name`` (imported on first use, so ``import zfnet`` stays light)."""
    if name not in COMMANDS + STUDIES + ("demo",):
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(COMMANDS + STUDIES + ('demo',))}")
    return importlib.import_module(f"{__name__}.{name}")
