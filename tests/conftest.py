"""Shared fixtures: every test starts from seeded generators and never touches the network."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _zfnet_logger_propagates():
    # The CLI installs its own handler; let caplog see records in every test.
    logger = logging.getLogger("zfnet")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(logging.INFO)
    yield
    logger.handlers[:], logger.propagate, _ = saved
    logger.setLevel(saved[2])


@pytest.fixture
def tiny_tree(tmp_path):
    """A 3-class image-folder data set of small images (train 8 / val 4 per class)."""
    from helpers.trees import make_tree

    return make_tree(tmp_path / "data", classes=3, per_class=8, val_per_class=4)
