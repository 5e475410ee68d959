"""Per-gene accuracy metrics, interval coverage and conformal multipliers, significance tests.

This module sits below every stage: training uses it for model selection and calibration on
its validation split, evaluation for its reports; each metric is defined here once.

All functions take ``y_true`` and ``y_pred`` as (n_samples, n_genes) arrays on the same scale
(log2(x+1) inside rnafm) and work column by column, vectorised. A gene whose truth or prediction
is constant has an undefined correlation: it gets NaN and is left out of means and rankings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "TOP_K",
    "constant_columns",
    "pearson",
    "per_gene_pcc",
    "mean_pcc",
    "coverage",
    "gaussian_multiplier",
    "conformal_quantiles",
    "conformal_multiplier",
    "crps_gaussian",
    "spearman",
    "rmse",
    "mae",
    "benjamini_hochberg",
    "steiger_test",
    "gene_metrics",
    "well_predicted",
    "top_k_summary",
    "summarize_genes",
]

TOP_K: tuple[int, ...] = (20, 50, 100, 200, 500, 1000)
R_THRESHOLD = 0.4


def _as2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def constant_columns(a: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """Columns of ``a`` (n, G) whose spread ``ss`` (G,), the root of their sum of squared
    deviations, is at rounding level (their correlation is undefined)."""
    scale = np.maximum(np.abs(a).max(0) if len(a) else 1.0, 1.0)
    return ss / np.sqrt(max(len(a), 1)) <= 1e-10 * scale


def _pearson_r(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-column Pearson r of float64 (n, G) arrays (NaN where a column is constant), and n."""
    xc = x - x.mean(0)  # (n, G)
    yc = y - y.mean(0)  # (n, G)
    sx = np.sqrt((xc**2).sum(0))  # (G,)
    sy = np.sqrt((yc**2).sum(0))  # (G,)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(0) / (sx * sy)  # (G,)
    r[constant_columns(x, sx) | constant_columns(y, sy)] = np.nan
    return np.clip(r, -1.0, 1.0), x.shape[0]


def pearson(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Per-column Pearson r and two-sided p-value (t-test with n - 2 df, as scipy.stats.pearsonr).

    Returns
    -------
    r, p : np.ndarray
        (n_genes,) each; NaN where a column is constant or n < 3.
    """
    r, n = _pearson_r(_as2d(y_true), _as2d(y_pred))
    if n < 3:
        return r, np.full_like(r, np.nan)
    df = n - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt(df / np.maximum(1.0 - r**2, 1e-300))
        p = 2.0 * stats.t.sf(np.abs(t), df)
    p[np.isnan(r)] = np.nan
    return r, p


def per_gene_pcc(pred, true) -> np.ndarray:
    """Pearson r across samples for every gene of (n, G) predictions and truth, without p-values.

    Returns float64 (G,); NaN where either column is constant.
    """
    return _pearson_r(_as2d(true), _as2d(pred))[0]


def mean_pcc(pred, true) -> float:
    """Mean per-gene PCC over genes with a defined correlation (0 when none)."""
    r = per_gene_pcc(pred, true)
    return float(np.nanmean(r)) if np.isfinite(r).any() else 0.0


def coverage(y, lower, upper) -> float:
    """Fraction of observations inside [lower, upper]."""
    y = np.asarray(y)
    return float(((y >= lower) & (y <= upper)).mean())


def gaussian_multiplier(level: float) -> float:
    """z such that mean +- z std is the central ``level`` interval of a Gaussian."""
    return float(stats.norm.ppf(0.5 + level / 2))


def conformal_quantiles(
    y_val, mean_val, std_val, levels: Sequence[float], *, min_std: float = 1e-12
) -> np.ndarray:
    """Split-conformal multipliers of the std, one per level, from a validation split.

    The nonconformity score is |y - mean| / max(std, min_std) pooled over samples and genes
    (non-finite scores dropped); the multiplier for level l is its ceil((m + 1) l)-th smallest
    value (m scores), so intervals mean -/+ q std cover at least l of exchangeable new data.
    NaN when there is no score.
    """
    score = (np.abs(np.asarray(y_val) - mean_val) / np.maximum(std_val, min_std)).ravel()
    score = np.sort(score[np.isfinite(score)])
    m = len(score)
    out = []
    for lv in levels:
        k = int(np.ceil((m + 1) * lv))
        out.append(float(score[min(k, m) - 1]) if m else np.nan)
    return np.asarray(out)


def conformal_multiplier(true, mean, std, level: float) -> float:
    """One split-conformal multiplier q (``mean +- q std`` covers ``level``), as used in training.

    The std is floored at 1e-8; without any score the Gaussian multiplier is returned.
    """
    q = float(conformal_quantiles(true, mean, std, [level], min_std=1e-8)[0])
    return gaussian_multiplier(level) if np.isnan(q) else q


def crps_gaussian(y, mean, std) -> np.ndarray:
    """Closed-form CRPS of N(mean, std^2) at y (Gneiting & Raftery 2007), elementwise."""
    y, mean, std = (np.asarray(a, dtype=np.float64) for a in (y, mean, std))
    std = np.maximum(std, 1e-12)
    z = (y - mean) / std
    return std * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def spearman(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Per-column Spearman rho and p-value (Pearson on average ranks, as scipy.stats.spearmanr)."""
    x = stats.rankdata(_as2d(y_true), axis=0)
    y = stats.rankdata(_as2d(y_pred), axis=0)
    return pearson(x, y)


def rmse(y_true, y_pred) -> np.ndarray:
    """Per-column root mean squared error (n_genes,)."""
    return np.sqrt(((_as2d(y_true) - _as2d(y_pred)) ** 2).mean(0))


def mae(y_true, y_pred) -> np.ndarray:
    """Per-column mean absolute error (n_genes,)."""
    return np.abs(_as2d(y_true) - _as2d(y_pred)).mean(0)


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaNs stay NaN and are not counted."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]  # step-up: monotone from the largest p down
    adj = np.empty(m)
    adj[order] = np.minimum(q, 1.0)
    out[ok] = adj
    return out


def steiger_test(
    r_ya, r_yb, r_ab, n: int, *, method: str = "williams"
) -> tuple[np.ndarray, np.ndarray]:
    """Test H0: corr(y, a) = corr(y, b) for two correlations sharing the variable y.

    ``method="williams"`` is Williams' t (df n - 3) as recommended by Steiger (1980) for this
    case and used by most "Steiger test" implementations (SEQUOIA's well-predicted genes);
    ``"steiger_z"`` is Steiger's Z on Fisher-transformed correlations with the pooled r.

    Returns
    -------
    stat, p : np.ndarray
        Test statistic (positive when r_ya > r_yb) and two-sided p-value, per gene.
    """
    r1, r2, r12 = (np.asarray(v, dtype=np.float64) for v in (r_ya, r_yb, r_ab))
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "williams":
            det = 1 - r1**2 - r2**2 - r12**2 + 2 * r1 * r2 * r12  # |R| of the 3x3 matrix
            rbar = (r1 + r2) / 2
            denom = 2 * (n - 1) / (n - 3) * det + rbar**2 * (1 - r12) ** 3
            stat = (r1 - r2) * np.sqrt((n - 1) * (1 + r12) / denom)
            p = 2 * stats.t.sf(np.abs(stat), n - 3)
        elif method == "steiger_z":
            rm2 = ((r1 + r2) / 2) ** 2
            psi = r12 * (1 - 2 * rm2) - 0.5 * rm2 * (1 - 2 * rm2 - r12**2)
            s = psi / (1 - rm2) ** 2  # covariance of the two Fisher z's times (n - 3)
            stat = (np.arctanh(r1) - np.arctanh(r2)) * np.sqrt((n - 3) / (2 - 2 * s))
            p = 2 * stats.norm.sf(np.abs(stat))
        else:
            raise ValueError(f"unknown method {method!r}; use 'williams' or 'steiger_z'")
    return stat, p


def gene_metrics(y_true, y_pred, genes: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-gene table: pearson_r, pearson_p, pearson_fdr (BH), spearman_r, spearman_p, rmse,
    mae, mean_true and rmse_over_mean (RMSE / mean true expression)."""
    y_true, y_pred = _as2d(y_true), _as2d(y_pred)
    r, p = pearson(y_true, y_pred)
    rho, prho = spearman(y_true, y_pred)
    mean_true = y_true.mean(0)
    e = rmse(y_true, y_pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(np.abs(mean_true) > 1e-12, e / mean_true, np.nan)
    df = pd.DataFrame(
        {
            "pearson_r": r,
            "pearson_p": p,
            "pearson_fdr": benjamini_hochberg(p),
            "spearman_r": rho,
            "spearman_p": prho,
            "rmse": e,
            "mae": mae(y_true, y_pred),
            "mean_true": mean_true,
            "rmse_over_mean": rel,
        },
        index=pd.Index(list(genes) if genes is not None else range(y_true.shape[1]), name="gene"),
    )
    return df


def well_predicted(
    y_true, y_pred, y_random, *, alpha: float = 0.05, fdr: float = 0.2
) -> pd.DataFrame:
    """SEQUOIA's well-predicted genes against a randomly initialised model of the same architecture.

    A gene is well predicted when r > 0 with Pearson p < ``alpha``, the model beats the random
    model on both r and RMSE, and Steiger's (Williams') test of r_model vs r_random between the
    dependent correlations has a BH-adjusted p-value < ``fdr``.

    Returns
    -------
    pandas.DataFrame
        Columns random_r, random_rmse, steiger_stat, steiger_p, steiger_fdr, well_predicted.
    """
    y_true, y_pred, y_random = _as2d(y_true), _as2d(y_pred), _as2d(y_random)
    n = y_true.shape[0]
    r, p = pearson(y_true, y_pred)
    r0, _ = pearson(y_true, y_random)
    r12, _ = pearson(y_pred, y_random)
    r12 = np.nan_to_num(r12, nan=0.0)  # a constant random model is independent of the model
    r0f = np.nan_to_num(r0, nan=0.0)
    e, e0 = rmse(y_true, y_pred), rmse(y_true, y_random)
    stat, sp = steiger_test(r, r0f, r12, n)
    q = benjamini_hochberg(sp)
    with np.errstate(invalid="ignore"):
        ok = (r > 0) & (p < alpha) & (r > r0f) & (e < e0) & (q < fdr)
    return pd.DataFrame(
        {
            "random_r": r0,
            "random_rmse": e0,
            "steiger_stat": stat,
            "steiger_p": sp,
            "steiger_fdr": q,
            "well_predicted": ok,
        }
    )


def top_k_summary(
    values: np.ndarray, ranking: np.ndarray, ks: Sequence[int] = TOP_K
) -> dict[str, float | None]:
    """Mean of ``values`` over the top-k genes by ``ranking`` (descending; NaNs ranked last).

    Returns ``{"top_20": ..., ...}``; a k larger than the number of ranked genes gives None.
    """
    values = np.asarray(values, dtype=np.float64)
    rank_key = np.where(np.isnan(ranking), -np.inf, ranking)
    order = np.argsort(-rank_key, kind="stable")
    order = order[~np.isnan(values[order]) & np.isfinite(rank_key[order])]
    out: dict[str, float | None] = {}
    for k in ks:
        out[f"top_{k}"] = float(values[order[:k]].mean()) if len(order) >= k else None
    return out


def _nanmean(a) -> float | None:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else None


def summarize_genes(
    table: pd.DataFrame,
    *,
    val_r: np.ndarray | None = None,
    ks: Sequence[int] = TOP_K,
) -> dict:
    """Summary of a per-gene table from :func:`gene_metrics` (plus optional well-predicted columns).

    The top-k means are given twice when ``val_r`` (per-gene r on a validation split) is given:
    ``ranked_by_validation`` (honest: genes chosen without the test data) and
    ``ranked_by_test`` (what papers usually report; optimistic because the test data pick
    the genes).
    """
    r = table["pearson_r"].to_numpy()
    out = {
        "n_genes": int(len(table)),
        "n_genes_defined": int(np.isfinite(r).sum()),
        "mean_pearson_r": _nanmean(r),
        "median_pearson_r": float(np.nanmedian(r)) if np.isfinite(r).any() else None,
        "mean_spearman_r": _nanmean(table["spearman_r"]),
        "mean_rmse": _nanmean(table["rmse"]),
        "mean_mae": _nanmean(table["mae"]),
        "mean_rmse_over_mean": _nanmean(table["rmse_over_mean"]),
        "n_r_above_0.4": int(np.nansum(r > R_THRESHOLD)),
        "n_significant_fdr_0.05": int(np.nansum(table["pearson_fdr"].to_numpy() < 0.05)),
        "top_k_pearson_r": {"ranked_by_test": top_k_summary(r, r, ks)},
    }
    if val_r is not None:
        out["top_k_pearson_r"]["ranked_by_validation"] = top_k_summary(r, np.asarray(val_r), ks)
    if "well_predicted" in table:
        out["n_well_predicted"] = int(table["well_predicted"].sum())
    return out
