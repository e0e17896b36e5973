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


def test_train_crops_flag_sets_the_option(tmp_path, monkeypatch):
    from zfnet import cli

    class Stop(Exception):
        """Raised in place of training: the test needs only the config the command built."""

    seen = []

    def record(config, **kw):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(cli, "train", record)
    with pytest.raises(Stop):
        cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--train-crops", "random"])
    assert seen[0].train_crops == "random"
