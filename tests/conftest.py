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

from helpers.shapes import PRETRAIN_SHAPES, TRANSFER_SHAPES, write_shapes  # noqa: E402

from zfnet.train import TrainConfig, train  # noqa: E402


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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tests on tiny tensors: faster than several, much faster on a
    busy machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory) -> Path:
    """zfnet-tiny trained with the paper's recipe on the 6 pretraining shapes: 450 SGD steps, val error 25%."""
    root = tmp_path_factory.mktemp("pretrain")
    data = write_shapes(root / "shapes", PRETRAIN_SHAPES, per_class=200, val_per_class=20, seed=1)
    config = TrainConfig(data=str(data), out=str(root / "run"), model="zfnet-tiny", epochs=12, batch_size=32,
                         lr=1e-2, lr_patience=3, snapshots=(), workers=0, seed=0)
    train(config, show_progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """zfnet-tiny after one short epoch on 3 shapes: a valid run for tests of plumbing, not of findings."""
    root = tmp_path_factory.mktemp("quick")
    data = write_shapes(root / "shapes", PRETRAIN_SHAPES[:3], per_class=8, val_per_class=4, seed=3)
    config = TrainConfig(data=str(data), out=str(root / "run"), model="zfnet-tiny", epochs=1, batch_size=8,
                         snapshots=(), workers=0, seed=0)
    train(config, show_progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def secondary_data(tmp_path_factory) -> Path:
    """The 6 transfer shapes, 50 images each (40 in train/, 10 in val/)."""
    return write_shapes(tmp_path_factory.mktemp("transfer") / "shapes", TRANSFER_SHAPES, per_class=40,
                        val_per_class=10, seed=2)
