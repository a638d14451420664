"""Statistics for the paper tables: the unit of inference, mean ± std with a t-interval, and the paired test.

Unit of inference. On a dataset with k official folds the unit is the fold: the tuning seeds of a fold share
its test clips (and, against the frozen backbone, its single reference value), so they are not independent
replicates; they are averaged within the fold first, and every spread, interval and test runs over the k
fold means. Treating the (fold, seed) pairs as independent rejected a true null 16 % of the time at the
nominal 5 % in simulation (5 folds x 3 seeds). On a fixed split (fold 0 only) the unit is the tuning seed.
Probe seeds are averaged within a (fold, tuning seed) run before anything else: they measure probe noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
EXACT_SIGN_FLIPS = 16  # up to 2^16 sign patterns are enumerated; more units use Monte Carlo sign flips
REPLICATE = ["fold", "tune_seed"]
FOLD, SEED = "fold", "tuning seed"


def unit_of(values: pd.Series) -> str:
    """``"fold"`` for k-fold data, ``"tuning seed"`` for a fixed split (every replicate in fold 0)."""
    folds = values.index.get_level_values("fold")
    return SEED if len(folds) == 0 or bool((folds == 0).all()) else FOLD


def inference_units(values: pd.Series) -> pd.Series:
    """Replicate values indexed by (fold, tune_seed) -> one value per unit of inference.

    k-fold: the mean over a fold's tuning seeds, indexed by fold; fixed split: indexed by tuning seed.
    Non-finite replicates are left out before averaging.
    """
    values = values[np.isfinite(values.to_numpy(dtype=np.float64))]
    level = "fold" if unit_of(values) == FOLD else "tune_seed"
    return values.groupby(level=level, sort=True).mean()


def paired_unit_deltas(mine: pd.Series, theirs: pd.Series, *, shared_reference: bool) -> np.ndarray:
    """[units] method - reference, matched by unit.

    Args:
        mine, theirs: replicate values indexed by (fold, tune_seed).
        shared_reference: the reference has one run per fold (the frozen backbone, tuning seed 0), which on a
            fixed split is the reference of every tuning seed of ``mine``.
    """
    mine_units, their_units = inference_units(mine), inference_units(theirs)
    if unit_of(mine) == SEED and shared_reference:
        if len(their_units) == 0:
            return np.empty(0)
        return mine_units.to_numpy() - float(their_units.mean())
    joined = pd.concat([mine_units.rename("mine"), their_units.rename("theirs")], axis=1, join="inner")
    return (joined["mine"] - joined["theirs"]).to_numpy(dtype=np.float64)


def t_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std and 95 % Student-t half width over the last axis ([..., n], n >= 2).

    half width = t_{0.975, n-1} * s / sqrt(n); vectorised so simulations can test many experiments at once.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    mean, std = values.mean(axis=-1), values.std(axis=-1, ddof=1)
    return mean, std, float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)


def sign_flip_p(deltas: np.ndarray, *, flips: int = 10_000, seed: int = 0) -> np.ndarray:
    """Two-sided paired randomisation (sign-flip) test of "the deltas are symmetric around 0" (Fisher 1935).

    Over the last axis ([..., n]). Up to EXACT_SIGN_FLIPS units every sign pattern is enumerated:
    p = #{patterns s : |mean(s * d)| >= |mean(d)|} / 2^n, so n units cannot give p below 2 / 2^n (0.0625 for
    5 folds, 0.25 for 3 seeds). Beyond that ``flips`` random patterns are drawn and
    p = (1 + #{as extreme}) / (flips + 1), which counts the observed pattern and is never 0 (Phipson & Smyth
    2010).
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    n = deltas.shape[-1]
    observed = np.abs(deltas.mean(axis=-1, keepdims=True))  # [..., 1]
    exact = n <= EXACT_SIGN_FLIPS
    if exact:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # [2^n, n] every sign pattern
    else:
        patterns = np.random.default_rng(seed).integers(0, 2, size=(flips, n))
    flipped = np.abs(deltas @ (1 - 2 * patterns).T / n)  # [..., patterns]
    # A tolerance keeps floating-point noise from counting a pattern as less extreme than the observed one.
    extreme = (flipped >= observed - 1e-12).sum(axis=-1)
    return extreme / len(patterns) if exact else (extreme + 1) / (flips + 1)


def summarize(values) -> dict:
    """Mean, sample std and a 95 % Student-t confidence interval of the mean over units.

    Args:
        values: [n] unit values; NaN entries (a probe that produced no number) are left out, so ``n`` counts
            finite values only.

    Returns:
        {"mean", "std", "ci_low", "ci_high", "n"}; std and the interval are NaN with fewer than two units,
        every statistic is NaN (n = 0) without any.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n < 2:
        mean = float(finite.mean()) if n else math.nan
        return {"mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    mean, std, half_width = (float(x) for x in t_interval(finite))
    return {"mean": mean, "std": std, "ci_low": mean - half_width, "ci_high": mean + half_width, "n": n}


def paired_test(deltas, *, flips: int = 10_000, seed: int = 0) -> dict:
    """Paired comparison over units: mean delta, 95 % Student-t interval of it, and the sign-flip p-value.

    The t-interval is honest at small n (with 3 units it uses t_{0.975, 2} = 4.30, not the min-max of the
    deltas that a percentile bootstrap gives); the sign-flip p needs no normality but cannot go below 2 / 2^n.

    Args:
        deltas: [n] paired differences (method - reference), one per unit (see ``paired_unit_deltas``).
        flips: Monte Carlo sign patterns beyond EXACT_SIGN_FLIPS units.
        seed: seed of those patterns.

    Returns:
        {"mean_delta", "ci_low", "ci_high", "p_value", "n"}; with fewer than two units the interval and p are
        NaN (no spread to estimate), with none everything is NaN.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    if not np.isfinite(deltas).all():
        raise ValueError(f"paired deltas must be finite, got {deltas.tolist()}")
    summary = summarize(deltas)
    p_value = float(sign_flip_p(deltas, flips=flips, seed=seed)) if len(deltas) >= 2 else math.nan
    return {
        "mean_delta": summary["mean"],
        "ci_low": summary["ci_low"],
        "ci_high": summary["ci_high"],
        "p_value": p_value,
        "n": summary["n"],
    }
