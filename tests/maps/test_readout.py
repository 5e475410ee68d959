"""The per-tile read-out: one-tile conditions, smoothing weights, the slide head on log2."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rnafm.maps.grid import tile_grid
from rnafm.maps.readout import (
    attention_gate,
    has_slide_head,
    head_log2,
    smoothing_matrix,
    tile_attention_logits,
    tile_conditions,
    tile_readout,
    tile_secants,
)


def _grid(rows=9, cols=11, drop=0.25, seed=0):
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:rows, 0:cols]
    g = np.stack([cc.ravel(), rr.ravel()], 1)
    g = g[rng.random(len(g)) >= drop]
    return g, tile_grid(g * 256 + 100, 256)


@pytest.mark.parametrize("sigma", [0.0, 0.7, 1.5])
def test_smoothing_rows_sum_to_one_and_follow_distance(sigma):
    g, grid = _grid()
    w = smoothing_matrix(grid, sigma).toarray()  # (N, N)
    np.testing.assert_allclose(w.sum(1), 1.0)
    if sigma == 0:
        np.testing.assert_array_equal(w, np.eye(len(g)))
        return
    d = np.linalg.norm(g[:, None] - g[None], axis=2)
    assert np.all(w[d > 3 * sigma + 1e-9] == 0)
    i = 0
    near = np.flatnonzero((d[i] > 0) & (d[i] <= 1.0))
    far = np.flatnonzero((d[i] > 1.5) & (d[i] <= 3 * sigma))
    if len(near) and len(far):
        assert w[i, near].min() > w[i, far].max()
    # a linear field is kept where the neighbourhood is whole (no holes, away from the edges)
    g, grid = _grid(rows=15, cols=15, drop=0.0)
    w = smoothing_matrix(grid, sigma).toarray()
    d = np.linalg.norm(g[:, None] - g[None], axis=2)
    field = 2.0 * g[:, 0] - g[:, 1]
    inner = np.flatnonzero((d <= 3 * sigma).sum(1) == (d <= 3 * sigma).sum(1).max())
    np.testing.assert_allclose((w @ field)[inner], field[inner], atol=1e-6)


def test_tile_conditions_hold_one_tile_with_the_slide_total():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([2, 0, 2, 1, 3])
    c, s = tile_conditions(f, labels, 4, 123, indexed=False)
    assert c.shape == (5, 1, 3) and s.shape == (5, 1)
    np.testing.assert_array_equal(c[:, 0], f)
    np.testing.assert_array_equal(s, 123.0)
    c, s = tile_conditions(f, labels, 4, 123, indexed=True)
    assert c.shape == (5, 4, 3)
    np.testing.assert_array_equal(c[np.arange(5), labels], f)
    assert (s > 0).sum() == 5 and np.all(s[np.arange(5), labels] == 123.0)


def _tiny_run(index_embedding: bool):
    import torch

    from rnafm.model import ModelConfig, build_model
    from rnafm.pathways.tokens import PathwayTokens

    torch.manual_seed(0)
    tokens = PathwayTokens(
        genes=["A", "B", "C", "D"], names=["P1", "background_0"],
        members=[np.array([0, 1]), np.array([2, 3])], is_background=np.array([False, True]),
    )  # fmt: skip
    cfg = ModelConfig(hidden=16, depth=1, heads=2, image_heads=2, pool_heads=2,
                      cluster_index_embedding=index_embedding)  # fmt: skip
    model = build_model(tokens, feature_dim=3, n_clusters=4, config=cfg).eval()
    norm = SimpleNamespace(mean=np.array([1.0, 2.0, 3.0, 4.0]), std=np.array([0.5, 1.0, 2.0, 1.0]))
    return SimpleNamespace(model=model, device=torch.device("cpu"), n_clusters=4,
                           targets=SimpleNamespace(norm=norm))  # fmt: skip


def test_head_log2_is_the_slide_head_on_the_run_scale():
    import torch

    from rnafm.flow.draws import slide_estimates

    run = _tiny_run(False)
    assert has_slide_head(run)
    rng = np.random.default_rng(2)
    c = rng.normal(size=(6, 4, 3)).astype(np.float32)
    s = rng.integers(0, 9, size=(6, 4)).astype(np.float32)
    z = slide_estimates(run.model, c, s, device=torch.device("cpu"))
    np.testing.assert_allclose(head_log2(run, c, s), z * run.targets.norm.std + run.targets.norm.mean,
                               rtol=1e-5)  # fmt: skip
    run.model.slide_head = None
    assert not has_slide_head(run)


def test_one_slot_condition_equals_the_tile_in_its_cluster_slot():
    """Without a cluster-index embedding, a tile alone in slot 0 of K = 1 is the same condition
    as the tile in its own slot of K with the other clusters empty."""
    run = _tiny_run(False)
    rng = np.random.default_rng(3)
    f = rng.normal(size=(7, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 7)
    one = head_log2(run, *tile_conditions(f, labels, 4, 50, indexed=False))
    full = head_log2(run, *tile_conditions(f, labels, 4, 50, indexed=True))
    np.testing.assert_allclose(one, full, rtol=1e-4, atol=1e-5)


def test_attention_gate_is_relative_attention_capped_and_sharpened():
    logits = np.zeros((6, 2))
    rel, gate = attention_gate(logits, 4.0)
    np.testing.assert_allclose(rel, 1.0)  # every tile listened to alike: no pull
    np.testing.assert_allclose(gate, 1.0)
    logits[0] = -np.log(4.0)  # a quarter of the others' weight in both heads
    logits[1] = [np.log(3.0), 0.0]  # more than average in one head
    rel, gate = attention_gate(logits, 2.0)
    w = np.exp(logits) / np.exp(logits).sum(0)  # (6, 2) softmax over tiles, per head
    np.testing.assert_allclose(rel, w.mean(1) * 6)
    np.testing.assert_allclose(rel.sum(), 6.0)
    np.testing.assert_allclose(gate, np.minimum(rel, 1.0) ** 2)
    assert gate[0] < 0.1 and gate[1] == 1.0
    _, off = attention_gate(logits, 0.0)
    np.testing.assert_array_equal(off, 1.0)


def test_readout_pulls_tiles_the_pooling_ignores_to_the_slide_level(monkeypatch):
    import rnafm.maps.readout as readout

    g, grid = _grid(rows=5, cols=6, drop=0.0)
    n = len(g)
    rng = np.random.default_rng(4)
    f = rng.normal(size=(n, 3)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    per_tile = rng.normal(size=(n, 2))  # the head's answer for each one-tile slide
    logits = np.zeros((n, 2))
    logits[[3, 7]] = -30.0  # two tiles the pooling does not listen to
    state = {"at": 0}

    def answers(clusters, sizes):
        start = state["at"]
        state["at"] = start + len(clusters)
        return per_tile[start : start + len(clusters)]

    run = SimpleNamespace(slide_head_log2=answers, n_clusters=4)
    monkeypatch.setattr(readout, "tile_attention_logits", lambda p, c, s, slots: logits)
    weights = np.eye(2)
    plain = readout.tile_readout(run, f, labels, grid, weights, smooth=0.0, attention_power=0.0)
    np.testing.assert_allclose(plain, per_tile)
    state["at"] = 0
    gated = readout.tile_readout(run, f, labels, grid, weights, smooth=0.0, attention_power=4.0)
    keep = np.setdiff1d(np.arange(n), [3, 7])
    level = per_tile[keep].mean(0)  # the ignored tiles weigh nothing in the slide level
    np.testing.assert_allclose(gated[[3, 7]], np.tile(level, (2, 1)), atol=1e-9)
    np.testing.assert_allclose(gated[keep], per_tile[keep] * 1.0, atol=1e-9)  # others: gate 1
    assert not np.allclose(gated, plain)


@pytest.mark.parametrize("pool_heads", [0, 2])
def test_tile_attention_logits_are_the_pooling_logits_of_the_tile(pool_heads):
    run = _tiny_run(False)
    rng = np.random.default_rng(5)
    f = rng.normal(size=(7, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 7)
    c1, s1 = tile_conditions(f, labels, 4, 50, indexed=False)
    if pool_heads == 0:
        run.model.image.pool = None
        assert tile_attention_logits(run, c1, s1, np.zeros(7, dtype=np.int64)) is None
        return
    one = tile_attention_logits(run, c1, s1, np.zeros(7, dtype=np.int64))  # (7, P)
    ck, sk = tile_conditions(f, labels, 4, 50, indexed=True)
    full = tile_attention_logits(run, ck, sk, labels)  # the same tile in its own slot of K
    assert one.shape == (7, 2)
    np.testing.assert_allclose(one, full, rtol=1e-4, atol=1e-5)


def test_gated_readout_runs_on_a_run_with_cluster_index_embeddings():
    """Indexed runs read a tile out in its own cluster's slot; the gate follows that slot."""
    run = _tiny_run(True)
    g, grid = _grid(rows=4, cols=5, drop=0.0)
    rng = np.random.default_rng(6)
    f = rng.normal(size=(len(g), 3)).astype(np.float32)
    labels = rng.integers(0, 4, len(g))
    ck, sk = tile_conditions(f, labels, 4, len(g), indexed=True)
    lg = tile_attention_logits(run, ck, sk, labels)
    other = tile_attention_logits(run, ck, sk, (labels + 1) % 4)  # an empty slot's token
    assert lg.shape == (len(g), 2) and np.isfinite(lg).all()
    assert not np.allclose(lg, other)
    out = tile_readout(run, f, labels, grid, np.ones((4, 1)) / 4, smooth=0.0, attention_power=4.0)
    plain = tile_readout(run, f, labels, grid, np.ones((4, 1)) / 4, smooth=0.0)
    rel, gate = attention_gate(lg, 4.0)
    level = (rel @ plain) / rel.sum()
    np.testing.assert_allclose(out, level + gate[:, None] * (plain - level), rtol=1e-6, atol=1e-9)


def _run_with(**model):
    import torch

    from rnafm.model import ModelConfig, build_model
    from rnafm.pathways.tokens import PathwayTokens

    torch.manual_seed(1)
    tokens = PathwayTokens(
        genes=["A", "B", "C", "D", "E"], names=["P1", "background_0"],
        members=[np.array([0, 1, 2]), np.array([3, 4])], is_background=np.array([False, True]),
    )  # fmt: skip
    cfg = ModelConfig(hidden=16, depth=1, heads=2, image_heads=2, **model)
    net = build_model(tokens, feature_dim=3, n_clusters=5, config=cfg).eval()
    norm = SimpleNamespace(mean=np.linspace(1, 3, 5), std=np.linspace(0.5, 1.5, 5))
    return SimpleNamespace(model=net, device=torch.device("cpu"), n_clusters=5,
                           targets=SimpleNamespace(norm=norm))  # fmt: skip


@pytest.mark.parametrize("index_embedding", [False, True])
def test_secant_of_a_whole_share_is_the_one_tile_read_out(index_embedding):
    run = _run_with(pool_heads=2, cluster_index_embedding=index_embedding)
    rng = np.random.default_rng(7)
    f = rng.normal(size=(9, 3)).astype(np.float32)
    labels = rng.integers(0, 5, 9)
    slide = (rng.normal(size=(5, 3)).astype(np.float32), np.array([3, 0, 2, 3, 1], np.float32))
    weights = rng.random((5, 2))
    sec = tile_secants(run, f, labels, slide, weights, share=1.0)
    one = head_log2(run, *tile_conditions(f, labels, 5, 9, indexed=index_embedding)) @ weights
    np.testing.assert_allclose(sec, one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("share", [0.1, 0.4, 0.75])
def test_secant_is_the_slide_with_tissue_like_the_tile_added(share):
    """Mean pooling of tokens that do not interact (no attention pooling, no encoder layers):
    moving the pooled token a share s towards the tile is adding the tile as a cluster holding
    s / (1 - s) of the slide's tiles, so the secant is the head's change for that slide."""
    run = _run_with(pool_heads=0, image_depth=0)
    rng = np.random.default_rng(8)
    f = rng.normal(size=(6, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    means = rng.normal(size=(4, 3)).astype(np.float32)
    sizes = np.array([5, 2, 0, 3], np.float32)
    weights = rng.random((5, 3))
    sec = tile_secants(run, f, labels, (means, sizes), weights, share=share)  # (6, 3)
    base = head_log2(run, means[None], sizes[None]) @ weights  # (1, 3)
    extra = sizes.sum() * share / (1.0 - share)
    clusters = np.concatenate([np.repeat(means[None], 6, 0), f[:, None, :]], axis=1)  # (6, 5, 3)
    counts = np.concatenate([np.repeat(sizes[None], 6, 0), np.full((6, 1), extra)], axis=1)
    added = head_log2(run, clusters.astype(np.float32), counts.astype(np.float32)) @ weights
    np.testing.assert_allclose(sec, base + (added - base) / share, rtol=1e-4, atol=1e-5)
    assert np.abs(sec - base).max() > 1e-3  # the tiles do move the slide


def test_readout_without_the_network_falls_back_to_the_one_tile_read_out():
    run = SimpleNamespace(slide_head_log2=lambda c, s: c[:, 0, :2].astype(np.float64) * 2.0,
                          n_clusters=4)  # fmt: skip
    g, grid = _grid(rows=3, cols=4, drop=0.0)
    f = np.random.default_rng(9).normal(size=(len(g), 3)).astype(np.float32)
    labels = np.zeros(len(g), dtype=np.int64)
    slide = (f[:4], np.ones(4, np.float32))
    out = tile_readout(run, f, labels, grid, np.eye(2), smooth=0.0, share=0.4, slide=slide)
    np.testing.assert_allclose(out, f[:, :2] * 2.0, rtol=1e-6)
