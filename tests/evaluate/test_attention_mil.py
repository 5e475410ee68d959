"""Attention-MIL baseline: finds a planted tile-composition signal through its log-size bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnafm.cohort.dataset import CohortData
from rnafm.evaluate.baselines import build_regressor
from rnafm.evaluate.baselines.attention_mil import AttentionMILNet
from rnafm.metrics import mean_pcc
from rnafm.model.condition import cluster_attention_bias


def size_driven_cohort(n: int = 140, *, k: int = 4, d: int = 8, g: int = 6, seed: int = 0):
    """Every slide has the same K tissue types (cluster means barely vary); expression is
    driven by the share of tiles in type 0 only, so the cluster sizes carry all the signal."""
    rng = np.random.default_rng(seed)
    types = rng.normal(size=(k, d))  # (K, D)
    clusters = types[None] + 0.05 * rng.normal(size=(n, k, d))  # (n, K, D)
    share = rng.dirichlet(np.ones(k), size=n)  # (n, K)
    sizes = np.maximum(np.round(share * 400), 1.0)  # (n, K)
    frac0 = sizes[:, 0] / sizes.sum(1)  # (n,)
    gain = rng.uniform(2.0, 4.0, size=g) * rng.choice([-1, 1], size=g)  # (G,)
    expr = 5 + frac0[:, None] * gain + 0.15 * rng.normal(size=(n, g))  # (n, G)
    return CohortData(
        slide_ids=[f"S{i:03d}" for i in range(n)],
        patient_ids=[f"P{i:03d}" for i in range(n)],
        projects=None,
        clusters=clusters.astype(np.float32),
        sizes=sizes.astype(np.float32),
        genes=[f"G{j}" for j in range(g)],
        expression=expr.astype(np.float32),
    )


def _split(data: CohortData):
    n = len(data.slide_ids)
    return (
        data.subset(range(0, n - 60)),
        data.subset(range(n - 60, n - 30)),
        data.subset(range(n - 30, n)),
    )


def test_attention_mil_finds_the_size_driven_signal_and_beats_the_mean() -> None:
    train, val, test = _split(size_driven_cohort())
    scores = {}
    for use_sizes in (True, False):
        reg = build_regressor("attention_mil", {"use_sizes": use_sizes, "hidden": 32})
        reg.fit(train, val, seed=0, out=None)
        pred = reg.predict(test).mean
        scores[use_sizes] = (
            mean_pcc(pred, test.expression),
            float(((pred - test.expression) ** 2).mean()),
        )
        checks = [r for r in reg.history if "val_mean_pcc" in r]
        assert [r["epoch"] for r in checks][:3] == [5, 10, 15]  # checked every 5 epochs
    mean = build_regressor("mean")
    mean.fit(train, None, seed=0, out=None)
    mse_mean = float(((mean.predict(test).mean - test.expression) ** 2).mean())
    assert scores[True][0] > 0.8
    assert scores[True][1] < 0.5 * mse_mean
    # without the log-size bias the pooled vector cannot see the tile composition
    assert scores[False][0] < 0.4
    assert scores[True][0] > scores[False][0] + 0.4


def test_attention_mil_is_deterministic_and_stops_on_validation(tmp_path, make) -> None:
    data = make(40, seed=4)
    train, val, test = (
        data.subset(range(30)),
        data.subset(range(30, 40)),
        data.subset(range(40, len(data))),
    )
    # validation expression unrelated to the slides: its PCC wanders, so patience 1 stops early
    val.expression = val.expression[np.random.default_rng(0).permutation(len(val.slide_ids))]
    options = {"hidden": 16, "heads": 2, "max_epochs": 60, "patience": 1, "check_every": 2}
    a = build_regressor("attention_mil", options)
    a.fit(train, val, seed=7, out=tmp_path)
    b = build_regressor("attention_mil", options)
    b.fit(train, val, seed=7, out=None)
    np.testing.assert_array_equal(a.predict(test).mean, b.predict(test).mean)
    assert len(a.history) < 60
    best = max(r["val_mean_pcc"] for r in a.history if "val_mean_pcc" in r)
    assert mean_pcc(a.predict(val).mean, val.expression) == pytest.approx(best, abs=1e-5)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "history.jsonl").is_file()
    fixed = build_regressor("attention_mil", {**options, "fixed_epochs": 3})
    fixed.fit(train, None, seed=7, out=None)
    assert len(fixed.history) == 3 and "val_mean_pcc" not in fixed.history[-1]


def test_empty_clusters_are_masked() -> None:
    torch.manual_seed(0)
    net = AttentionMILNet(5, 3, hidden=8, heads=2, dropout=0.0).eval()
    x = torch.randn(1, 4, 5)  # (1, K, D)
    sizes = torch.tensor([[3.0, 10.0, 0.0, 1.0]])
    bias = cluster_attention_bias(sizes, use_sizes=True)
    garbage = x.clone()
    garbage[0, 2] = 1e3  # an empty cluster's features must not matter
    torch.testing.assert_close(net(x, bias), net(garbage, bias))
    ref = net(x[:, [0, 1, 3]], cluster_attention_bias(sizes[:, [0, 1, 3]], use_sizes=True))
    torch.testing.assert_close(net(x, bias), ref, rtol=1e-5, atol=1e-6)
