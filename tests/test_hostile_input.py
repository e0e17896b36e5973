"""Hostile input: every config field, CLI flag and stored metadata key fed wrong types, absurd sizes and
non-finite values, through the command line. Each must end in exactly one line on stderr, status 2, no
traceback, and nothing written, before any training, model or image work starts.

The cases are generated from the dataclasses' fields and the parser's flags, so a new field or flag is
covered (and must declare finite limits) without touching this file.
"""

from __future__ import annotations

import argparse
import json
import math
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.cli import one_line_error
from helpers.runs import CLASSES, weights, write_run

from zfnet._validate import field_limits
from zfnet.cli import build_parser, main
from zfnet.errors import ZFNetError
from zfnet.models import ConvNetConfig
from zfnet.train import TrainConfig
from zfnet.train.checkpoint import WeightsMetadata
from zfnet.train.scratch import ScratchRecipe

BIG = 10**30  # beyond every upper bound
NAN, INF = float("nan"), float("inf")


def _kinds(hint: Any) -> tuple[set, bool]:
    """The kinds a hint accepts (int, float, bool, str, list, dict) and whether null is one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds: set = set()
        for a in args:
            if a is not type(None):
                kinds |= _kinds(a)[0]
        return kinds, type(None) in args
    if origin is tuple:
        return {"list"}, False
    if origin is dict or hint is dict:
        return {"dict"}, False
    return {hint}, False


def hostile(hint: Any, limit: Any) -> list[Any]:
    """Values that a field of type ``hint`` must refuse: other types, absurd and non-finite numbers."""
    kinds, optional = _kinds(hint)
    values: list[Any] = []
    if not optional:
        values.append(None)
    if bool not in kinds:
        values.append(True)
    if str not in kinds:
        values.append("5")
    if "list" not in kinds:
        values.append([1])
    if "dict" not in kinds:
        values.append({"a": 1})
    if int in kinds and float not in kinds:
        values.append(2.5)
    if int in kinds or float in kinds:
        values += [BIG, -BIG]
    if float in kinds:
        values += [NAN, INF, -INF]
    if bool in kinds and int not in kinds:
        values.append(1)
    if "list" in kinds:
        tup = hint if typing.get_origin(hint) is tuple else next(
            a for a in typing.get_args(hint) if typing.get_origin(a) is tuple)
        args = typing.get_args(tup)
        n = 1 if Ellipsis in args else len(args)
        if args[0] in (int, float):
            values += [[BIG] * n, [NAN] * n, ["x"] * n]
        elif args[0] is str:
            values += [[5], [None]]
        if Ellipsis not in args:
            values.append([1] * (n + 1))  # the wrong length
    if str in kinds and limit is not None and limit.choices:
        values.append("no-such-choice")
    return values


def _cases(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, v) for f in fields(cls) if f.name not in skip for v in hostile(hints[f.name], field_limits(f))]


def _ids(cases):
    return [f"{name}={json.dumps(v)[:20]}" for name, v in cases]


CONFIGS = (TrainConfig, ConvNetConfig, WeightsMetadata, ScratchRecipe)


def test_every_numeric_field_has_finite_limits():
    for cls in CONFIGS:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kinds, _ = _kinds(hints[f.name])
            args = str(hints[f.name])
            if int in kinds or float in kinds or "int" in args or "float" in args:
                limit = field_limits(f)
                assert limit is not None, f"{cls.__name__}.{f.name} declares no limits"
                bounds = [(i.low, i.high) for i in limit.items] if limit.items else [(limit.low, limit.high)]
                assert all(lo is not None and hi is not None and math.isfinite(hi) for lo, hi in bounds), f.name


# ------------------------------------------------------------------------------------------- configs

LIBRARY_CASES = [(cls, name, v) for cls in CONFIGS for name, v in _cases(cls)]


@pytest.mark.parametrize("cls, field, value", LIBRARY_CASES,
                         ids=[f"{c.__name__}.{n}={json.dumps(v)[:20]}" for c, n, v in LIBRARY_CASES])
def test_every_config_refuses_in_the_library_too(cls, field, value):
    required = {"TrainConfig": {"data": "d", "out": "o"}, "WeightsMetadata": {"model": "zfnet", "num_classes": 3}}
    with pytest.raises(ZFNetError, match=field):
        cls(**{**required.get(cls.__name__, {}), field: value})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from helpers.trees import make_tree

    return make_tree(tmp_path_factory.mktemp("hostile") / "data", classes=3, per_class=1, val_per_class=1, size=16)


TRAIN_CASES = _cases(TrainConfig, skip=("out",))  # --out is a required flag: it always wins


@pytest.mark.parametrize("field, value", TRAIN_CASES, ids=_ids(TRAIN_CASES))
def test_train_config_file_values(field, value, data, tmp_path, capsys):
    config = {"data": str(data), "model": "zfnet-tiny", "epochs": 1, field: value}
    (tmp_path / "run.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    line = one_line_error(capsys, ["train", "--config", str(tmp_path / "run.json"), "--out", str(out), "--quiet"])
    assert field in line or field == "model", line
    assert not out.exists()


MODEL_CASES = _cases(ConvNetConfig, skip=("num_classes",)) + [("num_classes", 3), ("fc", [10**9, 10**9]),
                                                              ("input_size", 10**7), ("conv345", [-1, 8, 8])]


@pytest.mark.parametrize("field, value", MODEL_CASES, ids=_ids(MODEL_CASES))
def test_model_options_in_a_config_file(field, value, data, tmp_path, capsys):
    config = {"data": str(data), "model": "zfnet-tiny", "epochs": 1, "model_options": {field: value}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    line = one_line_error(capsys, ["train", "--config", str(tmp_path / "run.json"), "--out", str(out)])
    assert field in line, line
    assert not out.exists()


@pytest.mark.parametrize("text", ["[1, 2]", '"epochs"', "null", "{", '{"epochs": 1, "epochs": "x"}'])
def test_a_config_file_that_is_not_a_table(text, tmp_path, capsys):
    (tmp_path / "run.json").write_text(text)
    one_line_error(capsys, ["train", "--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_model_too_large_to_allocate_is_refused_before_it_is(data, tmp_path, capsys):
    # Each width is within its range; the parameter count is not (the model would need ~17 GiB).
    config = {"data": str(data), "model": "zfnet", "model_options": {"fc": [65536, 65536]}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    line = one_line_error(capsys, ["train", "--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "out")])
    assert "parameters" in line and "2,000,000,000" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- flags

def _flags() -> list[tuple[list[str], str, Any]]:
    """(sub-command path, flag, argparse type) of every flag that takes a value, in every command."""
    found = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.option_strings and action.nargs != 0 and action.type is not None:
                found.append((path, action.option_strings[-1], action.type))

    walk(build_parser(), [])
    return found


FLAGS = _flags()
NUMERIC = [(path, flag, t) for path, flag, t in FLAGS if getattr(t, "value_type", None) in (int, float)]


def test_every_numeric_flag_is_checked_with_finite_limits():
    plain = [f"{' '.join(path)} {flag}" for path, flag, t in FLAGS if t in (int, float)]
    assert not plain, f"flags read with a bare int/float, unchecked: {plain}"
    for path, flag, t in NUMERIC:
        limit = t.limits
        assert limit.high is not None and math.isfinite(limit.high), f"{' '.join(path)} {flag}"


@pytest.mark.parametrize("path, flag, kind", [(p, f, t) for p, f, t in NUMERIC],
                         ids=[f"{' '.join(p)} {f}" for p, f, _ in NUMERIC])
def test_numeric_flags_refuse_absurd_and_non_finite_values(path, flag, kind, capsys):
    for text in ("nan", "inf", "-inf", "1e30", "-1e30", "1" + "0" * 40, "-" + "1" * 40, "abc", ""):
        line = one_line_error(capsys, [*path, f"{flag}={text}"])
        assert flag in line, line


# ------------------------------------------------------------------------------------------- run folders

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    import numpy as np
    from helpers.trees import draw

    path = tmp_path_factory.mktemp("img") / "disc.png"
    draw("disc", np.random.default_rng(0), 48).save(path)
    return path


def _commands(run: Path, data: Path, image: Path, out: Path) -> dict[str, list[str]]:
    return {"evaluate": ["evaluate", str(run), "--data", str(data), "--json", str(out / "e.json"), "--workers", "0"],
            "occlusion": ["occlusion", str(run), "--image", str(image), "--out", str(out)],
            "visualize": ["visualize", str(run), "--data", str(data), "--out", str(out)]}


def _refused(capsys, run: Path, data: Path, image: Path, tmp_path: Path, commands=("evaluate",), *needles) -> None:
    for command in commands:
        out = tmp_path / f"out-{command}"
        line = one_line_error(capsys, _commands(run, data, image, out)[command])
        for needle in needles:
            assert needle in line, line
        assert not out.exists(), command


def test_a_sound_crafted_run_loads(data, image, tmp_path, capsys):
    # The baseline the crafted runs below differ from: it evaluates.
    run = write_run(tmp_path / "run", config={"data": str(data), "out": str(tmp_path / "run"), "model": "zfnet-tiny"})
    assert main(_commands(run, data, image, tmp_path / "out")["evaluate"]) == 0


META_CASES = _cases(WeightsMetadata) + [("num_classes", 10**11), ("model", "no-such-model")]


@pytest.mark.parametrize("key, value", META_CASES, ids=_ids(META_CASES))
def test_weights_metadata(key, value, data, image, tmp_path, capsys):
    meta = {"model": "zfnet-tiny", "num_classes": 3, "model_options": {}, "epoch": 1, key: value}
    # The tensors do not matter: the metadata is refused first.
    run = write_run(tmp_path / "run", metadata=meta, tensors={"x": torch.zeros(1)})
    commands = ("evaluate", "occlusion", "visualize") if key == "num_classes" else ("evaluate",)
    _refused(capsys, run, data, image, tmp_path, commands, key)


META_OPTION_CASES = MODEL_CASES


@pytest.mark.parametrize("field, value", META_OPTION_CASES, ids=_ids(META_OPTION_CASES))
def test_model_options_in_weights_metadata(field, value, data, image, tmp_path, capsys):
    meta = {"model": "zfnet-tiny", "num_classes": 3, "model_options": {field: value}}
    run = write_run(tmp_path / "run", metadata=meta, tensors={"x": torch.zeros(1)})
    _refused(capsys, run, data, image, tmp_path, ("evaluate",), field)


def test_metadata_that_is_not_json_or_missing(data, image, tmp_path, capsys):
    run = write_run(tmp_path / "a", metadata={"model": "zfnet-tiny"}, raw_metadata={"num_classes": "three"})
    _refused(capsys, run, data, image, tmp_path, ("evaluate",), "num_classes")
    run = write_run(tmp_path / "b", metadata={"model": "zfnet-tiny"})
    _refused(capsys, run, data, image, tmp_path, ("evaluate",), "num_classes", "not a zfnet weights file")


CLASSES_FILES = [
    ["bar", "cross", "disc"], "classes", None, {}, {"classes": "bar,cross,disc"}, {"classes": [1, 2, 3]},
    {"classes": []}, {"classes": ["bar", "bar", "disc"]}, {"classes": ["bar", "cross", "disc"], "names": ["a"]},
    {"classes": ["bar", "cross", "disc"], "names": [1, 2, 3]}, {"classes": ["bar", "cross", ""]},
    {"classes": ["bar", "cross"]},  # shorter than the weights' outputs: an IndexError once
    {"classes": ["bar", "cross", "disc", "ring"]},
]


@pytest.mark.parametrize("content", CLASSES_FILES, ids=[json.dumps(c)[:30] for c in CLASSES_FILES])
def test_classes_json(content, data, image, tmp_path, capsys):
    run = write_run(tmp_path / "run")
    (run / "classes.json").write_text(json.dumps(content))
    _refused(capsys, run, data, image, tmp_path, ("evaluate", "occlusion", "visualize"), "classes.json")


def test_weights_of_another_class_count_than_the_run(data, image, tmp_path, capsys):
    # Weights and metadata of 4 classes in a run of 3: refused, naming both counts (once evaluated silently).
    run = write_run(tmp_path / "a", metadata={"model": "zfnet-tiny", "num_classes": 4}, tensors=weights(num_classes=4))
    _refused(capsys, run, data, image, tmp_path, ("evaluate", "occlusion", "visualize"), "4 outputs", "3 classes")
    # Metadata saying 3 over weights of 4: the shapes do not fit the model the metadata describes.
    run = write_run(tmp_path / "b", tensors=weights(num_classes=4))
    _refused(capsys, run, data, image, tmp_path, ("evaluate",), "do not fit", "fc8.weight")


@pytest.mark.parametrize("config, needle", [
    (["not", "an", "object"], "must be an object"), ({"data": 5, "out": "o"}, "data"),
    ({"data": "d", "out": "o", "model": "alexnet-tiny"}, "not this run's"),
    ({"data": "d", "out": "o", "model": "zfnet-tiny", "model_options": {"fc": [64, 64]}}, "not this run's"),
    ({"data": "d", "out": "o", "model": "zfnet-tiny", "epochs": "5"}, "epochs"),
    ({"data": "d", "out": "o", "model": "zfnet-tiny", "lr": NAN}, "lr"),
    ({"data": "d", "out": "o", "model": "zfnet-tiny", "surprise": 1}, "surprise"),
])
def test_run_config_json(config, needle, data, image, tmp_path, capsys):
    run = write_run(tmp_path / "run", config=config)
    _refused(capsys, run, data, image, tmp_path, ("evaluate", "occlusion"), needle)


@pytest.mark.parametrize("mean, needle", [
    ({"mean": torch.full((3, 10, 10), 100.0)}, "10x10"), ({"mean": torch.full((1, 73, 73), 100.0)}, "(3, S, S)"),
    ({"other": torch.full((3, 73, 73), 100.0)}, "(3, S, S)"), ({"mean": torch.full((3, 73, 73), NAN)}, "finite"),
    ({"mean": torch.full((3, 73, 73), 1e6)}, "0-255"), ({"mean": torch.zeros(3, 73, 73, dtype=torch.int64)}, "floats"),
])
def test_mean_file(mean, needle, data, image, tmp_path, capsys):
    run = write_run(tmp_path / "run", mean=mean)
    _refused(capsys, run, data, image, tmp_path, ("evaluate", "occlusion"), "mean", needle)


def test_resume_with_a_crafted_saved_config(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "zfnet-run.json").write_text(json.dumps({"format": "zfnet-run", "version": 1}))
    for config in ([1, 2], {"data": str(data), "out": str(run), "epochs": 1e300}):
        (run / "config.json").write_text(json.dumps(config))
        before = sorted(p.name for p in run.iterdir())
        one_line_error(capsys, ["train", "--out", str(run), "--resume"])
        assert sorted(p.name for p in run.iterdir()) == before


def test_classes_of_the_crafted_runs_are_the_datas():
    assert list(CLASSES) == ["bar", "cross", "disc"]
