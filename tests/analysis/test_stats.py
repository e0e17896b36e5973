"""Permutation tests: hand-computed p-values and intervals, behaviour on null and shifted data, verdicts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from zfnet.analysis.stats import Comparison, holm, independent_difference, null_comparison, paired_difference

# Under a valid test at level 0.05 the number of rejections among 100 independent null samples is at
# most Binomial(100, 0.05): mean 5, sd 2.2, and P(X >= 15) ~ 1e-4. The bound 15 therefore fails only for
# a test that rejects too often (its level is not kept), not by bad luck; the seeds are fixed anyway.
NULL_DRAWS, NULL_REJECTIONS_BELOW = 100, 15


def _null_pairs(draw: int, n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + draw)
    return torch.randn(n, generator=g), torch.randn(n, generator=g)


# ------------------------------------------------------------------------------- known answers

def test_exact_p_is_one_in_sixteen_for_four_differences_all_on_one_side():
    c = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0] * 4, alternative="greater")
    assert c.exact and c.draws == 16
    assert c.p_value == 1 / 16  # only the observed sign pattern reaches the observed mean
    assert c.p_less == 1.0  # every pattern is at most the observed one
    lower = paired_difference([0.0] * 4, [1.0, 2.0, 3.0, 4.0], alternative="less")
    assert lower.p_value == 1 / 16 and lower.difference == -2.5


def test_exact_p_counts_the_sign_patterns_by_hand():
    # d = (1, -2, 3, 4), sum 6. Flipping the set F lowers the sum by 2 Σ_F d, so the pattern reaches
    # the observed sum iff Σ_F d <= 0: F = {}, {-2}, {1, -2}. 3 of 16 patterns.
    c = paired_difference([1.0, -2.0, 3.0, 4.0], [0.0] * 4, alternative="greater")
    assert c.p_greater == 3 / 16
    # p_less: Σ_F d >= 0 for all F but {-2} and {1, -2} -> 14 of 16.
    assert c.p_less == 14 / 16
    assert paired_difference([1.0, -2.0, 3.0, 4.0], [0.0] * 4, alternative="two-sided").p_value == 6 / 16


def test_exact_interval_of_six_units_runs_from_the_smallest_to_the_largest_difference():
    # 64 patterns, 2.5% tails: 1.6 patterns. A shift δ is rejected only when no flipped subset has its
    # mean on the far side of δ, so the bounds are the extreme subset means: the smallest and largest d.
    d = [0.3, -0.1, 0.5, 0.2, 0.9, 0.4]
    c = paired_difference(d, [0.0] * 6, alternative="two-sided")
    assert c.exact and c.draws == 64
    assert (c.low, c.high) == (min(d), max(d))


def test_interval_is_unbounded_when_too_few_units_to_reject_anything():
    c = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0] * 4)  # smallest two-sided p is 2/16 > 0.05
    assert math.isinf(c.low) and math.isinf(c.high) and c.low < 0 < c.high
    assert "95% CI unbounded" in c.describe()


def test_exact_two_sample_p_is_one_in_twenty_when_the_groups_do_not_overlap():
    c = independent_difference([0.30, 0.31, 0.29], [0.40, 0.41, 0.39])
    assert c.exact and c.draws == math.comb(6, 3)
    assert c.p_less == 1 / 20 and c.p_greater == 1.0
    assert c.difference == pytest.approx(-0.10, abs=1e-12)
    assert c.sizes == (3, 3) and c.unit == "seeds"


def test_exact_two_sample_p_matches_brute_force_over_all_splits():
    a, b = [0.21, 0.35, 0.27, 0.30], [0.33, 0.29, 0.40, 0.36, 0.31]
    pooled = a + b
    observed = np.mean(a) - np.mean(b)
    stats = [np.mean([pooled[i] for i in idx]) - np.mean([pooled[i] for i in range(9) if i not in idx])
             for idx in itertools.combinations(range(9), 4)]
    c = independent_difference(a, b)
    assert c.exact and c.draws == len(stats) == 126
    assert c.p_less == pytest.approx(sum(s <= observed + 1e-12 for s in stats) / 126, abs=0)
    assert c.p_greater == pytest.approx(sum(s >= observed - 1e-12 for s in stats) / 126, abs=0)


def test_null_comparison_counts_the_draws_with_the_plus_one_correction():
    null = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    c = null_comparison(1.0, null, alternative="less", confidence=0.95, sizes=(5,), unit="images", method="x")
    assert c.draws == 10
    assert c.p_less == (1 + 4) / 10  # -2, -1, 0, 1 are at most 1
    assert c.p_greater == (1 + 6) / 10  # 1 ... 6


def test_holm_adjusts_each_tail_step_down():
    def comparison(p: float) -> Comparison:
        return Comparison(difference=-1.0, low=-2.0, high=0.0, confidence=0.95, p_less=p, p_greater=1 - p,
                          alternative="less", sizes=(5,), unit="images", method="x", exact=False, draws=100)

    adjusted = holm([comparison(0.01), comparison(0.04), comparison(0.03)])
    # Sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04).
    assert [c.p_less for c in adjusted] == pytest.approx([0.03, 0.06, 0.06])
    assert [c.p_greater for c in adjusted] == pytest.approx([1.0, 1.0, 1.0])
    assert adjusted[0].difference == -1.0 and adjusted[0].low == -2.0


# ---------------------------------------------------------------------------------- properties

def test_null_pairs_are_rejected_about_as_often_as_the_level_says():
    ps = [paired_difference(*_null_pairs(draw), permutations=2000, seed=draw).p_value for draw in range(NULL_DRAWS)]
    assert sum(p <= 0.05 for p in ps) < NULL_REJECTIONS_BELOW
    assert 0.4 < float(np.mean(ps)) < 0.6  # uniform p-values average 0.5, sd 0.029 over 100 draws


def test_null_groups_are_rejected_about_as_often_as_the_level_says():
    ps = [independent_difference(*_null_pairs(draw, 8), permutations=2000, seed=draw).p_value
          for draw in range(NULL_DRAWS)]
    assert sum(p <= 0.05 for p in ps) < NULL_REJECTIONS_BELOW
    assert 0.4 < float(np.mean(ps)) < 0.6


def test_a_clearly_shifted_sample_is_significant_in_its_direction_only():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(30, generator=g) - 2.0, torch.randn(30, generator=g)  # 1.4 sd of a − b
    c = paired_difference(a, b)
    assert c.significant() and c.p_value == 1 / 10_001 and c.high < 0  # no draw reaches the observed mean
    assert not paired_difference(a, b, alternative="greater").significant()
    assert independent_difference(a, b).significant()


def test_interval_contains_the_true_mean_for_a_large_sample():
    g = torch.Generator().manual_seed(8)
    d = 0.3 + torch.randn(400, generator=g)
    c = paired_difference(d, torch.zeros(400), alternative="two-sided")
    assert c.low < 0.3 < c.high
    assert c.high - c.low < 4 * 1.96 / 20  # about 2 x 1.96 sd / sqrt(400): not trivially wide


def test_interval_covers_the_true_mean_about_as_often_as_it_says():
    # 100 samples of 30: a 95% interval should miss about 5 times (Binomial(100, 0.05), P(misses >= 15) ~ 1e-4).
    misses = 0
    for draw in range(NULL_DRAWS):
        g = torch.Generator().manual_seed(2000 + draw)
        c = paired_difference(0.5 + torch.randn(30, generator=g), torch.zeros(30), permutations=2000, seed=draw)
        misses += not c.low <= 0.5 <= c.high
    assert misses < NULL_REJECTIONS_BELOW


def test_interval_excludes_zero_exactly_when_the_two_sided_test_rejects():
    for draw in range(40):
        a, b = _null_pairs(draw, 12)
        c = paired_difference(a + 0.05 * draw, b, alternative="two-sided", permutations=3000, seed=draw)
        assert (c.p_value <= 0.05) == (not c.low <= 0 <= c.high), c
        t = independent_difference(a + 0.05 * draw, b, alternative="two-sided", permutations=3000, seed=draw)
        assert (t.p_value <= 0.05) == (not t.low <= 0 <= t.high), t


def test_monte_carlo_p_agrees_with_exact_enumeration():
    # 16 units: 65536 patterns, exact with permutations=65536. With B = 20000 draws the Monte Carlo p
    # has sd sqrt(p (1 - p) / B) <= 0.0036, so 0.015 is over 4 sd.
    g = torch.Generator().manual_seed(9)
    d = torch.randn(16, generator=g) - 0.4
    exact = paired_difference(d, torch.zeros(16), permutations=2 ** 16)
    sampled = paired_difference(d, torch.zeros(16), permutations=20_000, seed=3)
    assert exact.exact and not sampled.exact and sampled.draws == 20_001
    assert 0.005 < exact.p_value < 0.5  # a p-value in the range where the comparison says something
    assert sampled.p_value == pytest.approx(exact.p_value, abs=0.015)
    # Two samples of 8: 12870 splits; 5000 draws, sd <= 0.0071, tolerance 0.03 (over 4 sd).
    a, b = torch.randn(8, generator=g) - 0.5, torch.randn(8, generator=g)
    exact2 = independent_difference(a, b, permutations=12_870)
    sampled2 = independent_difference(a, b, permutations=5_000, seed=4)
    assert exact2.exact and not sampled2.exact
    assert 0.005 < exact2.p_value < 0.5
    assert sampled2.p_value == pytest.approx(exact2.p_value, abs=0.03)


def test_the_same_seed_gives_the_same_answer():
    a, b = _null_pairs(0, 30)
    assert paired_difference(a, b, seed=5) == paired_difference(a, b, seed=5)
    assert independent_difference(a, b, seed=5) == independent_difference(a, b, seed=5)
    assert paired_difference(a, b, seed=5).p_value != paired_difference(a, b, seed=6).p_value


def test_tensors_arrays_and_lists_give_the_same_answer():
    a, b = [0.1, 0.4, 0.35, 0.2, 0.5], [0.3, 0.45, 0.5, 0.2, 0.6]
    want = paired_difference(a, b)
    assert paired_difference(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)) == want
    assert paired_difference(np.array(a), np.array(b)) == want


# --------------------------------------------------------------------------------------- verdicts

def test_verdict_when_the_finding_holds():
    c = paired_difference([0.01, 0.02, 0.015, 0.012, 0.011, 0.02], [0.05] * 6)
    assert c.verdict(compared="parts", baseline="random") == (
        "parts lower than random by 0.035 (95% CI 0.030 to 0.040, p = 0.016, 6 pairs): the paper's finding holds")


def test_verdict_when_the_opposite_holds():
    c = paired_difference([0.09, 0.08, 0.085, 0.088, 0.089, 0.08], [0.05] * 6)
    assert c.verdict(compared="parts", baseline="random") == (
        "parts higher than random by 0.035 (95% CI 0.030 to 0.040, p = 0.016, 6 pairs): "
        "the opposite of the paper's finding")


def test_verdict_when_there_is_no_evidence_either_way():
    c = paired_difference([0.01, 0.09, 0.05, 0.04, 0.06, 0.05], [0.05] * 6)
    text = c.verdict(compared="parts", baseline="random")
    assert text == "no evidence either way (parts − random = +0.000, 95% CI -0.040 to +0.040, p = 0.62, 6 pairs)"


def test_verdict_wording_follows_the_arguments_and_the_alternative():
    c = independent_difference([0.30, 0.31, 0.29, 0.30], [0.40, 0.41, 0.39, 0.40], alternative="less")
    assert c.verdict(compared="ZFNet's error", baseline="AlexNet's", finding="the paper's Table 2") == (
        "ZFNet's error lower than AlexNet's by 0.100 (95% CI 0.080 to 0.120, p = 0.014, 4 vs 4 seeds): "
        "the paper's Table 2 holds")
    two = independent_difference([0.30, 0.31, 0.29, 0.30], [0.40, 0.41, 0.39, 0.40], alternative="two-sided")
    assert two.verdict(compared="A", baseline="B").endswith(": a real difference")
    assert two.verdict(compared="A", baseline="B", alpha=0.01).startswith("no evidence either way")


def test_chance_level_scenario_from_the_issue_gives_no_evidence_either_way():
    # Issue 13: a network at chance printed "3/3 parts below random (+0.005, std 0.010)". Ten pairs
    # (the paper's 5 images) whose differences part − random have mean -0.005 and sd 0.010.
    g = torch.Generator().manual_seed(13)
    z = torch.randn(10, generator=g, dtype=torch.float64)
    d = -0.005 + 0.010 * (z - z.mean()) / z.std(unbiased=False)
    for _ in range(3):  # each of the three parts
        c = paired_difference(d, torch.zeros(10))
        assert c.difference == pytest.approx(-0.005, abs=1e-15)
        assert not c.significant()
        assert c.verdict(compared="parts", baseline="random").startswith("no evidence either way")


def test_bad_input_is_rejected_with_the_valid_values():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        paired_difference([1.0, 2, 3], [1.0, 2])
    with pytest.raises(ValueError, match="alternative must be one of less, greater, two-sided"):
        paired_difference([1.0], [2.0], alternative="lower")
    with pytest.raises(ValueError, match="permutations must be a positive int"):
        independent_difference([1.0], [2.0], permutations=0)
    with pytest.raises(ValueError, match="confidence must be a number strictly between 0 and 1"):
        paired_difference([1.0], [2.0], confidence=95)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        independent_difference([], [2.0])
    with pytest.raises(ValueError, match="must be finite"):
        paired_difference([float("nan")], [2.0])
    with pytest.raises(ValueError, match="alpha must be"):
        paired_difference([1.0], [2.0]).significant(alpha=5)
