"""Is a difference real? Permutation tests, their intervals, and the verdict they allow.

Every "finding" zfnet reports compares two sets of numbers: the Δ of a part and of random regions over
the same image pairs (Table 1), the error of two architectures over several seeds. A difference of
means alone is no finding: a network at chance level gives parts a Δ a hair below random about half
the time. The functions here test the difference and return a :class:`Comparison`, whose
:meth:`Comparison.verdict` says one of three things, in words the caller chooses:

- the difference is real and in the paper's direction: "the paper's finding holds";
- it is real and in the other direction: "the opposite of the paper's finding";
- otherwise: "no evidence either way", with the estimate, its interval and the p-value.

The tests are permutation tests, exact when every rearrangement can be listed and Monte Carlo
otherwise, with the ``+1`` correction of Phipson & Smyth (2010) so that a p-value is never 0 and the
test keeps its level. The interval is the set of shifts ``δ`` that the same test does not reject at
``1 − confidence`` (two-sided, equal tails), so a two-sided p-value below ``1 − confidence`` and an
interval that excludes zero always go together.

Everything here is a pure function of its arguments: no printing, no files, and the same seed gives the
same answer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = ["ALTERNATIVES", "Comparison", "paired_difference", "independent_difference", "null_comparison", "holm"]

ALTERNATIVES = ("less", "greater", "two-sided")
"""What a test looks for: the first set lower than the second, higher, or either."""

_CHUNK = 1 << 22  # elements per block of random draws: bounds memory for many units


@dataclass(frozen=True)
class Comparison:
    """The outcome of testing ``first − second``: the estimate, its interval and both one-sided p-values.

    Attributes:
        difference: the estimate of ``first − second`` (mean of the paired differences, or difference
            of the two means).
        low: lower end of the interval (``-inf`` when too few units to bound it).
        high: upper end (``+inf`` likewise).
        confidence: the interval's coverage, e.g. 0.95.
        p_less: p-value of the one-sided test "first is lower than second".
        p_greater: p-value of the one-sided test "first is higher than second".
        alternative: the test asked for, one of :data:`ALTERNATIVES`.
        sizes: the units behind each side: ``(n,)`` when paired, ``(n_first, n_second)`` when not.
        unit: what a unit is, plural (``"pairs"``, ``"images"``, ``"seeds"``).
        method: the test, in words.
        exact: whether every rearrangement was listed (else ``draws`` random ones).
        draws: how many rearrangements the p-values count.
    """

    difference: float
    low: float
    high: float
    confidence: float
    p_less: float
    p_greater: float
    alternative: str
    sizes: tuple[int, ...]
    unit: str
    method: str
    exact: bool
    draws: int

    @property
    def p_value(self) -> float:
        """The p-value of the test asked for; two-sided is twice the smaller one-sided one (at most 1)."""
        if self.alternative == "less":
            return self.p_less
        if self.alternative == "greater":
            return self.p_greater
        return min(1.0, 2.0 * min(self.p_less, self.p_greater))

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the test asked for rejects "no difference" at level ``alpha``."""
        _check_level(alpha, "alpha")
        return self.p_value <= alpha

    def describe(self, digits: int = 3) -> str:
        """The numbers in one line, without a verdict.

        Example:
            >>> paired_difference([0.1, 0.2, 0.3, 0.4], [0.0] * 4, alternative="greater").describe()
            '+0.250 (95% CI unbounded), p = 0.062 (greater), 4 pairs, paired sign-flip, exact over 16'
        """
        how = f"exact over {self.draws}" if self.exact else f"{self.draws} random draws"
        return (f"{_signed(self.difference, digits)} ({self._interval(self.low, self.high, digits)}), "
                f"p = {_p(self.p_value)} ({self.alternative}), {self._n()}, {self.method}, {how}")

    def verdict(self, *, compared: str = "the first", baseline: str = "the second",
                finding: str = "the paper's finding", alpha: float = 0.05, digits: int = 3) -> str:
        """One line: what the data show about ``compared`` versus ``baseline``.

        For a one-sided test (``alternative`` "less" or "greater" is the paper's direction), three
        outcomes: the difference is significant in that direction (``finding`` holds), significant in
        the other direction at the same level (the opposite of ``finding``), or neither ("no evidence
        either way"). A two-sided test says whether there is a difference and which way it goes.

        Args:
            compared: what the first set measures, as the subject of a sentence ("parts", "ZFNet").
            baseline: what the second set measures ("random", "AlexNet").
            finding: the paper's claim, named ("the paper's finding").
            alpha: the level of each one-sided test.
            digits: decimals of the difference and the interval.

        Returns:
            The verdict, e.g. ``"parts lower than random by 0.012 (95% CI 0.004 to 0.020, p = 0.003,
            45 pairs): the paper's finding holds"``.

        Example:
            >>> c = paired_difference([0.01, 0.02, 0.015, 0.012, 0.011, 0.02], [0.05] * 6)
            >>> c.verdict(compared="parts", baseline="random")
            "parts lower than random by 0.035 (95% CI 0.030 to 0.040, p = 0.016, 6 pairs): the paper's finding holds"
        """
        _check_level(alpha, "alpha")
        low, high = self.p_less <= alpha, self.p_greater <= alpha
        if self.alternative == "two-sided":
            if self.p_value <= alpha:
                return self._direction(compared, baseline, self.difference < 0, self.p_value, digits) + \
                    ": a real difference"
        elif (self.alternative == "less" and low) or (self.alternative == "greater" and high):
            return self._direction(compared, baseline, self.alternative == "less", self.p_value, digits) + \
                f": {finding} holds"
        elif low or high:
            return self._direction(compared, baseline, low, self.p_less if low else self.p_greater, digits) + \
                f": the opposite of {finding}"
        return (f"no evidence either way ({compared} − {baseline} = {_signed(self.difference, digits)}, "
                f"{self._interval(self.low, self.high, digits)}, p = {_p(self.p_value)}, {self._n()})")

    def _direction(self, compared: str, baseline: str, lower: bool, p: float, digits: int) -> str:
        # A magnitude reads better than a signed number: "lower by 0.012 (CI 0.004 to 0.020)".
        lo, hi = (-self.high, -self.low) if lower else (self.low, self.high)
        return (f"{compared} {'lower' if lower else 'higher'} than {baseline} by {abs(self.difference):.{digits}f} "
                f"({self._interval(lo, hi, digits, signed=False)}, p = {_p(p)}, {self._n()})")

    def _interval(self, low: float, high: float, digits: int, signed: bool = True) -> str:
        level = f"{100 * self.confidence:g}% CI"
        if math.isinf(low) and math.isinf(high):
            return f"{level} unbounded"
        if signed:
            return f"{level} {_signed(low, digits)} to {_signed(high, digits)}"
        return f"{level} {low:.{digits}f} to {high:.{digits}f}"

    def _n(self) -> str:
        return " vs ".join(str(s) for s in self.sizes) + f" {self.unit}"


def holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values, for claims made about several at once.

    "3 of 3 parts below random" is three tests; Holm's step-down adjustment keeps the chance of any
    false claim among them at ``alpha`` (Holm 1979). Each of ``p_less`` and ``p_greater`` is adjusted
    over the family separately; estimates and intervals are unchanged.

    Args:
        comparisons: the family of tests.

    Returns:
        Copies, in the same order, with adjusted p-values.

    Example:
        >>> cs = [paired_difference([1.0, 2, 3, 4, 5], [0.0] * 5, alternative="greater")] * 2
        >>> [round(c.p_greater, 4) for c in holm(cs)]
        [0.0625, 0.0625]
    """
    m = len(comparisons)

    def adjust(ps: list[float]) -> list[float]:
        out, running = [0.0] * m, 0.0
        for rank, i in enumerate(sorted(range(m), key=lambda k: ps[k])):
            running = max(running, min(1.0, (m - rank) * ps[i]))
            out[i] = running
        return out

    less = adjust([c.p_less for c in comparisons])
    greater = adjust([c.p_greater for c in comparisons])
    return [replace(c, p_less=lo, p_greater=hi) for c, lo, hi in zip(comparisons, less, greater)]


def paired_difference(first, second, *, alternative: str = "less", permutations: int = 10_000, seed: int = 0,
                      confidence: float = 0.95, unit: str = "pairs") -> Comparison:
    """Sign-flip permutation test of the mean of paired differences ``first[i] − second[i]``.

    Under "no difference" each unit's two values are exchangeable, so each difference is as likely
    negative as positive; the test compares the observed mean with its value under every sign
    pattern (all ``2**n`` when that is at most ``permutations``, else ``permutations`` random ones
    plus the observed). The units must be independent of one another. The interval is the set of
    shifts ``δ`` the test does not reject for ``first − second − δ``: exact under the symmetric
    shift model, found from the means of the flipped subsets without searching.

    Args:
        first: one value per unit, a 1-D tensor, array or sequence of floats.
        second: the paired values, same length.
        alternative: ``"less"`` (first lower), ``"greater"`` or ``"two-sided"``.
        permutations: the most sign patterns to count: exact enumeration when ``2**n`` fits.
        seed: seeds the random sign patterns.
        confidence: coverage of the interval.
        unit: what a unit is, plural, for the text.

    Returns:
        A :class:`Comparison` with ``sizes == (n,)``.

    Raises:
        ValueError: different lengths, no units, non-finite values, a bad ``alternative``,
            ``permutations`` or ``confidence``.

    Example:
        >>> c = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0] * 4, alternative="greater")
        >>> c.p_value, c.exact, c.draws
        (0.0625, True, 16)
    """
    a, b = _values(first, "first"), _values(second, "second")
    if len(a) != len(b):
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    _check(alternative, permutations, confidence)
    d = a - b
    n = len(d)
    exact = 2 ** n <= permutations
    flips = _all_subsets(n) if exact else _random_subsets(n, permutations, seed)
    k = flips.sum(axis=1)
    moved = k > 0
    # Flipping the signs of the subset F changes the sum by -2 Σ_F d: the flipped statistic is at
    # least the observed one when mean_F d <= 0, and at least it after a shift δ when mean_F d <= δ.
    jumps = (flips[moved] @ d) / k[moved]
    base = int((~moved).sum()) + (0 if exact else 1)
    total = len(flips) + (0 if exact else 1)
    return _comparison(float(d.mean()), jumps, base, total, np.abs(d).max(), alternative, confidence,
                       (n,), unit, "paired sign-flip", exact)


def independent_difference(first, second, *, alternative: str = "less", permutations: int = 10_000,
                           seed: int = 0, confidence: float = 0.95, unit: str = "seeds") -> Comparison:
    """Two-sample permutation test of ``mean(first) − mean(second)`` by shuffling the labels.

    For unpaired sets, e.g. the error of two architectures over several seeds each. Under "no
    difference" every split of the pooled values into groups of the two sizes is as likely; the test
    counts them all when there are at most ``permutations`` (``C(n1 + n2, n1)``), else that many
    random ones plus the observed. The interval inverts the same test under the shift model
    (``first − δ`` against ``second``).

    Args:
        first: values of the first group, a 1-D tensor, array or sequence of floats.
        second: values of the second group.
        alternative: ``"less"`` (first lower), ``"greater"`` or ``"two-sided"``.
        permutations: the most splits to count: exact enumeration when they all fit.
        seed: seeds the random splits.
        confidence: coverage of the interval.
        unit: what a unit is, plural, for the text.

    Returns:
        A :class:`Comparison` with ``sizes == (n1, n2)``.

    Raises:
        ValueError: an empty group, non-finite values, a bad ``alternative``, ``permutations`` or
            ``confidence``.

    Example:
        >>> c = independent_difference([0.30, 0.31, 0.29], [0.40, 0.41, 0.39])
        >>> c.p_value, c.draws  # the observed split is the lowest of the 20
        (0.05, 20)
    """
    a, b = _values(first, "first"), _values(second, "second")
    _check(alternative, permutations, confidence)
    n1, n = len(a), len(a) + len(b)
    pooled = np.concatenate([a, b])
    exact = math.comb(n, n1) <= permutations
    if exact:
        chosen = np.zeros((math.comb(n, n1), n), dtype=bool)
        for row, idx in enumerate(itertools.combinations(range(n), n1)):
            chosen[row, list(idx)] = True
    else:
        chosen = _random_splits(n, n1, permutations, seed)
    # Swapping S_a (leaving the first group) with S_b (joining it), |S_a| = |S_b| = k, raises the
    # difference of means after a shift δ of the first group iff mean(S_a) − mean(S_b) <= δ.
    left = ~chosen[:, :n1]
    joined = chosen[:, n1:]
    k = joined.sum(axis=1)
    moved = k > 0
    jumps = (left[moved] @ a - joined[moved] @ b) / k[moved]
    base = int((~moved).sum()) + (0 if exact else 1)
    total = len(chosen) + (0 if exact else 1)
    return _comparison(float(a.mean() - b.mean()), jumps, base, total, np.abs(pooled).max(), alternative,
                       confidence, (len(a), len(b)), unit, "two-sample label permutation", exact)


def null_comparison(observed: float, null: torch.Tensor | np.ndarray, *, alternative: str, confidence: float,
                    sizes: tuple[int, ...], unit: str, method: str) -> Comparison:
    """A :class:`Comparison` from an observed statistic and its values under random rearrangements.

    For tests whose rearrangements are specific to one analysis (e.g. swapping occluders within each
    image, :func:`zfnet.analysis.correspondence.part_vs_random`). The p-values count the draws at
    least as extreme as ``observed``, with the ``+1`` correction; the interval is
    ``observed − q`` for the draws' quantiles ``q`` (the shift model: under a true difference ``δ``
    the statistic is distributed as the null shifted by ``δ``), so it agrees with the p-values.

    Args:
        observed: the statistic on the data (an estimate of ``first − second``).
        null: (B,) its values under ``B`` random rearrangements.
        alternative: one of :data:`ALTERNATIVES`.
        confidence: coverage of the interval.
        sizes: units per side, for the text.
        unit: what a unit is, plural.
        method: the test, in words.

    Returns:
        A :class:`Comparison` with ``exact=False`` and ``draws == B + 1``.

    Example:
        >>> c = null_comparison(-1.0, torch.linspace(-0.5, 0.5, 99), alternative="less", confidence=0.9,
        ...                     sizes=(5,), unit="images", method="example")
        >>> c.p_less, c.p_greater
        (0.01, 1.0)
    """
    values = _values(null, "null")
    _check(alternative, len(values), confidence)
    if not math.isfinite(observed):
        raise ValueError(f"observed must be finite, got {observed!r}")
    jumps = observed - values  # a draw reaches the shifted statistic observed − δ iff observed − z <= δ
    scale = max(abs(observed), float(np.abs(values).max()))
    return _comparison(float(observed), jumps, 1, len(values) + 1, scale, alternative, confidence, sizes, unit,
                       method, False)


# ------------------------------------------------------------------------------------------------ internals

def _comparison(difference: float, jumps: np.ndarray, base: int, total: int, scale: float, alternative: str,
                confidence: float, sizes: tuple[int, ...], unit: str, method: str, exact: bool) -> Comparison:
    """Both one-sided p-values at δ = 0 and the interval, from the jump points of the test in δ.

    ``p_greater(δ) = (base + #{jumps <= δ}) / total`` and ``p_less(δ) = (base + #{jumps >= δ}) / total``:
    ``base`` counts the rearrangements that leave the statistic unchanged (the observed one among them).
    """
    tol = 1e-10 * scale  # jumps are means of the data: exact ties at zero must count as ties
    p_greater = (base + int((jumps <= tol).sum())) / total
    p_less = (base + int((jumps >= -tol).sum())) / total
    tail = (1.0 - confidence) / 2.0
    # δ stays in the interval while p(δ) > tail, i.e. while at least k jumps are on its side.
    k = math.floor(tail * total - base + 1e-9) + 1
    if k <= 0:
        low, high = -math.inf, math.inf
    else:
        ordered = np.sort(jumps)
        low, high = float(ordered[k - 1]), float(ordered[-k])
    return Comparison(difference=difference, low=low, high=high, confidence=confidence, p_less=p_less,
                      p_greater=p_greater, alternative=alternative, sizes=sizes, unit=unit, method=method,
                      exact=exact, draws=total)


def _values(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        v = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 1-D tensor, array or sequence of floats, got {type(x).__name__}") from e
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D set of values, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite, got {v.tolist()}")
    return v


def _check_level(x: float, name: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {x!r}")


def _check(alternative: str, permutations: int, confidence: float) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be a positive int, got {permutations!r}")
    _check_level(confidence, "confidence")


def _all_subsets(n: int) -> np.ndarray:
    """(2**n, n) bool: row r flips the units whose bit is set in r (row 0 flips none)."""
    return ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)


def _random_subsets(n: int, draws: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    rows = max(1, _CHUNK // n)
    return np.concatenate([(torch.rand((min(rows, draws - s), n), generator=g) < 0.5).numpy()
                           for s in range(0, draws, rows)])


def _random_splits(n: int, n1: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n) bool, each row marking a uniformly random set of ``n1`` of the ``n`` pooled values."""
    g = torch.Generator().manual_seed(seed)
    rows = max(1, _CHUNK // n)
    out = []
    for s in range(0, draws, rows):
        order = torch.rand((min(rows, draws - s), n), generator=g).argsort(dim=1)
        out.append((order < n1).numpy())  # the positions ranked first n1: a uniform n1-subset
    return np.concatenate(out)


def _signed(x: float, digits: int) -> str:
    return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0: a difference that rounds to zero prints +0.000


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
