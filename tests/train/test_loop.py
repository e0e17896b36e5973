"""The training loop: the run directory, exact resumption, refusals, divergence, the lr schedule, the crops."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers.runs import forget_option

from zfnet.errors import TrainingDiverged, ZFNetError
from zfnet.train import TrainConfig, load_run, train
from zfnet.train.checkpoint import load_weights


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model="zfnet-tiny", epochs=2, batch_size=8, workers=0,
                snapshots=(1,), lr_patience=5)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return load_weights(path)[0]


def test_run_directory_contents(tiny_tree, tmp_path):
    result = train(_config(tiny_tree, tmp_path / "run"), show_progress=False)
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "classes.json", "mean.safetensors", "metrics.jsonl", "last.pt",
            "last.safetensors", "best.safetensors", "snapshots"} <= names
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["epoch-001.safetensors", "epoch-002.safetensors"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"epoch", "train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr",
                "seconds"} <= set(r)
        assert 0 <= r["val_top1_error"] <= 1 and r["val_top5_error"] == 0.0  # 3 classes: top-5 always hits
    assert json.loads((run / "config.json").read_text())["batch_size"] == 8
    assert result.epochs == 2
    loaded = load_run(run)
    assert loaded.classes == ["bar", "cross", "disc"] and loaded.mean.shape == (3, 73, 73)


def test_resume_is_exact(tiny_tree, tmp_path):
    straight = tmp_path / "straight"
    train(_config(tiny_tree, straight, epochs=3), show_progress=False)
    split = tmp_path / "split"
    train(_config(tiny_tree, split, epochs=1), show_progress=False)
    train(_config(tiny_tree, split, epochs=3), resume=True, show_progress=False)
    a, b = _weights(straight / "last.safetensors"), _weights(split / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    ref = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref]


def test_refuses_to_overwrite_a_run(tiny_tree, tmp_path):
    train(_config(tiny_tree, tmp_path / "run", epochs=1), show_progress=False)
    with pytest.raises(ZFNetError, match="already holds a training run.*--resume"):
        train(_config(tiny_tree, tmp_path / "run", epochs=1), show_progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(ZFNetError, match="not empty"):
        train(_config(tiny_tree, tmp_path / "other"), show_progress=False)
    assert (tmp_path / "other" / "precious.txt").read_text() == "keep me"
    with pytest.raises(ZFNetError, match="nothing to resume"):
        train(_config(tiny_tree, tmp_path / "absent"), resume=True, show_progress=False)


def _every_checkpoint_is_finite(run):
    """Every weights file and training state on disk, read back: all finite."""
    from zfnet.train.checkpoint import first_nonfinite, load_state

    found = sorted(run.rglob("*.safetensors")) + sorted(run.rglob("*.pt"))
    for path in found:
        if path.suffix == ".pt":
            state = load_state(path)
            tensors = {"model": state["model"], "optimizer": state["optimizer"]}  # the scheduler's inf is its own
        else:
            tensors = _weights(path)
        assert first_nonfinite(tensors) is None, path
    return [p.relative_to(run).as_posix() for p in found]


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tiny_tree, tmp_path, monkeypatch):
    from zfnet.train import loop

    run = tmp_path / "run"
    train(_config(tiny_tree, run, epochs=1), show_progress=False)
    before = _weights(run / "last.safetensors")
    state_before = (run / "last.pt").read_bytes()
    # Epoch 2's second batch holds absurd values: its loss is not finite.
    real_crops, calls = loop.training_crops, []

    def huge_second_batch(*args, **kw):
        calls.append(1)
        x = real_crops(*args, **kw)
        return x * 1e38 * 1e38 if len(calls) == 2 else x

    monkeypatch.setattr(loop, "training_crops", huge_second_batch)
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf).*batch 2.*epoch 2.*last good checkpoint.*epoch 1"):
        train(_config(tiny_tree, run, epochs=3), resume=True, show_progress=False)
    after = _weights(run / "last.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (run / "last.pt").read_bytes() == state_before
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_blow_up_on_an_epochs_last_step_reaches_no_file(tiny_tree, tmp_path, monkeypatch, capsys):
    # 24 training images in batches of 8: 3 steps an epoch. The update of epoch 2's last step (the
    # 6th) makes a weight infinite; no later loss shows it, so only a check of the weights can.
    from zfnet.cli import main
    from zfnet.train import step

    real_renorm, steps = step.renormalize_filters_, []

    def blow_up_on_step_6(model, *args, **kw):
        steps.append(1)
        real_renorm(model, *args, **kw)
        if len(steps) == 6:
            with torch.no_grad():
                model.fc8.weight[0, 0] = float("inf")

    monkeypatch.setattr(step, "renormalize_filters_", blow_up_on_step_6)  # the one training step's
    run = tmp_path / "run"
    code = main(["train", "--data", str(tiny_tree), "--model", "zfnet-tiny", "--epochs", "3", "--batch-size", "8",
                 "--workers", "0", "--snapshots", "1,2,3", "--lr-patience", "5", "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    # One error line, after the warning that tiny_tree's 48-px images are upsampled for zfnet-tiny.
    errors = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 1 and len(errors) == 1 and errors[0].startswith("zfnet train: error"), err
    assert "epoch 2" in err and "NaN or infinite" in err and f"last good checkpoint ({run / 'last.pt'}, epoch 1)" in err
    # Nothing of epoch 2 was saved or judged: every file on disk is epoch 1's, and finite.
    assert _every_checkpoint_is_finite(run) == ["best.safetensors", "last.safetensors", "mean.safetensors",
                                                 "snapshots/epoch-001.safetensors", "last.pt"]
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert load_weights(run / "last.safetensors")[1]["epoch"] == 1
    # The run resumes from that checkpoint.
    monkeypatch.setattr(step, "renormalize_filters_", real_renorm)
    result = train(_config(tiny_tree, run, epochs=2, snapshots=(1, 2, 3)), resume=True, show_progress=False)
    assert [r["epoch"] for r in result.metrics] == [1, 2]


def test_non_finite_weights_and_optimiser_state_are_never_written(tmp_path):
    from zfnet.models import build
    from zfnet.train.checkpoint import save_state, save_weights

    model = build("zfnet-tiny", num_classes=3)
    with torch.no_grad():
        model.conv1.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="conv1.conv.weight"):
        save_weights(tmp_path / "w.safetensors", model, {"model": "zfnet-tiny", "num_classes": 3})
    good = build("zfnet-tiny", num_classes=3)
    optimiser = {"state": {0: {"momentum_buffer": torch.tensor([1.0, float("inf")])}}, "param_groups": []}
    with pytest.raises(TrainingDiverged, match="optimiser state"):
        save_state(tmp_path / "s.pt", {"epoch": 1, "model": good.state_dict(), "optimizer": optimiser})
    assert list(tmp_path.iterdir()) == []  # not even a temporary file


@pytest.mark.parametrize("lr", ["inf", "nan", "-1", "1e12"])
def test_an_absurd_learning_rate_is_refused_before_anything_is_written(tiny_tree, tmp_path, capsys, lr):
    from zfnet.cli import main

    run = tmp_path / "run"
    try:
        code = main(["train", "--data", str(tiny_tree), "--model", "zfnet-tiny", "--lr", lr, "--out", str(run)])
    except SystemExit as exc:  # refused by the flag's own check
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lr" in err, err
    assert not run.exists()
    with pytest.raises(ZFNetError):
        _config(tiny_tree, run, lr=float(lr))


def test_lr_drops_on_plateau_and_is_logged(tiny_tree, tmp_path, caplog, monkeypatch):
    # lr so small that nothing changes: epoch 1 improves on "no result yet"; with patience 0 every
    # later epoch without improvement divides the lr by 10 for the next one. The schedule normally
    # waits for the error to leave chance level; here it is switched on from the start.
    from zfnet.train import loop

    monkeypatch.setattr(loop, "left_chance", lambda *args: True)
    cfg = _config(tiny_tree, tmp_path / "run", epochs=4, lr=1e-5, lr_patience=0, min_lr=1e-12)
    with caplog.at_level(logging.INFO, logger="zfnet"):
        result = train(cfg, show_progress=False)
    lrs = [r["lr"] for r in result.metrics]
    assert lrs == pytest.approx([1e-5, 1e-5, 1e-6, 1e-7], rel=1e-6)
    assert "lr 1e-05 -> 1e-06" in caplog.text


def test_lr_is_not_annealed_while_at_chance(tiny_tree, tmp_path):
    # Nothing is learnt at this lr, so the error stays at chance and the lr must stay where it is.
    cfg = _config(tiny_tree, tmp_path / "run", epochs=3, lr=1e-5, lr_patience=0, min_lr=1e-12)
    result = train(cfg, show_progress=False)
    assert all(r["val_top1_error"] >= 0.6 for r in result.metrics)
    assert [r["lr"] for r in result.metrics] == pytest.approx([1e-5] * 3)


def test_left_chance_needs_a_clear_margin():
    from zfnet.train.loop import left_chance

    assert not left_chance(0.878, classes=10, images=500)  # 1.6 standard errors below 90%: noise
    assert left_chance(0.80, classes=10, images=500)
    assert not left_chance(0.55, classes=3, images=12)     # 12 images cannot tell
    assert left_chance(0.10, classes=3, images=12)


@pytest.mark.slow
def test_training_learns_something(tmp_path):
    # Bright shapes on dim noise, 120 SGD steps of the paper's recipe: the training loss must fall
    # well below chance (ln 3 = 1.0986); from the paper's small initialisation the first ~50 steps
    # barely move, so fewer steps would test the initialisation, not the loop.
    from helpers.trees import make_tree

    data = make_tree(tmp_path / "data", classes=3, per_class=16, val_per_class=4)
    result = train(_config(data, tmp_path / "run", epochs=20, batch_size=8, snapshots=()), show_progress=False)
    losses = [r["train_loss"] for r in result.metrics]
    assert min(losses[-5:]) < 0.8 * 1.0986, losses


# -- training crops: the paper's ten by default, a run's own kept on resume -----------------------------------


def _crops_used(monkeypatch) -> list[str]:
    """Record the kind of training crops of every step."""
    from zfnet.train import loop

    real, kinds = loop.training_crops, []

    def recording(images, size, crops, **kw):
        kinds.append(crops)
        return real(images, size, crops, **kw)

    monkeypatch.setattr(loop, "training_crops", recording)
    return kinds


def test_a_new_run_takes_the_papers_ten_crops_by_default(tiny_tree, tmp_path, monkeypatch):
    kinds = _crops_used(monkeypatch)
    train(_config(tiny_tree, tmp_path / "run", epochs=1), show_progress=False)
    assert set(kinds) == {"ten"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_crops"] == "ten"


def test_train_crops_random_takes_random_crops(tiny_tree, tmp_path, monkeypatch):
    kinds = _crops_used(monkeypatch)
    train(_config(tiny_tree, tmp_path / "run", epochs=1, train_crops="random"), show_progress=False)
    assert set(kinds) == {"random"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_crops"] == "random"


def test_a_resumed_run_keeps_its_own_crops(tiny_tree, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_config(tiny_tree, run, epochs=1, train_crops="random"), show_progress=False)
    kinds = _crops_used(monkeypatch)
    train(_config(tiny_tree, run, epochs=2), resume=True, show_progress=False)  # train_crops unset
    assert set(kinds) == {"random"}


def test_a_run_saved_without_train_crops_resumes_with_random_crops_exactly(tiny_tree, tmp_path):
    # An old run (random crops, no train_crops saved) resumed from the command line with no flag goes
    # on as it began: bit for bit the run that was never interrupted.
    from zfnet.cli import main

    straight = tmp_path / "straight"
    train(_config(tiny_tree, straight, epochs=2, train_crops="random"), show_progress=False)
    old = tmp_path / "old"
    train(_config(tiny_tree, old, epochs=1, train_crops="random"), show_progress=False)
    forget_option(old, "train_crops")
    assert main(["train", "--out", str(old), "--resume", "--epochs", "2", "--quiet"]) == 0
    a, b = _weights(straight / "last.safetensors"), _weights(old / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((old / "config.json").read_text())["train_crops"] == "random"


def test_resume_refuses_to_change_the_crops(tiny_tree, tmp_path):
    run = tmp_path / "run"
    train(_config(tiny_tree, run, epochs=1), show_progress=False)
    state = (run / "last.pt").read_bytes()
    with pytest.raises(ZFNetError, match="trained with train_crops='ten'; --resume cannot change it to 'random'"):
        train(_config(tiny_tree, run, epochs=2, train_crops="random"), resume=True, show_progress=False)
    assert (run / "last.pt").read_bytes() == state


def test_run_train_crops_known_answers():
    from zfnet.train.loop import run_train_crops

    unset, ten, random = (TrainConfig(data="d", out="o", train_crops=c) for c in (None, "ten", "random"))
    assert run_train_crops(unset, None) == "ten"             # a new run: the paper's
    assert run_train_crops(random, None) == "random"
    assert run_train_crops(unset, {"lr": 0.01}) == "random"  # saved before the option: what zfnet took then
    assert run_train_crops(unset, {"train_crops": "ten"}) == "ten"
    assert run_train_crops(ten, {"train_crops": "ten"}) == "ten"


def test_a_model_too_large_for_the_images_or_the_machine_is_warned_about(tmp_path):
    from zfnet.data.folders import open_dataset
    from zfnet.data.synthetic import write_synthetic
    from zfnet.train.loop import size_warnings

    data = tmp_path / "synth"
    write_synthetic(data, classes=2, per_class=2, val_per_class=1, size=128, progress=False)
    dataset = open_dataset(data, "train", 256)
    upsampled, slow = size_warnings("zfnet", 224, dataset, torch.device("cpu"))
    assert "128 px" in upsampled and "upsampled" in upsampled and "--model zfnet-cpu" in upsampled
    assert "full-size" in slow
    assert size_warnings("alexnet", 224, dataset, torch.device("cuda"))[0].endswith("--model alexnet-cpu")
    assert size_warnings("zfnet-cpu", 112, dataset, torch.device("cpu")) == []  # 128-px images suit it
