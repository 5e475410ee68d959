"""Ridge prior on mean-pooled cluster features, with cross-fitted residuals.

With ``prior.kind = ridge`` a linear ridge regression from the mean-pooled tile features to the
z-scored expression is fitted first and the flow models what it leaves: the residual, divided by
its per-gene standard deviation. Training residuals come from out-of-fold (patient-grouped)
ridge predictions, so their scale matches the residuals the flow meets at prediction time.

The ridge penalty is chosen per gene from a grid by exact leave-one-out error, computed in
closed form from one SVD of the centred design (Golub, Heath & Wahba 1979):
``e_loo = (y - y_hat) / (1 - h_ii - 1/n)`` with ``h`` the hat matrix of the centred problem.

Besides the mean-pooled features, a slide can be summarised by its tissue composition: the
share of its tiles in each of C tissue codes (a size-weighted k-means codebook of the training
slides' cluster means, :func:`fit_codebook`, :func:`composition`). Where expression is a
mixture of tissue types, shares are linear in it while the mean of nonlinear tile features is
not; a linear ridge on the shares competes with the others on the same out-of-fold criterion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "RidgePrior",
    "pool_clusters",
    "composition",
    "fit_codebook",
    "fit_prior",
    "fit_ridge",
    "cross_fit_ridge",
    "refit_ridge",
    "median_gamma",
]

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
    from rnafm.cohort.dataset import mean_tile_features

    return mean_tile_features(clusters, sizes)


def composition(clusters: np.ndarray, sizes: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Share of each slide's tiles in each tissue code: (n, C), rows summing to 1.

    Every cluster mean goes to its nearest code (squared Euclidean distance) with its tiles;
    slides whose sizes are all zero count their clusters equally (as :func:`pool_clusters`).
    """
    c = np.asarray(clusters, dtype=np.float64)  # (n, K, D)
    w = np.asarray(sizes, dtype=np.float64)  # (n, K)
    total = w.sum(axis=1, keepdims=True)  # (n, 1)
    w = np.where(total > 0, w / np.maximum(total, 1e-12), 1.0 / w.shape[1])  # (n, K)
    cb = np.asarray(codebook, dtype=np.float64)  # (C, D)
    d = (cb**2).sum(1)[None, None, :] - 2.0 * c @ cb.T  # (n, K, C) distance up to |x|^2
    code = d.argmin(axis=2)  # (n, K)
    out = np.zeros((c.shape[0], cb.shape[0]))  # (n, C)
    np.add.at(out, (np.arange(c.shape[0])[:, None], code), w)
    return out


def fit_codebook(
    clusters: np.ndarray, sizes: np.ndarray, n_codes: int, *, seed: int, max_points: int = 8192
) -> np.ndarray:
    """Tissue codes (C, D): k-means of the slides' non-empty cluster means, weighted by size
    (on a random subset of ``max_points`` of them when there are more)."""
    from sklearn.cluster import KMeans

    c = np.asarray(clusters, dtype=np.float64)
    w = np.asarray(sizes, dtype=np.float64)
    keep = w > 0  # (n, K)
    if not keep.any():  # no sizes at all: every cluster mean counts once
        keep, w = np.ones_like(keep), np.ones_like(w)
    pts, pw = c[keep], w[keep]  # (m, D), (m,)
    if len(pts) > max_points:
        pick = np.random.default_rng(seed).choice(len(pts), max_points, replace=False)
        pts, pw = pts[pick], pw[pick]
    n_codes = int(min(n_codes, len(pts)))
    km = KMeans(n_codes, n_init=2, random_state=seed).fit(pts, sample_weight=pw)
    return km.cluster_centers_.astype(np.float64)  # (C, D)


@dataclass
class RidgePrior:
    """A fitted (kernel) ridge map from a slide summary to z-scored expression (G,).

    The summary is the mean-pooled features (D,), or with a ``codebook`` the slide's tissue
    composition (C,) (:meth:`pool`). ``predict(x) = phi(x) @ weights + y_mean`` with
    ``phi(x) = x - x_mean`` (linear, weights (D, G)) or the centred RBF kernel between x and
    the training slides (rbf, weights (n, G)).
    """

    x_mean: np.ndarray  # float64 (D,)
    weights: np.ndarray  # float32 (D, G) linear, (n, G) rbf
    y_mean: np.ndarray  # float64 (G,)
    alphas: np.ndarray  # float64 (G,) chosen penalty per gene (absolute)
    res_std: np.ndarray  # float64 (G,) std of the cross-fitted residual per gene
    rank: int = 0  # rank of the reduced-rank projection (0: full rank)
    gamma: float = 0.0  # RBF inverse width; 0 for the linear ridge
    anchors: np.ndarray | None = None  # float64 (n, D) training features (rbf only)
    k_col_mean: np.ndarray | None = None  # float64 (n,) column means of the training kernel
    k_mean: float = 0.0  # mean of the training kernel
    codebook: np.ndarray | None = None  # float64 (C, D) tissue codes: composition summary

    @property
    def kernel(self) -> str:
        """``linear``, ``rbf`` or ``composition`` (linear on the tissue shares)."""
        if self.codebook is not None:
            return "composition"
        return "rbf" if self.gamma > 0 else "linear"

    def describe(self) -> dict:
        """What was chosen, for records: kernel, rank (0: full), RBF gamma, number of codes."""
        codes = 0 if self.codebook is None else int(len(self.codebook))
        return {"kernel": self.kernel, "rank": int(self.rank), "gamma": float(self.gamma),
                "codes": codes}  # fmt: skip

    def pool(self, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """The slide summary this prior reads: tissue shares (n, C) with a codebook, else the
        mean-pooled features (n, D)."""
        if self.codebook is not None:
            return composition(clusters, sizes, self.codebook)
        return pool_clusters(clusters, sizes)

    def predict_slides(self, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Predicted z-scores (n, G) of slides given as cluster means (n, K, D) and sizes."""
        return self.predict(self.pool(clusters, sizes))

    def features(self, pooled: np.ndarray) -> np.ndarray:
        """phi(x): centred features (m, D) or centred kernel columns (m, n)."""
        x = np.asarray(pooled, dtype=np.float64)  # (m, D)
        if self.gamma <= 0:
            return x - self.x_mean  # (m, D)
        k = _rbf(x, self.anchors, self.gamma)  # (m, n)
        return k - k.mean(axis=1, keepdims=True) - self.k_col_mean + self.k_mean  # (m, n)

    def predict(self, pooled: np.ndarray) -> np.ndarray:
        """Predicted z-scores (m, G) for mean-pooled features (m, D)."""
        return self.features(pooled) @ self.weights.astype(np.float64) + self.y_mean  # (m, G)

    def save(self, path: Path) -> None:
        """Write the prior as ``.npz`` atomically."""
        from rnafm._io import atomic_path

        extra = {}
        if self.gamma > 0:
            extra = {"anchors": self.anchors, "k_col_mean": self.k_col_mean}
        if self.codebook is not None:
            extra["codebook"] = self.codebook
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(
                f,
                x_mean=self.x_mean,
                weights=self.weights,
                y_mean=self.y_mean,
                alphas=self.alphas,
                res_std=self.res_std,
                rank=np.asarray(self.rank),
                gamma=np.asarray(self.gamma),
                k_mean=np.asarray(self.k_mean),
                **extra,
            )

    @classmethod
    def load(cls, path: Path) -> RidgePrior:
        """Read a prior written by :meth:`save`."""
        with np.load(path) as z:
            keys = ("x_mean", "weights", "y_mean", "alphas", "res_std")
            out = cls(**{k: z[k] for k in keys})
            out.rank = int(z["rank"]) if "rank" in z else 0
            out.gamma = float(z["gamma"]) if "gamma" in z else 0.0
            out.k_mean = float(z["k_mean"]) if "k_mean" in z else 0.0
            if out.gamma > 0:
                out.anchors, out.k_col_mean = z["anchors"], z["k_col_mean"]
            out.codebook = z["codebook"] if "codebook" in z else None
        return out


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """exp(-gamma |a_i - b_j|^2) (m, n)."""
    d = (a**2).sum(1)[:, None] - 2.0 * a @ b.T + (b**2).sum(1)[None, :]  # (m, n)
    return np.exp(-gamma * np.maximum(d, 0.0))


def median_gamma(x: np.ndarray) -> float:
    """1 / (2 median squared distance) between rows of x (the median heuristic)."""
    x = np.asarray(x, dtype=np.float64)
    d = (x**2).sum(1)[:, None] - 2.0 * x @ x.T + (x**2).sum(1)[None, :]  # (n, n)
    off = d[~np.eye(len(x), dtype=bool)]
    med = float(np.median(off)) if off.size else 1.0
    return 1.0 / (2.0 * max(med, 1e-12))


def fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    rel_alphas: tuple[float, ...],
    *,
    gamma: float = 0.0,
    residual_std: bool = True,
) -> RidgePrior:
    """Ridge from ``x`` (n, D) to ``y`` (n, G), per-gene penalty by closed-form leave-one-out.

    Penalties are ``rel_alphas`` times the mean non-zero eigenvalue of the centred Gram (or
    kernel) matrix, so the grid does not depend on the feature scale. With ``gamma`` > 0 this
    is kernel ridge with an RBF kernel. ``res_std`` is left at the LOO residual std;
    :func:`cross_fit_ridge` replaces it with the grouped out-of-fold one.
    """
    x = np.asarray(x, dtype=np.float64)  # (n, D)
    y = np.asarray(y, dtype=np.float64)  # (n, G)
    n = x.shape[0]
    x_mean = x.mean(axis=0)  # (D,)
    y_mean = y.mean(axis=0)  # (G,)
    xc, yc = x - x_mean, y - y_mean  # (n, D), (n, G)
    prior = RidgePrior(x_mean=x_mean, weights=np.zeros(0), y_mean=y_mean, alphas=np.zeros(0),
                       res_std=np.ones(y.shape[1]))  # fmt: skip
    if gamma > 0:
        k = _rbf(x, x, gamma)  # (n, n)
        prior.gamma, prior.anchors = gamma, x
        prior.k_col_mean, prior.k_mean = k.mean(axis=0), float(k.mean())
        kc = k - k.mean(axis=0)[None] - k.mean(axis=1)[:, None] + k.mean()  # (n, n)
        lam, u = np.linalg.eigh((kc + kc.T) / 2)  # (n,), (n, n)
        keep = lam > max(lam.max(initial=0.0), 0.0) * 1e-10
        u, s2 = u[:, keep], lam[keep]  # (n, r), (r,)
    else:
        u, s, vt = np.linalg.svd(xc, full_matrices=False)  # (n, r), (r,), (r, D)
        keep = s > s.max(initial=0.0) * 1e-8 if s.size else s > 0
        u, s, vt = u[:, keep], s[keep], vt[keep]
        s2 = s**2  # (r,)
    scale = float(s2.mean()) if s2.size else 1.0
    grid = np.asarray(rel_alphas, dtype=np.float64) * scale  # (A,)
    uty = u.T @ yc  # (r, G)
    u2 = u**2  # (n, r)
    best_err = np.full(y.shape[1], np.inf)  # (G,)
    best = np.zeros(y.shape[1], dtype=np.int64)  # (G,)
    for a_i, alpha in enumerate(grid):
        f = s2 / (s2 + alpha)  # (r,)
        resid = u @ (f[:, None] * uty)  # (n, G) fitted values
        np.subtract(yc, resid, out=resid)  # (n, G) residuals
        h = u2 @ f + 1.0 / n  # (n,) leverage incl. intercept
        resid *= (1.0 / np.maximum(1.0 - h, 1e-6))[:, None]  # (n, G) leave-one-out residuals
        err = np.einsum("ng,ng->g", resid, resid) / n  # (G,) mean squared LOO error
        better = err < best_err
        best_err[better], best[better] = err[better], a_i
    alphas = grid[best]  # (G,)
    shrink = s2[:, None] / (s2[:, None] + alphas[None, :])  # (r, G) per-gene filter factors
    if gamma > 0:  # dual coefficients A = U diag(1 / (lambda + alpha_g)) U^T y
        weights = u @ (uty / (s2[:, None] + alphas[None, :]))  # (n, G)
    else:  # W = V diag(s / (s^2 + alpha_g)) U^T y, gene by gene through broadcasting
        weights = vt.T @ ((s[:, None] / (s2[:, None] + alphas[None, :])) * uty)  # (D, G)
    prior.weights = weights.astype(np.float32)
    prior.alphas = alphas
    if residual_std and n > 1:  # LOO residuals at each gene's chosen penalty
        loo = yc - u @ (shrink * uty)  # (n, G)
        loo /= np.maximum(1.0 - (u2 @ shrink + 1.0 / n), 1e-6)  # (n, G)
        prior.res_std = loo.std(axis=0)  # (G,)
    return prior


def _group_folds(groups: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold index (n,) per sample; groups (patients) never straddle folds."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    fold_of = {uniq[j]: i % folds for i, j in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)


def _top_directions(fitted: np.ndarray, rank: int) -> np.ndarray:
    """Top ``rank`` right singular vectors (G, r) of centred fitted values (n, G).

    Computed from the eigenvectors of the (n, n) Gram matrix (``fc fc^T = U S^2 U^T``, so
    ``V = fc^T U / S``), which costs one n^2 G product instead of an SVD of the wide (n, G)
    matrix. Directions with a zero singular value (rank > the matrix's rank) are returned as
    zero columns: fitted values and predictions have no component along them.
    """
    fc = fitted - fitted.mean(axis=0)  # (n, G)
    lam, w = np.linalg.eigh(fc @ fc.T)  # (n,), (n, n) ascending
    lam, w = lam[::-1][:rank], w[:, ::-1][:, :rank]  # (r,), (n, r) largest first
    ok = lam > max(lam.max(initial=0.0), 0.0) * 1e-12  # (r,)
    scale = np.where(ok, 1.0 / np.sqrt(np.where(ok, lam, 1.0)), 0.0)  # (r,) 1 / S
    return fc.T @ (w * scale[None, :])  # (G, r)


def _mean_pcc(pred: np.ndarray, true: np.ndarray) -> float:
    from rnafm.metrics import mean_pcc

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
    rbf_widths: tuple[float, ...] = (),
    compositions: tuple[tuple[np.ndarray, np.ndarray], ...] = (),
) -> tuple[RidgePrior, np.ndarray]:
    """Fit the ridge prior on all of ``x`` and return it with out-of-fold predictions.

    With ``ranks``, the ridge predictions are also projected onto the top-r principal
    directions of the ridge fit (reduced-rank ridge, a denoiser shared across genes); r is
    chosen among ``ranks`` and "full" by the out-of-fold mean per-gene PCC. With ``rbf_widths``,
    kernel ridge with RBF kernels (gamma = factor x the median heuristic) competes with the
    linear ridge on the same out-of-fold criterion, and so does a linear ridge on each of
    ``compositions``: (tissue shares (n, C), their codebook (C, D)) pairs (:func:`composition`);
    the prior fitted on shares carries its codebook. Ties go to the linear ridge on ``x``.

    Returns
    -------
    prior
        Ridge fitted on all samples; ``res_std`` is the per-gene std of the out-of-fold residual.
    oof
        float64 (n, G) out-of-fold predictions (patient-grouped folds).
    """
    y = np.asarray(y, dtype=np.float64)  # (n, G)
    x = np.asarray(x, dtype=np.float64)  # (n, D)
    folds = min(folds, len(set(groups)))
    # candidates: (name, summary (n, D'), gamma, codebook)
    cands = [("linear", x, 0.0, None)]
    cands += [(f"rbf{g:.2g}", x, g, None) for g in (f * median_gamma(x) for f in rbf_widths)]
    cands += [
        (f"composition{len(b)}", np.asarray(sh, np.float64), 0.0, b) for sh, b in compositions
    ]
    if folds < 2:
        logger.warning("too few patients for cross-fitted ridge residuals; using in-sample fit")
        full = fit_ridge(x, y, rel_alphas)
        return full, full.predict(x)
    fold = _group_folds(groups, folds, seed)
    max_rank = min(int((fold != 0).sum()) - 1, y.shape[1])
    ranks = tuple(r for r in sorted(set(ranks)) if 0 < r < max_rank)
    scores: dict[tuple[int, int], float] = {}
    best_oof: dict[tuple[int, int], np.ndarray] = {}
    for i, (_, xi, gamma, _) in enumerate(cands):
        oof = {r: np.zeros_like(y) for r in (*ranks, 0)}  # rank 0: full rank
        for f in range(folds):
            te = fold == f
            part = fit_ridge(xi[~te], y[~te], rel_alphas, gamma=gamma, residual_std=False)
            pred = part.predict(xi[te])  # (m, G)
            oof[0][te] = pred
            if ranks:
                v = _top_directions(part.predict(xi[~te]), max(ranks))  # (G, r_max)
                mu = part.y_mean  # (G,)
                for r in ranks:
                    oof[r][te] = mu + ((pred - mu) @ v[:, :r]) @ v[:, :r].T  # (m, G)
        for r, p in oof.items():
            scores[(i, r)] = _mean_pcc(p, y)
        key = max(oof, key=lambda r: scores[(i, r)])
        best_oof[(i, key)] = oof[key]
    i, rank = max(best_oof, key=lambda key: (scores[key], key[0] == 0, key[1] == 0))
    name, xi, gamma, codebook = cands[i]
    logger.info(
        "ridge prior: out-of-fold PCC %s; using %s, %s",
        {f"{cands[j][0]}/{r or 'full'}": round(v, 4) for (j, r), v in scores.items()},
        f"rbf (gamma {gamma:.3g})" if gamma else name,
        "full rank" if rank == 0 else f"rank {rank}",
    )
    full = fit_ridge(xi, y, rel_alphas, gamma=gamma)
    full.codebook = codebook
    if rank:
        v = _top_directions(full.predict(xi), rank)  # (G, r)
        full.weights = ((full.weights.astype(np.float64) @ v) @ v.T).astype(np.float32)
        full.rank = rank
    oof = best_oof[(i, rank)]
    full.res_std = np.maximum((y - oof).std(axis=0), 1e-3)  # (G,)
    return full, oof


def fit_prior(
    clusters: np.ndarray, sizes: np.ndarray, z: np.ndarray, groups: list[str], config, *, seed: int
) -> tuple[RidgePrior, np.ndarray]:
    """:func:`cross_fit_ridge` of slides (cluster means (n, K, D), sizes (n, K)) with the
    settings of a :class:`rnafm.training.config.PriorConfig`: the mean-pooled features, RBF
    kernels on them, and the tissue shares of each of ``config.composition_codes`` codebooks
    fitted on these slides (unsupervised: no expression is used)."""
    codes = config.composition_codes if len(set(groups)) >= 2 else ()  # no folds, no choice
    books = [fit_codebook(clusters, sizes, c, seed=seed) for c in codes]
    return cross_fit_ridge(
        pool_clusters(clusters, sizes),
        z,
        groups,
        rel_alphas=config.alphas,
        folds=config.folds,
        seed=seed,
        ranks=config.ranks,
        rbf_widths=config.rbf_widths,
        compositions=tuple((composition(clusters, sizes, b), b) for b in books),
    )


def refit_ridge(prior: RidgePrior, x: np.ndarray, y: np.ndarray, rel_alphas) -> RidgePrior:
    """Refit ``prior`` on more slides (e.g. training + validation) with its kernel and rank.

    ``x`` is the slides' summary as ``prior.pool`` gives it. The kernel width, codebook, rank
    and residual scale are kept (they were chosen, and the flow and the interval calibrated,
    with them); only the ridge itself sees the extra slides.
    """
    new = fit_ridge(x, y, rel_alphas, gamma=prior.gamma)
    new.codebook = prior.codebook
    if prior.rank:
        v = _top_directions(new.predict(x), prior.rank)  # (G, r)
        new.weights = ((new.weights.astype(np.float64) @ v) @ v.T).astype(np.float32)
        new.rank = prior.rank
    new.res_std = prior.res_std
    return new
