"""Uncertainty metrics: interval coverage, CRPS, std-error rank correlation, reliability, conformal.

Predictive distributions come either as draws (n, S, G) or as a Gaussian with the predicted mean
and std (n, G). Intervals are central: level l spans the (1 - l)/2 and (1 + l)/2 quantiles.
Interval coverage and the conformal multipliers themselves live in :mod:`rnafm.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from rnafm.metrics import coverage, crps_gaussian, gaussian_multiplier, spearman

__all__ = [
    "LEVELS",
    "gaussian_interval",
    "draws_interval",
    "crps_gaussian",
    "crps_draws",
    "std_error_spearman",
    "reliability_curve",
    "conformal_interval",
    "uncertainty_metrics",
]

LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
MIN_DRAWS_FOR_QUANTILES = 40  # fewer draws: intervals from a Gaussian with the draws' std
RELIABILITY_LEVELS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def gaussian_interval(mean, std, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central interval of N(mean, std^2) at ``level``: mean -/+ z_{(1+l)/2} std."""
    z = gaussian_multiplier(level)
    mean, std = np.asarray(mean), np.asarray(std)
    return mean - z * std, mean + z * std


def _sorted_quantile(x: np.ndarray, q: float) -> np.ndarray:
    """numpy's default (linear) quantile along axis 1 of draws already sorted on that axis."""
    pos = q * (x.shape[1] - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, x.shape[1] - 1)
    return x[:, lo] + (pos - lo) * (x[:, hi] - x[:, lo])  # (n, G)


def draws_interval(
    draws, level: float, *, presorted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Central interval from empirical quantiles of draws (n, S, G) along the draw axis.

    ``presorted=True`` skips the sort when ``draws`` are already sorted along axis 1 (the same
    draws evaluated at many levels).
    """
    x = np.asarray(draws) if presorted else np.sort(np.asarray(draws), axis=1)
    return _sorted_quantile(x, 0.5 - level / 2), _sorted_quantile(x, 0.5 + level / 2)


def crps_draws(y, draws, *, fair: bool = False) -> np.ndarray:
    """CRPS of the empirical distribution of draws at y: E|X - y| - E|X - X'| / 2.

    With ``fair``, the pair term averages over pairs of distinct draws that are not partners
    (draws 2j and 2j + 1, the antithetic pairs (z, -z) of rnafm's sampler, are left out): an
    unbiased estimate of the CRPS of the distribution the draws come from when the draws are
    independent (or independent antithetic pairs), comparable with a closed-form CRPS. The
    empirical version is larger by E|X - X'| / (2 S) on average; keeping the partners would
    make the fair one too small.

    Draws that were centred and rescaled by their own mean and std (rnafm's draws are: each
    value's S draws are set to the predicted mean and std) are not independent, and the fair
    estimate is then too small (by about 2% for 16 antithetic draws, 4% for 16 independent
    ones). That is why :func:`uncertainty_metrics` scores a model by the closed-form CRPS of
    its mean and std, and reports this one beside it.

    Parameters
    ----------
    y : array (n, G)
    draws : array (n, S, G)
    fair : bool
        Average the pair term over the pairs of distinct, non-partner draws (with fewer than
        4 draws, over all pairs of distinct draws) instead of all S^2 ordered pairs.

    Returns
    -------
    np.ndarray
        (n, G). Computed in O(S log S) from sorted draws:
        sum_ij |x_i - x_j| = 2 sum_i (2i - S - 1) x_(i).
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.sort(np.asarray(draws, dtype=np.float64), axis=1)  # (n, S, G)
    s = x.shape[1]
    term1 = np.abs(x - y[:, None, :]).mean(1)  # (n, G)
    w = (2 * np.arange(1, s + 1) - s - 1).astype(np.float64)  # (S,)
    pair_sum = np.einsum("s,nsg->ng", w, x)  # (n, G) sum over pairs i < j of |x_i - x_j|
    if not fair:
        return term1 - pair_sum / s**2  # E|X - X'| / 2 with the S^2 ordered pairs
    n_pairs = s * (s - 1) / 2  # unordered pairs of distinct draws
    if s >= 4:  # leave the partners (2j, 2j + 1) out
        raw = np.asarray(draws, dtype=np.float64)  # (n, S, G) in the sampler's order
        half = s // 2
        pair_sum = pair_sum - np.abs(raw[:, 0 : 2 * half : 2] - raw[:, 1 : 2 * half : 2]).sum(1)
        n_pairs -= half
    return term1 - pair_sum / (2 * n_pairs)  # E|X - X'| / 2 over the pairs kept


def std_error_spearman(y, mean, std) -> dict[str, float | None]:
    """Spearman correlation between the predicted std and the absolute error.

    Returns the correlation pooled over all (sample, gene) pairs, the mean over genes of the
    per-gene correlation (within a gene, across samples), and ``gene_ceiling``: the pooled
    correlation that a std of one number per gene, that gene's root mean square error on these
    very samples, would reach. No model knows those errors, so it is an optimistic reference
    for ranking errors by gene alone; it depends on the mean's errors, so two models with
    different means have different ceilings, and a std above its ceiling also ranks errors
    within a gene.

    ``per_slide`` says which slides to trust: the Spearman correlation across samples between
    a sample's spread and its error size, both relative to each gene's scale (the mean over
    genes of std / the gene's mean std, against the root mean square over genes of
    error / the gene's RMS error). None for a std that is the same on every sample.
    """
    err = np.abs(np.asarray(y, dtype=np.float64) - mean)
    std = np.asarray(std, dtype=np.float64)

    def pooled(s: np.ndarray) -> float | None:
        if err.size > 2 and np.ptp(s) > 0 and np.ptp(err) > 0:  # undefined for a constant std
            r = stats.spearmanr(s.ravel(), err.ravel()).statistic
            return float(r) if np.isfinite(r) else None
        return None

    per_gene, _ = spearman(std, err)
    rms = np.broadcast_to(np.sqrt(np.mean(err**2, axis=0)), err.shape)  # (n, G)
    return {
        "pooled": pooled(std),
        "mean_per_gene": float(np.nanmean(per_gene)) if np.isfinite(per_gene).any() else None,
        "gene_ceiling": pooled(rms),
        "per_slide": _slide_ranking(std, err),
    }


def _slide_ranking(std: np.ndarray, err: np.ndarray) -> float | None:
    """Spearman over samples of the relative spread against the relative error size."""
    s_scale, e_scale = std.mean(axis=0), np.sqrt(np.mean(err**2, axis=0))  # (G,)
    ok = (s_scale > 0) & (e_scale > 0)
    if len(std) < 3 or not ok.any():
        return None
    s = (std[:, ok] / s_scale[ok]).mean(axis=1)  # (n,)
    e = np.sqrt(np.mean((err[:, ok] / e_scale[ok]) ** 2, axis=1))  # (n,)
    if np.ptp(s) <= 1e-9 * np.abs(s).max() or np.ptp(e) == 0:
        return None
    r = stats.spearmanr(s, e).statistic
    return float(r) if np.isfinite(r) else None


def _interval(mean, std, draws, level):
    if draws is not None:
        return draws_interval(draws, level, presorted=True)
    return gaussian_interval(mean, std, level)


def reliability_curve(
    y, *, mean=None, std=None, draws=None, levels: Sequence[float] = RELIABILITY_LEVELS
) -> dict[str, list[float]]:
    """Observed coverage of central intervals against their nominal level (a perfectly
    calibrated model lies on the diagonal)."""
    draws = None if draws is None else np.sort(np.asarray(draws), axis=1)
    observed = [coverage(y, *_interval(mean, std, draws, lv)) for lv in levels]
    return {"nominal": [float(v) for v in levels], "observed": observed}


def conformal_interval(mean, std, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Interval mean -/+ q std from a conformal multiplier q."""
    return mean - q * std, mean + q * std


def uncertainty_metrics(
    y,
    *,
    mean,
    std=None,
    draws=None,
    levels: Sequence[float] = LEVELS,
    conformal_q: np.ndarray | None = None,
) -> dict | None:
    """All uncertainty metrics of one set of predictions; None when there is no uncertainty.

    Parameters
    ----------
    y, mean, std : arrays (n, G)
    draws : array (n, S, G), optional
        When given, the intervals come from the draws' quantiles when there are at least
        ``MIN_DRAWS_FOR_QUANTILES`` draws; else from a Gaussian with ``std`` (default: the
        draws' std). ``crps_draws`` is then their fair CRPS (:func:`crps_draws`).
    conformal_q : array (n, len(levels)), optional
        Per-sample conformal multipliers (e.g. one row per fold's calibration, repeated for
        its test samples); adds ``coverage_conformal``.
    """
    if std is None and draws is None:
        return None
    y = np.asarray(y, dtype=np.float64)
    if std is None:
        std = np.asarray(draws).std(1, ddof=1)
    # quantiles of S draws cannot resolve a central level above (S - 1) / (S + 1)
    n_draws = 0 if draws is None else int(np.asarray(draws).shape[1])
    idraws = np.sort(draws, axis=1) if n_draws >= MIN_DRAWS_FOR_QUANTILES else None
    out: dict = {
        "interval_source": "draws" if idraws is not None else "gaussian",
        "n_draws": n_draws,
    }
    out["coverage"] = {f"{lv:g}": coverage(y, *_interval(mean, std, idraws, lv)) for lv in levels}
    out["mean_interval_width"] = {
        f"{lv:g}": float(np.mean(np.subtract(*_interval(mean, std, idraws, lv)[::-1])))
        for lv in levels
    }
    # the CRPS of the stated mean and std, for every model alike: draws rescaled to their
    # own mean and std (rnafm's) make the fair CRPS of the draws too small (crps_draws)
    out["crps"] = float(np.mean(crps_gaussian(y, mean, std)))
    out["crps_source"] = "gaussian"
    out["crps_gaussian"] = out["crps"]
    if draws is not None:
        out["crps_draws"] = float(np.mean(crps_draws(y, draws, fair=True)))
    out["mean_std"] = float(np.mean(std))
    out["std_abs_error_spearman"] = std_error_spearman(y, mean, std)
    rel = RELIABILITY_LEVELS
    out["reliability"] = {
        "nominal": [float(v) for v in rel],
        "observed": [coverage(y, *_interval(mean, std, idraws, lv)) for lv in rel],
    }
    if conformal_q is not None:
        q = np.asarray(conformal_q, dtype=np.float64)  # (n, L)
        cov = {}
        for j, lv in enumerate(levels):
            lo, hi = conformal_interval(mean, std, q[:, j : j + 1])
            cov[f"{lv:g}"] = coverage(y, lo, hi)
        out["coverage_conformal"] = cov
    return out
