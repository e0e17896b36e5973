"""The paper's training recipe: configuration, loop, checkpoints, evaluation, DDP.

``zfnet.train`` is both this package and the function :func:`zfnet.train.loop.train`: calling the
package (``from zfnet import train; train(config)``) runs the training loop, since Python binds the name
``zfnet.train`` to the package as soon as any of its modules is imported.
"""

import sys
import types

from .checkpoint import RunFiles, load_model, load_state, save_weights
from .config import PAPER_SNAPSHOTS, TrainConfig, load_config_file
from .evaluate import EvalReport, EvalResult, evaluate_runs, predict, topk_errors
from .loop import TrainResult, train
from .run import LoadedRun, Run, load_run

__all__ = [
    "TrainConfig", "load_config_file", "PAPER_SNAPSHOTS", "train", "TrainResult",
    "evaluate_runs", "EvalReport", "EvalResult", "predict", "topk_errors",
    "RunFiles", "Run", "LoadedRun", "load_run", "load_model", "load_state", "save_weights",
]


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`zfnet.train.loop.train`."""

    def __call__(self, config: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
        return train(config, resume=resume, show_progress=show_progress)


sys.modules[__name__].__class__ = _CallablePackage
