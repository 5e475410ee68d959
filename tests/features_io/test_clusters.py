"""K-means cluster means: oracles, edge cases (N < K, duplicates), determinism, cache."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import rnafm.features.clusters as clusters_mod
from rnafm.features.clusters import CACHE_DIR, ClusterConfig, cluster_features, load_clusters
from rnafm.features.io import write_features


def _blobs(k: int, per: list[int], d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=50.0, size=(k, d))
    x = np.concatenate(
        [c + rng.normal(scale=0.1, size=(n, d)) for c, n in zip(centres, per, strict=True)]
    )
    labels = np.repeat(np.arange(k), per)
    return x.astype(np.float32), labels


def test_separated_blobs_oracle():
    per = [11, 7, 5, 3]
    x, labels = _blobs(4, per, d=13)
    out = cluster_features(x, k=4, seed=3)
    assert out.means.shape == (4, 13) and out.means.dtype == np.float32
    np.testing.assert_array_equal(out.sizes, [11, 7, 5, 3])  # sorted by size
    for j in range(len(per)):
        np.testing.assert_allclose(out.means[j], x[labels == j].mean(0), rtol=1e-5, atol=1e-4)


def test_lloyd_fixed_point():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(301, 17)).astype(np.float32)
    out = cluster_features(x, k=9, seed=0, max_iter=500)
    assert out.sizes.sum() == 301 and (out.sizes > 0).all()
    d = ((x[:, None, :] - out.means[None]) ** 2).sum(-1)
    assign = d.argmin(1)
    np.testing.assert_array_equal(np.bincount(assign, minlength=9), out.sizes)
    for j in range(9):
        np.testing.assert_allclose(out.means[j], x[assign == j].mean(0), atol=1e-4)


def test_fewer_tiles_than_clusters():
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    out = cluster_features(x, k=8, seed=0)
    assert out.means.shape == (8, 5)
    np.testing.assert_array_equal(out.sizes, [1, 1, 1, 0, 0, 0, 0, 0])
    assert {tuple(r) for r in out.means[:3]} == {tuple(r) for r in x}
    assert not out.means[3:].any()


def test_duplicate_tiles():
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(3, 6)).astype(np.float32)
    x = rows[rng.integers(0, 3, size=50)]
    out = cluster_features(x, k=10, seed=0)
    assert out.sizes.sum() == 50 and (out.sizes > 0).sum() == 3
    assert np.isfinite(out.means).all()
    # few distinct rows but more than k: empty clusters must not appear as NaN
    y = np.repeat(rng.normal(size=(12, 4)), [40] + [1] * 11, axis=0).astype(np.float32)
    out = cluster_features(y, k=10, seed=0)
    assert np.isfinite(out.means).all() and out.sizes.sum() == 51


def test_deterministic_by_seed():
    x = np.random.default_rng(4).normal(size=(200, 11)).astype(np.float32)
    a = cluster_features(x, k=7, seed=5)
    b = cluster_features(x, k=7, seed=5)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.sizes, b.sizes)


def test_thousands_of_tiles_assigns_every_tile():
    """Speed lives in benchmarks/; here: every tile lands in exactly one of the K clusters."""
    x = np.random.default_rng(0).normal(size=(3000, 64)).astype(np.float32)
    out = cluster_features(x, k=100, seed=0)
    assert out.means.shape == (100, 64)
    assert out.sizes.sum() == 3000


def test_load_clusters_cache(tmp_path, monkeypatch):
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    p = tmp_path / "s.h5"
    write_features(p, x, None, {})
    cfg = ClusterConfig(k=5, seed=1)
    first = load_clusters(p, cfg)
    cached = list((tmp_path / CACHE_DIR).iterdir())
    assert len(cached) == 1 and "k5" in cached[0].name
    monkeypatch.setattr(clusters_mod, "cluster_features", lambda *a, **k: pytest.fail("recomputed"))
    again = load_clusters(p, cfg)
    np.testing.assert_array_equal(first.means, again.means)
    monkeypatch.undo()
    load_clusters(p, ClusterConfig(k=6, seed=1))  # another key
    write_features(p, x + 1.0, None, {})  # new content -> new digest
    moved = load_clusters(p, cfg)
    assert len(list((tmp_path / CACHE_DIR).iterdir())) == 3
    np.testing.assert_allclose(moved.means, first.means + 1.0, atol=1e-5)


def test_cache_unwritable_is_silent(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    p = tmp_path / "s.h5"
    write_features(p, x, None, {})
    (tmp_path / CACHE_DIR).write_text("a file where the cache folder should be")
    out = load_clusters(p, ClusterConfig(k=4))
    assert out.sizes.sum() == 20
    out = load_clusters(p, ClusterConfig(k=4), cache=False)
    assert out.sizes.sum() == 20


def test_precomputed_cluster_file(tmp_path, caplog):
    means = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    p = tmp_path / "s.h5"
    with h5py.File(p, "w") as f:
        f["cluster_features"] = means
    pad = load_clusters(p, ClusterConfig(k=8))
    np.testing.assert_array_equal(pad.means[:5], means)
    np.testing.assert_array_equal(pad.sizes, [1, 1, 1, 1, 1, 0, 0, 0])
    assert "precomputed" not in caplog.text
    with caplog.at_level("WARNING"):
        cut = load_clusters(p, ClusterConfig(k=3))
    np.testing.assert_array_equal(cut.means, means[:3])
    assert f"{p}: 5 precomputed cluster_features rows but K = 3" in caplog.text


def test_subsampled_fit_assigns_all_tiles():
    per = [400, 250, 150, 97]
    x, labels = _blobs(4, per, d=7, seed=5)
    out = cluster_features(x, k=4, seed=0, fit_tiles=60)
    np.testing.assert_array_equal(out.sizes, per)  # every tile assigned, not only the 60
    for j in range(4):
        np.testing.assert_allclose(out.means[j], x[labels == j].mean(0), rtol=1e-5, atol=1e-4)
    again = cluster_features(x, k=4, seed=0, fit_tiles=60)
    np.testing.assert_array_equal(out.means, again.means)
