"""The shared SGD step (train.step) and the from-scratch baseline built on it (train.scratch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.trees import draw
from torch import nn

from zfnet.errors import TrainingDiverged, ZFNetError
from zfnet.models import build
from zfnet.train.scratch import SCRATCH_STEPS, ScratchRecipe, predict_labels, train_from_scratch
from zfnet.train.step import NonFiniteLoss, param_groups, sgd, sgd_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    shapes = ("disc", "bar")
    images = torch.stack([torch.from_numpy(np.array(draw(shapes[i % 2], rng, 73))).permute(2, 0, 1)
                          for i in range(n)])
    return images, torch.arange(n) % 2


def test_param_groups_decay_weights_only():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    decay, plain = param_groups(net, 5e-4)
    assert decay["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in plain["params"]} == {id(net[0].bias), id(net[2].bias)}


def test_sgd_step_is_the_papers_step_written_out():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.mul_(20)  # RMS far above 0.1: the step renormalises these filters
    reference = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    reference.load_state_dict(net.state_dict())
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    lr, wd = 0.1, 0.01
    loss, logits = sgd_step(net, sgd(net, lr=lr, momentum=0.9, weight_decay=wd), x, y, max_filter_rms=0.1)

    # By hand: the gradient of the mean cross-entropy, plus weight decay on weights only; the first step of
    # momentum SGD is a plain step; then each conv filter above RMS 0.1 is scaled back to 0.1.
    expected_loss = F.cross_entropy(reference(x), y)
    grads = torch.autograd.grad(expected_loss, list(reference.parameters()))
    with torch.no_grad():
        for (name, p), g in zip(reference.named_parameters(), grads):
            p -= lr * (g + (wd * p if not name.endswith("bias") else 0))
        w = reference[0].weight
        rms = w.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
        w.mul_(torch.where(rms > 0.1, 0.1 / rms, torch.ones_like(rms)))
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    assert logits.shape == (4, 3) and not logits.requires_grad
    for (name, a), b in zip(net.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)  # float32 rounding of the same sums


def test_sgd_step_refuses_a_non_finite_loss_and_updates_nothing():
    net = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = sgd(net, lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(NonFiniteLoss, match="the loss is nan") as err:
        sgd_step(net, opt, torch.tensor([[math.nan, 0.0]]), torch.tensor([0]))
    assert isinstance(err.value, TrainingDiverged) and math.isnan(err.value.loss)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # Another process's loss is not finite: every process stops at the same step.
    with pytest.raises(NonFiniteLoss):
        sgd_step(net, opt, torch.zeros(1, 2), torch.tensor([0]), any_rank=lambda flag: True)


def test_train_from_scratch_is_seeded():
    images, labels = _images()
    recipe = ScratchRecipe(steps=4, batch_size=8)
    a, mean_a = train_from_scratch("zfnet-tiny", images, labels, num_classes=2, recipe=recipe, seed=3,
                                   show_progress=False)
    b, _ = train_from_scratch("zfnet-tiny", images, labels, num_classes=2, recipe=recipe, seed=3,
                              show_progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.allclose(mean_a, images.double().mean(0).float())
    assert not a.training
    assert predict_labels(a, images, mean_a).shape == (40,)


def test_a_diverging_baseline_is_a_clear_error(monkeypatch):
    images, labels = _images(8)
    calls = []

    def blows_up_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise NonFiniteLoss(math.inf)

    monkeypatch.setattr("zfnet.train.scratch.sgd_step", blows_up_at_the_third_step)
    with pytest.raises(ZFNetError, match=r"diverged at step 3 \(loss inf\); try a lower learning rate"):
        train_from_scratch("zfnet-tiny", images, labels, num_classes=2, recipe=ScratchRecipe(steps=5, batch_size=4),
                           show_progress=False)


def test_default_budget_and_recipe_limits():
    assert ScratchRecipe().steps == SCRATCH_STEPS >= 1000  # the ~1000 steps of the chance plateau at least
    with pytest.raises(ZFNetError, match="from-scratch recipe option steps"):
        ScratchRecipe(steps=0)
    assert build("zfnet-tiny", num_classes=2).config.input_size == 64
