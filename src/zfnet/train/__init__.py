"""The paper's training recipe: configuration, loop, checkpoints, evaluation, DDP."""

from .checkpoint import LoadedRun, RunFiles, load_model, load_run, load_state, save_weights
from .config import PAPER_SNAPSHOTS, TrainConfig, load_config_file
from .evaluate import EvalReport, EvalResult, evaluate_runs, predict, topk_errors
from .loop import TrainResult, train

__all__ = [
    "TrainConfig", "load_config_file", "PAPER_SNAPSHOTS", "train", "TrainResult",
    "evaluate_runs", "EvalReport", "EvalResult", "predict", "topk_errors",
    "RunFiles", "LoadedRun", "load_run", "load_model", "load_state", "save_weights",
]
