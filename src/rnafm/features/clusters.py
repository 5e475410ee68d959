"""K-means cluster means of a slide's tile features, cached beside the feature files.

A slide is summarised by K cluster means (K, D) and the number of tiles in each cluster (K,).
The k-means here is a seeded, batched Lloyd's algorithm with k-means++ initialisation, written
to cope with what real slides throw at it:

- fewer tiles than clusters (N < K): every tile is its own cluster, the remaining rows are zero
  padding with size 0;
- duplicate tiles (fewer distinct rows than K): clusters are the distinct rows, rest padded;
- clusters that empty during the iterations are re-seeded on the tiles farthest from their
  centre; any cluster still empty at the end is reported with size 0 and a zero mean;
- large slides: the centres are fitted on a seeded subsample of at most ``fit_tiles`` tiles
  (k-means++ seeding on at most 20 K of them), then every tile is assigned to its nearest centre
  and the means and sizes are computed over all tiles.

Rows are sorted by decreasing size (ties by the first feature) so the output does not depend on
the initialisation order beyond the partition itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnafm.errors import InputError

__all__ = ["ClusterConfig", "SlideClusters", "cluster_features", "load_clusters", "CACHE_DIR"]

logger = logging.getLogger(__name__)

CACHE_DIR = ".rnafm_cache"
_CACHE_VERSION = 1


class ClusterConfig(BaseModel):
    """How a slide's tile features are summarised into K cluster means."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(100, ge=1, le=100_000, description="Number of k-means clusters per slide (K).")
    seed: int = Field(0, ge=0, description="Seed of the k-means initialisation.")
    max_iter: int = Field(100, ge=1, le=10_000, description="Maximum Lloyd iterations.")
    fit_tiles: int | None = Field(
        8192,
        ge=1,
        description="Fit the centres on at most this many tiles (seeded subsample), then assign "
        "all tiles; None fits on all tiles.",
    )


@dataclass
class SlideClusters:
    """K cluster means of one slide."""

    means: np.ndarray  # float32 (K, D)
    sizes: np.ndarray  # float32 (K,) number of tiles in each cluster (0 for padding rows)


def _sq_dists(x: np.ndarray, c: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, K) between rows of x (N, D) and c (K, D)."""
    c_sq = np.einsum("kd,kd->k", c, c)  # (K,)
    d = x_sq[:, None] - 2.0 * (x @ c.T) + c_sq[None, :]  # (N, K)
    np.maximum(d, 0.0, out=d)
    return d


def _kmeans_pp(x: np.ndarray, x_sq: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on distinct rows; returns k row indices."""
    n = x.shape[0]
    idx = np.empty(k, dtype=np.int64)
    idx[0] = rng.integers(n)
    closest = _sq_dists(x, x[idx[:1]], x_sq)[:, 0]  # (N,)
    for j in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # all remaining points coincide with a centre
            idx[j] = rng.integers(n)
        else:
            idx[j] = int(np.searchsorted(np.cumsum(closest), rng.random() * total))
            idx[j] = min(idx[j], n - 1)
        d_new = _sq_dists(x, x[idx[j]][None, :], x_sq)[:, 0]  # (N,)
        np.minimum(closest, d_new, out=closest)
    return idx


def _weighted_means(
    x: np.ndarray, labels: np.ndarray, w: np.ndarray, sizes: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Weighted cluster means (K, D); clusters of size 0 keep their ``fallback`` row."""
    from scipy import sparse

    k = fallback.shape[0]
    onehot = sparse.csr_matrix((w, (labels, np.arange(x.shape[0]))), shape=(k, x.shape[0]))
    sums = np.asarray(onehot.astype(x.dtype) @ x)  # (K, D)
    out = fallback.copy()  # (K, D)
    nz = sizes > 0
    out[nz] = (sums[nz] / sizes[nz, None]).astype(out.dtype)
    return out


def _finish(means: np.ndarray, sizes: np.ndarray, k: int) -> SlideClusters:
    """Sort rows by size (desc), pad to k with zero rows of size 0."""
    order = np.lexsort((means[:, 0] if means.shape[0] else np.zeros(0), -sizes))
    means, sizes = means[order], sizes[order]
    out_m = np.zeros((k, means.shape[1]), dtype=np.float32)  # (K, D)
    out_s = np.zeros(k, dtype=np.float32)  # (K,)
    out_m[: means.shape[0]] = means
    out_s[: sizes.shape[0]] = sizes
    return SlideClusters(means=out_m, sizes=out_s)


def _n_distinct_exceeds(x: np.ndarray, k: int) -> bool:
    """True when ``x`` has more than ``k`` distinct rows (stops as soon as it knows)."""
    seen: set[bytes] = set()
    for row in x:
        seen.add(row.tobytes())
        if len(seen) > k:
            return True
    return False


def _lloyd(
    x: np.ndarray, centres: np.ndarray, *, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations from ``centres``; returns (centres (K, D), labels (N,))."""
    k = centres.shape[0]
    w = np.ones(x.shape[0])  # (N,)
    x_sq = np.einsum("nd,nd->n", x, x)  # (N,)
    labels = np.full(x.shape[0], -1, dtype=np.int64)  # (N,)
    for _ in range(max_iter):
        d = _sq_dists(x, centres, x_sq)  # (N, K)
        new = d.argmin(axis=1)  # (N,)
        sizes = np.bincount(new, minlength=k).astype(np.float64)  # (K,)
        empty = np.flatnonzero(sizes == 0)
        if empty.size:  # re-seed empty clusters on the points farthest from their centre
            far = np.argsort(-d[np.arange(x.shape[0]), new], kind="stable")[: empty.size]
            new[far] = empty[: far.size]
            sizes = np.bincount(new, minlength=k).astype(np.float64)
        if np.array_equal(new, labels):
            break
        labels = new
        old = centres
        centres = _weighted_means(x, labels, w, sizes, old)  # (K, D)
        if float(((centres - old) ** 2).sum()) <= tol:
            break
    return centres, labels


def cluster_features(
    features: np.ndarray, *, k: int, seed: int, max_iter: int = 100, fit_tiles: int | None = 8192
) -> SlideClusters:
    """K-means cluster means of tile features.

    Parameters
    ----------
    features
        (N, D) tile features; N may be smaller than ``k`` and rows may repeat.
    k
        Number of clusters K.
    seed
        Seed of the k-means++ initialisation and of the tile subsample; same input and seed give
        the same output.
    max_iter
        Maximum number of Lloyd iterations (stops earlier when assignments no longer change or the
        centres move less than 1e-4 of the data variance, as in scikit-learn).
    fit_tiles
        Fit the centres on at most this many tiles (a seeded random subsample), then assign every
        tile to its nearest centre for the final means and sizes. None: fit on all tiles.

    Returns
    -------
    SlideClusters
        ``means`` float32 (K, D) and ``sizes`` float32 (K,), rows sorted by decreasing size;
        padding rows (fewer distinct tiles than K, or clusters left empty) have size 0 and mean 0.
    """
    x_in = np.asarray(features, dtype=np.float32)  # (N, D)
    if x_in.ndim != 2 or x_in.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x_in.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not _n_distinct_exceeds(x_in, k):  # every distinct tile is its own cluster
        uniq, counts = np.unique(x_in, axis=0, return_counts=True)  # (U, D), (U,)
        return _finish(uniq, counts.astype(np.float32), k)

    mu = x_in.mean(axis=0, keepdims=True)  # (1, D)
    x = x_in - mu  # (N, D) centred for stable distances
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    fit = x
    if fit_tiles is not None and n > max(fit_tiles, k):
        fit = x[np.sort(rng.choice(n, size=max(fit_tiles, k), replace=False))]  # (F, D)
    tol = 1e-4 * float(np.mean(np.var(fit, axis=0)))
    seed_pool = fit
    if fit.shape[0] > 20 * k:  # k-means++ seeding on a subsample keeps it O(20 k^2 D)
        seed_pool = fit[np.sort(rng.choice(fit.shape[0], size=20 * k, replace=False))]
    pool_sq = np.einsum("nd,nd->n", seed_pool, seed_pool)  # (P,)
    centres = seed_pool[_kmeans_pp(seed_pool, pool_sq, k, rng)].copy()  # (K, D)
    centres, labels = _lloyd(fit, centres, max_iter=max_iter, tol=tol)
    if fit is not x:  # final assignment of every tile
        labels = _sq_dists(x, centres, np.einsum("nd,nd->n", x, x)).argmin(axis=1)  # (N,)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)  # (K,)
    centres = _weighted_means(x, labels, np.ones(n), sizes, centres)  # (K, D)
    keep = sizes > 0
    means = (centres[keep] + mu).astype(np.float32)  # (K', D)
    return _finish(means, sizes[keep].astype(np.float32), k)


def _cache_file(path: Path, config: ClusterConfig) -> Path:
    from rnafm._io import file_digest

    digest = file_digest(path)[:16]
    name = (
        f"{path.name}.k{config.k}.s{config.seed}.i{config.max_iter}.f{config.fit_tiles}"
        f".{digest}.v{_CACHE_VERSION}.npz"
    )
    return path.parent / CACHE_DIR / name


def _read_cache(cache_file: Path, k: int) -> SlideClusters | None:
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file) as z:
            means = z["means"].astype(np.float32)
            sizes = z["sizes"].astype(np.float32)
    except (OSError, ValueError, KeyError) as e:
        logger.debug("ignoring unreadable cluster cache %s: %s", cache_file, e)
        return None
    if means.ndim != 2 or means.shape[0] != k or sizes.shape != (k,):
        return None
    return SlideClusters(means=means, sizes=sizes)


def _write_cache(cache_file: Path, clusters: SlideClusters) -> None:
    from rnafm._io import atomic_path

    try:
        with atomic_path(cache_file) as tmp, tmp.open("wb") as f:
            np.savez(f, means=clusters.means, sizes=clusters.sizes)
    except OSError as e:  # read-only folder, full disk: caching is an optimisation only
        logger.debug("cannot write cluster cache %s: %s", cache_file, e)
        with contextlib.suppress(OSError):
            cache_file.parent.rmdir()


def _fit_precomputed(features: np.ndarray, k: int, path: Path | None = None) -> SlideClusters:
    """Use precomputed cluster means as is, padded with zero rows (size 0) or cut to k (with a
    warning naming the file: rows beyond k are dropped)."""
    if features.shape[0] > k:
        logger.warning(
            "%s: %d precomputed cluster_features rows but K = %d clusters; using the first %d "
            "and dropping %d (set the number of clusters to %d to use them all)",
            path or "cluster_features",
            features.shape[0],
            k,
            k,
            features.shape[0] - k,
            features.shape[0],
        )
    m = features[:k].astype(np.float32)  # (<=K, D)
    out_m = np.zeros((k, features.shape[1]), dtype=np.float32)  # (K, D)
    out_m[: m.shape[0]] = m
    sizes = np.zeros(k, dtype=np.float32)  # (K,)
    sizes[: m.shape[0]] = 1.0
    return SlideClusters(means=out_m, sizes=sizes)


def load_clusters(
    path: str | os.PathLike[str], config: ClusterConfig, *, cache: bool = True
) -> SlideClusters:
    """Cluster means of one feature file, from the cache when possible.

    Parameters
    ----------
    path
        A feature file (any layout :func:`rnafm.features.io.read_features` reads).
    config
        K, seed and iterations. The cache key holds all three and the file's SHA-1 digest.
    cache
        Read and write ``<folder>/.rnafm_cache/``; silently skipped when the folder is read-only.

    Notes
    -----
    A SEQUOIA/RNA-FM ``cluster_features`` file is used as is (padded or cut to K, with a
    warning when rows are cut); each of its rows gets size 1 because the original cluster sizes
    are not stored.
    """
    from rnafm.features.io import FeatureLayout, read_features

    p = Path(path)
    cache_file: Path | None = None
    if cache and p.is_file():
        try:
            cache_file = _cache_file(p, config)
        except OSError:
            cache_file = None
        if cache_file is not None and (hit := _read_cache(cache_file, config.k)) is not None:
            return hit
    sf = read_features(p)
    if sf.layout is FeatureLayout.CLUSTERS:
        return _fit_precomputed(sf.features, config.k, p)
    try:
        clusters = cluster_features(
            sf.features,
            k=config.k,
            seed=config.seed,
            max_iter=config.max_iter,
            fit_tiles=config.fit_tiles,
        )
    except ValueError as e:
        raise InputError(f"{p}: cannot cluster the tile features ({e}).") from e
    if cache_file is not None:
        _write_cache(cache_file, clusters)
    return clusters
