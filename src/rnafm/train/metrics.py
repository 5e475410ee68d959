"""Small validation metrics used for model selection and calibration."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["per_gene_pcc", "coverage", "conformal_multiplier", "gaussian_multiplier"]


def per_gene_pcc(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation across samples for every gene.

    Parameters
    ----------
    pred, true
        (n, G) predictions and truth.

    Returns
    -------
    np.ndarray
        float64 (G,); NaN where either column is constant.
    """
    p = np.asarray(pred, dtype=np.float64)  # (n, G)
    t = np.asarray(true, dtype=np.float64)  # (n, G)
    pc, tc = p - p.mean(axis=0), t - t.mean(axis=0)  # (n, G)
    den = np.sqrt((pc**2).sum(axis=0) * (tc**2).sum(axis=0))  # (G,)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * tc).sum(axis=0) / den  # (G,)
    r[den <= 1e-12] = np.nan
    return r


def mean_pcc(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean per-gene PCC over genes with a defined correlation (0 when none)."""
    r = per_gene_pcc(pred, true)
    return float(np.nanmean(r)) if np.isfinite(r).any() else 0.0


def coverage(true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of true values (n, G) inside [lower, upper]."""
    t = np.asarray(true)
    return float(np.mean((t >= lower) & (t <= upper)))


def gaussian_multiplier(level: float) -> float:
    """z such that mean +- z std is the central ``level`` interval of a Gaussian."""
    return float(norm.ppf(0.5 + level / 2))


def conformal_multiplier(
    true: np.ndarray, mean: np.ndarray, std: np.ndarray, level: float
) -> float:
    """Split-conformal multiplier q: ``mean +- q std`` covers ``level`` of calibration values.

    The score is ``|true - mean| / std``; q is its ``ceil((m + 1) level) / m`` empirical
    quantile over all m (slide, gene) pairs.
    """
    s = np.abs(np.asarray(true) - mean) / np.maximum(std, 1e-8)  # (n, G)
    s = np.sort(s.ravel())
    m = s.size
    if m == 0:
        return gaussian_multiplier(level)
    k = min(m, int(np.ceil((m + 1) * level))) - 1
    return float(s[max(k, 0)])
