"""The training configuration: the crops option, its round trip and configs saved before it existed."""

from __future__ import annotations

import json

import pytest

from zfnet.errors import ZFNetError
from zfnet.train import TrainConfig


@pytest.mark.parametrize("crops", ["ten", "random", None])
def test_train_crops_round_trips_through_json(crops):
    config = TrainConfig(data="d", out="o", train_crops=crops)
    again = TrainConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config and again.train_crops == crops


def test_a_config_saved_without_train_crops_loads_with_it_unset():
    saved = TrainConfig(data="d", out="o").to_json()
    del saved["train_crops"]
    assert TrainConfig.from_json(saved).train_crops is None  # resolved to "random" when the run resumes


def test_train_crops_refuses_other_values():
    with pytest.raises(ZFNetError, match="train_crops must be one of ten, random, or null, got 'five'"):
        TrainConfig(data="d", out="o", train_crops="five")


def test_train_crops_flag_sets_the_option(tmp_path):
    from zfnet.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                      "--train-crops", "random"])
    assert _train_config(args).train_crops == "random"
