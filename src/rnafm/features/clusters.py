"""K-means cluster means of a slide's tile features, cached beside the feature files.

A slide is summarised by K cluster means (K, D) and the number of tiles in each cluster (K,).
The k-means here is a seeded, batched Lloyd's algorithm with k-means++ initialisation, written
to cope with what real slides throw at it:

- fewer tiles than clusters (N < K): every tile is its own cluster, the remaining rows are zero
  padding with size 0;
- duplicate tiles (fewer distinct rows than K): clusters are the distinct rows, rest padded;
- clusters that empty during the iterations are re-seeded on the tiles farthest from their
  centre; any cluster still empty at the end is reported with size 0 and a zero mean.

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
    sums = np.asarray(onehot @ x.astype(np.float64))  # (K, D)
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


def cluster_features(
    features: np.ndarray, *, k: int, seed: int, max_iter: int = 100
) -> SlideClusters:
    """K-means cluster means of tile features.

    Parameters
    ----------
    features
        (N, D) tile features; N may be smaller than ``k`` and rows may repeat.
    k
        Number of clusters K.
    seed
        Seed of the k-means++ initialisation; same input and seed give the same output.
    max_iter
        Maximum number of Lloyd iterations (stops earlier when assignments no longer change).

    Returns
    -------
    SlideClusters
        ``means`` float32 (K, D) and ``sizes`` float32 (K,), padding rows have size 0 and mean 0.
    """
    x_in = np.asarray(features, dtype=np.float32)  # (N, D)
    if x_in.ndim != 2 or x_in.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {x_in.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    # Work on distinct rows with multiplicities: handles duplicates and N <= K exactly.
    uniq, counts = np.unique(x_in, axis=0, return_counts=True)  # (U, D), (U,)
    w = counts.astype(np.float64)  # (U,)
    if uniq.shape[0] <= k:
        return _finish(uniq, counts.astype(np.float32), k)

    x = uniq - uniq.mean(axis=0, keepdims=True)  # (U, D) float32, centred for stable distances
    x_sq = np.einsum("nd,nd->n", x, x)  # (U,)
    tol = 1e-4 * float(np.mean(np.var(x, axis=0)))  # as in sklearn: relative to the data variance
    rng = np.random.default_rng(seed)
    centres = x[_kmeans_pp(x, x_sq, k, rng)].copy()  # (K, D)
    labels = np.full(x.shape[0], -1, dtype=np.int64)  # (U,)
    for _ in range(max_iter):
        d = _sq_dists(x, centres, x_sq)  # (U, K)
        new = d.argmin(axis=1)  # (U,)
        sizes = np.bincount(new, weights=w, minlength=k)  # (K,)
        empty = np.flatnonzero(sizes == 0)
        if empty.size:  # re-seed empty clusters on the points farthest from their centre
            far = np.argsort(-d[np.arange(x.shape[0]), new], kind="stable")[: empty.size]
            new[far] = empty
            sizes = np.bincount(new, weights=w, minlength=k)
        if np.array_equal(new, labels):
            break
        labels = new
        old = centres
        centres = _weighted_means(x, labels, w, sizes, old)  # (K, D)
        if float(((centres - old) ** 2).sum()) <= tol:
            break
    sizes = np.bincount(labels, weights=w, minlength=k)  # (K,)
    keep = sizes > 0
    centres = _weighted_means(x, labels, w, sizes, centres)  # (K, D)
    means = (centres[keep] + uniq.mean(axis=0, keepdims=True)).astype(np.float32)  # (K', D)
    return _finish(means, sizes[keep].astype(np.float32), k)


def _cache_file(path: Path, config: ClusterConfig) -> Path:
    from rnafm._io import file_digest

    digest = file_digest(path)[:16]
    name = f"{path.name}.k{config.k}.s{config.seed}.i{config.max_iter}.{digest}.v{_CACHE_VERSION}.npz"
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


def _fit_precomputed(features: np.ndarray, k: int) -> SlideClusters:
    """Use precomputed cluster means as is, padded with zero rows (size 0) or cut to k."""
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
    A SEQUOIA/RNA-FM ``cluster_features`` file is used as is (padded or cut to K); each of its
    rows gets size 1 because the original cluster sizes are not stored.
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
        return _fit_precomputed(sf.features, config.k)
    try:
        clusters = cluster_features(
            sf.features, k=config.k, seed=config.seed, max_iter=config.max_iter
        )
    except ValueError as e:
        raise InputError(f"{p}: cannot cluster the tile features ({e}).") from e
    if cache_file is not None:
        _write_cache(cache_file, clusters)
    return clusters
