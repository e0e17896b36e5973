"""Evaluation: ten-crop predictions carry the centre crop's, computed in the same pass."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers.runs import default_init_
from helpers.trees import make_tree

from zfnet.models import build
from zfnet.train.evaluate import average, predict_runs
from zfnet.train.run import LoadedRun


def _loaded(seed: int, classes: list[str]) -> LoadedRun:
    torch.manual_seed(seed)
    model = default_init_(build("zfnet-tiny", num_classes=len(classes)).eval())
    mean = torch.full((3, 73, 73), 120.0)
    return LoadedRun(root=Path(f"run{seed}"), model=model, mean=mean, classes=classes,
                     class_names=classes, metadata={"model": "zfnet-tiny"})


def test_the_centre_crop_of_ten_crop_predictions_equals_a_centre_crop_pass(tmp_path):
    data = make_tree(tmp_path / "data", classes=3, per_class=2, val_per_class=4)
    classes = sorted(p.name for p in (data / "val").iterdir())
    runs = [_loaded(0, classes), _loaded(1, classes)]
    ten, _ = predict_runs(runs, data, ten_crop=True, workers=0, show_progress=False)
    centre, _ = predict_runs(runs, data, ten_crop=False, workers=0, show_progress=False)
    for t, c in zip(ten, centre):
        # The same crop through the same weights, in batches of other sizes: equal up to float32 rounding.
        torch.testing.assert_close(t.centre_crop().probs, c.probs, rtol=1e-5, atol=1e-6)
        assert torch.equal(t.centre_crop().labels, c.labels)
        assert not torch.allclose(t.probs, c.probs)  # the ten crops' average is another number
    torch.testing.assert_close(average([t.centre_crop() for t in ten]).probs, average(centre).probs,
                               rtol=1e-5, atol=1e-6)
