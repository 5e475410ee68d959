"""Ridge prior on mean-pooled cluster features, with cross-fitted residuals.

With ``prior.kind = ridge`` a linear ridge regression from the mean-pooled tile features to the
z-scored expression is fitted first and the flow models what it leaves: the residual, divided by
its per-gene standard deviation. Training residuals come from out-of-fold (patient-grouped)
ridge predictions, so their scale matches the residuals the flow meets at prediction time.

The ridge penalty is chosen per gene from a grid by exact leave-one-out error, computed in
closed form from one SVD of the centred design (Golub, Heath & Wahba 1979):
``e_loo = (y - y_hat) / (1 - h_ii - 1/n)`` with ``h`` the hat matrix of the centred problem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RidgePrior", "pool_clusters", "fit_ridge", "cross_fit_ridge"]

logger = logging.getLogger(__name__)


def pool_clusters(clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Size-weighted mean of cluster means: the mean of the slide's tile features.

    Parameters
    ----------
    clusters
        float32 (n, K, D) cluster means.
    sizes
        float32 (n, K) tiles per cluster (0 for padding rows).

    Returns
    -------
    np.ndarray
        float64 (n, D) mean-pooled features; slides whose sizes are all zero use the plain mean.
    """
    w = np.asarray(sizes, dtype=np.float64)  # (n, K)
    total = w.sum(axis=1, keepdims=True)  # (n, 1)
    w = np.where(total > 0, w / np.maximum(total, 1e-12), 1.0 / w.shape[1])  # (n, K)
    return np.einsum("nk,nkd->nd", w, np.asarray(clusters, dtype=np.float64))  # (n, D)


@dataclass
class RidgePrior:
    """A fitted ridge map from mean-pooled features (D,) to z-scored expression (G,)."""

    x_mean: np.ndarray  # float64 (D,)
    weights: np.ndarray  # float32 (D, G)
    y_mean: np.ndarray  # float64 (G,)
    alphas: np.ndarray  # float64 (G,) chosen penalty per gene (absolute)
    res_std: np.ndarray  # float64 (G,) std of the cross-fitted residual per gene
    rank: int = 0  # rank of the reduced-rank projection (0: full rank)

    def predict(self, pooled: np.ndarray) -> np.ndarray:
        """Predicted z-scores (n, G) for mean-pooled features (n, D)."""
        xc = np.asarray(pooled, dtype=np.float64) - self.x_mean  # (n, D)
        return (xc @ self.weights + self.y_mean).astype(np.float64)  # (n, G)

    def save(self, path: Path) -> None:
        """Write the prior as ``.npz`` atomically."""
        from rnafm._io import atomic_path

        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(
                f,
                x_mean=self.x_mean,
                weights=self.weights,
                y_mean=self.y_mean,
                alphas=self.alphas,
                res_std=self.res_std,
                rank=np.asarray(self.rank),
            )

    @classmethod
    def load(cls, path: Path) -> RidgePrior:
        """Read a prior written by :meth:`save`."""
        with np.load(path) as z:
            keys = ("x_mean", "weights", "y_mean", "alphas", "res_std")
            return cls(**{k: z[k] for k in keys}, rank=int(z["rank"]) if "rank" in z else 0)


def fit_ridge(x: np.ndarray, y: np.ndarray, rel_alphas: tuple[float, ...]) -> RidgePrior:
    """Ridge from ``x`` (n, D) to ``y`` (n, G), per-gene penalty by closed-form leave-one-out.

    Penalties are ``rel_alphas`` times the mean non-zero eigenvalue of the centred Gram matrix,
    so the grid does not depend on the feature scale. ``res_std`` is left at the LOO residual
    std; :func:`cross_fit_ridge` replaces it with the grouped out-of-fold one.
    """
    x = np.asarray(x, dtype=np.float64)  # (n, D)
    y = np.asarray(y, dtype=np.float64)  # (n, G)
    n = x.shape[0]
    x_mean = x.mean(axis=0)  # (D,)
    y_mean = y.mean(axis=0)  # (G,)
    xc, yc = x - x_mean, y - y_mean  # (n, D), (n, G)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)  # (n, r), (r,), (r, D)
    keep = s > s.max(initial=0.0) * 1e-8 if s.size else s > 0
    u, s, vt = u[:, keep], s[keep], vt[keep]
    s2 = s**2  # (r,)
    scale = float(s2.mean()) if s2.size else 1.0
    grid = np.asarray(rel_alphas, dtype=np.float64) * scale  # (A,)
    uty = u.T @ yc  # (r, G)
    best_err = np.full(y.shape[1], np.inf)  # (G,)
    best = np.zeros(y.shape[1], dtype=np.int64)  # (G,)
    best_loo = np.zeros_like(yc)  # (n, G)
    for a_i, alpha in enumerate(grid):
        f = s2 / (s2 + alpha)  # (r,)
        fitted = u @ (f[:, None] * uty)  # (n, G)
        h = (u**2) @ f + 1.0 / n  # (n,) leverage incl. intercept
        loo = (yc - fitted) / np.maximum(1.0 - h, 1e-6)[:, None]  # (n, G)
        err = (loo**2).mean(axis=0)  # (G,)
        better = err < best_err
        best_err[better], best[better] = err[better], a_i
        best_loo[:, better] = loo[:, better]
    alphas = grid[best]  # (G,)
    # W = V diag(s / (s^2 + alpha_g)) U^T y, gene by gene through broadcasting
    coef = (s[:, None] / (s2[:, None] + alphas[None, :])) * uty  # (r, G)
    weights = (vt.T @ coef).astype(np.float32)  # (D, G)
    res_std = best_loo.std(axis=0) if n > 1 else np.ones(y.shape[1])  # (G,)
    return RidgePrior(x_mean=x_mean, weights=weights, y_mean=y_mean, alphas=alphas, res_std=res_std)


def _group_folds(groups: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold index (n,) per sample; groups (patients) never straddle folds."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    fold_of = {uniq[j]: i % folds for i, j in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)


def _top_directions(fitted: np.ndarray, rank: int) -> np.ndarray:
    """Top ``rank`` right singular vectors (G, r) of centred fitted values (n, G)."""
    fc = fitted - fitted.mean(axis=0)  # (n, G)
    _, _, vt = np.linalg.svd(fc, full_matrices=False)  # (r_max, G)
    return vt[:rank].T  # (G, r)


def _mean_pcc(pred: np.ndarray, true: np.ndarray) -> float:
    from rnafm.train.metrics import mean_pcc

    return mean_pcc(pred, true)


def cross_fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    *,
    rel_alphas: tuple[float, ...],
    folds: int,
    seed: int,
    ranks: tuple[int, ...] = (),
) -> tuple[RidgePrior, np.ndarray]:
    """Fit the ridge prior on all of ``x`` and return it with out-of-fold predictions.

    With ``ranks``, the ridge predictions are also projected onto the top-r principal
    directions of the ridge fit (reduced-rank ridge, a denoiser shared across genes); r is
    chosen among ``ranks`` and "full" by the out-of-fold mean per-gene PCC.

    Returns
    -------
    prior
        Ridge fitted on all samples; ``res_std`` is the per-gene std of the out-of-fold residual.
    oof
        float64 (n, G) out-of-fold predictions (patient-grouped folds).
    """
    y = np.asarray(y, dtype=np.float64)  # (n, G)
    x = np.asarray(x, dtype=np.float64)  # (n, D)
    n_groups = len(set(groups))
    folds = min(folds, n_groups)
    full = fit_ridge(x, y, rel_alphas)
    if folds < 2:
        logger.warning("too few patients for cross-fitted ridge residuals; using in-sample fit")
        return full, full.predict(x)
    fold = _group_folds(groups, folds, seed)
    max_rank = min(int((fold != 0).sum()) - 1, y.shape[1])
    ranks = tuple(r for r in sorted(set(ranks)) if 0 < r < max_rank)
    oof = {r: np.zeros_like(y) for r in (*ranks, 0)}  # rank 0: full rank
    for f in range(folds):
        te = fold == f
        part = fit_ridge(x[~te], y[~te], rel_alphas)
        pred = part.predict(x[te])  # (m, G)
        oof[0][te] = pred
        if ranks:
            v = _top_directions(part.predict(x[~te]), max(ranks))  # (G, r_max)
            mu = part.y_mean  # (G,)
            for r in ranks:
                oof[r][te] = mu + ((pred - mu) @ v[:, :r]) @ v[:, :r].T  # (m, G)
    scores = {r: _mean_pcc(p, y) for r, p in oof.items()}
    rank = max(scores, key=lambda r: (scores[r], r == 0))
    logger.info(
        "ridge prior: out-of-fold PCC by rank %s; using %s",
        {("full" if r == 0 else r): round(v, 4) for r, v in scores.items()},
        "full rank" if rank == 0 else f"rank {rank}",
    )
    if rank:
        v = _top_directions(full.predict(x), rank)  # (G, r)
        full.weights = ((full.weights.astype(np.float64) @ v) @ v.T).astype(np.float32)  # (D, G)
        full.rank = rank
    full.res_std = np.maximum((y - oof[rank]).std(axis=0), 1e-3)  # (G,)
    return full, oof[rank]
