"""Linear classifiers on fixed features (the read-out of Tables 4-7): known answers, an independent solver."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zfnet.analysis.linear import fit_and_score, fit_linear, resolve_l2, select_l2


def _objective(kind, w, b, z, y, l2):
    """The objective fit_linear minimises, in float64, written out from its definition."""
    s = z @ w.t() + b
    n = len(z)
    if kind == "softmax":
        loss = F.cross_entropy(s, y, reduction="sum") / n
    else:
        t = -torch.ones_like(s)
        t[torch.arange(n), y] = 1.0
        loss = (torch.clamp(1 - t * s, min=0) ** 2).sum() / n
    return loss + 0.5 * l2 * (w ** 2).sum()


def _newton_reference(kind, z, y, c, l2, steps=25):
    """An independent solver: Newton's method with the exact Hessian, float64, from zero."""
    d = z.shape[1]
    theta = torch.zeros(c * d + c, dtype=torch.float64)

    def f(th):
        return _objective(kind, th[:c * d].view(c, d), th[c * d:], z, y, l2)

    for _ in range(steps):
        g = torch.autograd.functional.jacobian(f, theta, vectorize=True)
        h = torch.autograd.functional.hessian(f, theta, vectorize=True)
        # The bias is unpenalised and softmax logits are shift-invariant: a small ridge keeps H invertible.
        step = torch.linalg.solve(h + 1e-9 * torch.eye(len(theta), dtype=torch.float64), g)
        theta = theta - step
        if step.norm() < 1e-12:
            break
    return theta[:c * d].view(c, d), theta[c * d:]


@pytest.mark.parametrize("kind", ["softmax", "svm"])
def test_fit_matches_newton_reference(kind):
    gen = torch.Generator().manual_seed(1)
    c, d, n = 3, 4, 60
    y = torch.arange(c).repeat_interleave(n // c)
    x = torch.randn(n, d, generator=gen) * torch.tensor([1.0, 3.0, 0.5, 2.0]) + 5.0
    x[:, 0] += 1.5 * y  # overlapping classes: a unique, finite optimum
    l2 = 0.05
    clf = fit_linear(x, y, kind=kind, l2=l2, num_classes=c, max_iter=500)
    z = ((x - clf.shift) / clf.scale).double()
    w, b = _newton_reference(kind, z, y, c, l2)
    scores_ref = z @ w.t() + b
    scores = clf.scores(x).double()
    if kind == "softmax":  # logits are defined up to a shift per image: compare probabilities
        scores, scores_ref = scores.softmax(1), scores_ref.softmax(1)
    # L-BFGS in float32 stops at a gradient of ~1e-6: scores agree to ~1e-4 of their scale.
    assert (scores - scores_ref).abs().max().item() <= 2e-3 * max(1.0, scores_ref.abs().max().item())
    assert clf.l2 == l2 and clf.kind == kind


def test_svm_known_answer():
    # Two points at -1 and +1 (already standardised). Class 1's score w x + b has b = 0 by symmetry and
    # minimises (1 - w)^2 + l2 / 2 w^2, so w = 2 / (2 + l2); class 0 mirrors it.
    x = torch.tensor([[-1.0], [1.0]])
    clf = fit_linear(x, torch.tensor([0, 1]), kind="svm", l2=0.5)
    assert clf.weight[:, 0].tolist() == pytest.approx([-0.8, 0.8], abs=1e-5)
    assert clf.bias.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)


def test_logistic_ignores_zero_targets():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=gen)
    targets = torch.where(x[:, :2] + 0.5 * torch.randn(40, 2, generator=gen) > 0, 1, -1).to(torch.int8)
    targets[:10, 0] = 0  # class 0 is unknown (difficult) in the first 10 images
    l2 = 0.1
    clf = fit_linear(x, targets, kind="logistic", l2=l2)
    z = ((x - clf.shift) / clf.scale).double()
    w = clf.weight.double().requires_grad_(True)
    b = clf.bias.double().requires_grad_(True)

    def grad_norm(t):
        s = z @ w.t() + b
        loss = (F.softplus(-t.double() * s) * (t != 0)).sum() / len(z) + 0.5 * l2 * (w ** 2).sum()
        gw, gb = torch.autograd.grad(loss, (w, b))
        return torch.cat([gw.flatten(), gb]).norm().item()

    # At the optimum of the objective that skips the 0 targets, its gradient vanishes (L-BFGS in float32
    # stops near 1e-6); counting the 0s as negatives gives another objective, whose gradient there does not.
    as_negative = targets.clone()
    as_negative[as_negative == 0] = -1
    assert grad_norm(targets) <= 1e-4
    assert grad_norm(as_negative) >= 1e-2


def test_default_penalty_and_errors():
    x, y = torch.randn(50, 2), torch.arange(50) % 2
    assert fit_linear(x, y).l2 == pytest.approx(1 / 50)
    with pytest.raises(ValueError, match="unknown classifier"):
        fit_linear(x, y, kind="tree")
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit_linear(x, y, l2=0.0)
    with pytest.raises(ValueError, match="expected"):
        fit_linear(x, y[:10])
    with pytest.raises(ValueError, match="logistic classifiers take"):
        fit_linear(x, y, kind="logistic")


def test_select_l2_breaks_ties_towards_the_larger_penalty():
    # Constant features carry nothing: every penalty predicts alike, so the largest one wins.
    assert select_l2(torch.ones(30, 3), torch.arange(30) % 3, grid=(1e-3, 1e-1, 10.0)) == 10.0
    # Separable but unbalanced classes (40 : 20): a huge penalty leaves the weights ~0 and the unpenalised
    # bias predicts the larger class everywhere (per-class accuracy 0.5); a small one separates them.
    gen = torch.Generator().manual_seed(0)
    y = (torch.arange(60) >= 40).long()
    x = torch.randn(60, 2, generator=gen)
    x[:, 0] += 4.0 * (2 * y - 1)
    assert select_l2(x, y, grid=(1e-3, 1e4)) == 1e-3


def test_resolve_l2_and_fit_and_score():
    x, y = torch.tensor([[0.0], [1.0], [4.0], [5.0]]), torch.tensor([0, 0, 1, 1])
    assert resolve_l2(None, x, y, kind="softmax") == 0.25  # 1 / N
    assert resolve_l2(0.1, x, y, kind="softmax") == 0.1
    assert resolve_l2("cv", torch.ones(30, 3), torch.arange(30) % 3, kind="softmax") == 1.0  # ties: the largest
    with pytest.raises(ValueError, match="positive number, 'cv' or None"):
        resolve_l2("big", x, y, kind="softmax")
    # Two well-separated classes: both test points right, per-class accuracy 1.
    assert fit_and_score(x, y, torch.tensor([[0.5], [4.5]]), torch.tensor([0, 1]), kind="svm", l2=0.1) == (1.0, 0.1)
