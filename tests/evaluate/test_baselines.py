"""Every model of the registry fits and predicts; network pieces against plain-loop oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from rnafm.evaluate.baselines import ModelName, build_regressor, pooled_features
from rnafm.evaluate.baselines.networks import HE2RNANet, LinearAttention, SequoiaNet, TransformerNet
from rnafm.evaluate.baselines.simple import ridge_path
from rnafm.metrics import pearson

TINY = {"max_epochs": 3, "hidden": 8, "heads": 2, "depth": 1, "batch_size": 8, "top_k": [1, 3, 50]}
FAST_MODELS = [m for m in ModelName if m is not ModelName.RNAFM]


def _options(name: ModelName) -> dict | None:
    return TINY if name.value in ("he2rna", "trnasformer", "sequoia") else None


@pytest.mark.parametrize("name", FAST_MODELS, ids=lambda m: m.value)
def test_registry_fit_predict(name: ModelName, tmp_path, make) -> None:
    data = make(15, seed=1)
    train, val, test = (
        data.subset(range(0, 12)),
        data.subset(range(12, 16)),
        data.subset(range(16, 20)),
    )
    reg = build_regressor(name, _options(name))
    reg.fit(train, val, seed=3, out=tmp_path)
    p = reg.predict(test)
    assert p.mean.shape == (4, 13) and np.isfinite(p.mean).all()
    assert (p.std is None) == (name not in (ModelName.MEAN, ModelName.PRIOR_GAUSSIAN))
    again = build_regressor(name, _options(name))
    again.fit(train, val, seed=3, out=None)
    np.testing.assert_allclose(again.predict(test).mean, p.mean, rtol=1e-5, atol=1e-5)
    if hasattr(reg, "random_twin"):
        twin = reg.random_twin()
        twin.fit(train, None, seed=3, out=None)
        assert not np.allclose(twin.predict(test).mean, p.mean)
        assert (tmp_path / "history.jsonl").is_file()


def test_mean_baseline_is_the_training_mean(make) -> None:
    data = make(9)
    reg = build_regressor("mean")
    reg.fit(data, None, seed=0, out=None)
    p = reg.predict(data.subset([0, 1]))
    np.testing.assert_allclose(p.mean[0], data.expression.mean(0), rtol=1e-6)
    np.testing.assert_allclose(p.std[1], data.expression.std(0, ddof=1), rtol=1e-5, atol=1e-6)


def test_ridge_path_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    x, y, xt = rng.normal(size=(17, 6)), rng.normal(size=(17, 3)), rng.normal(size=(5, 6))
    mu, ymu = x.mean(0), y.mean(0)
    alphas = np.array([0.1, 3.0, 100.0])
    path = ridge_path(x - mu, y - ymu, xt - mu, alphas) + ymu
    for a, pred in zip(alphas, path, strict=True):
        np.testing.assert_allclose(
            pred, Ridge(alpha=a).fit(x, y).predict(xt), rtol=1e-8, atol=1e-10
        )


def test_ridge_learns_the_signal_and_matches_sklearn_refit(make) -> None:
    data = make(41, seed=2)
    train, test = data.subset(range(40)), data.subset(range(40, len(data)))
    reg = build_regressor("ridge")
    reg.fit(train, None, seed=0, out=None)
    r, _ = pearson(test.expression[:, :-1], reg.predict(test).mean[:, :-1])
    assert np.mean(r) > 0.8
    x = pooled_features(train.clusters, train.sizes)
    xz = (x - x.mean(0)) / x.std(0)
    yz = (train.expression - train.expression.mean(0)) / np.maximum(train.expression.std(0), 1e-8)
    xt = (pooled_features(test.clusters, test.sizes) - x.mean(0)) / x.std(0)
    ref = Ridge(alpha=reg.alpha_).fit(xz, yz).predict(xt)
    ours = (reg.predict(test).mean - train.expression.mean(0)) / np.maximum(
        train.expression.std(0), 1e-8
    )
    np.testing.assert_allclose(ours[:, :-1], ref[:, :-1], rtol=1e-3, atol=1e-4)


def test_pooled_features_is_the_tile_mean() -> None:
    clusters = np.array([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
    sizes = np.array([[1.0, 3.0, 0.0]])
    np.testing.assert_allclose(pooled_features(clusters, sizes), [[2.5, 1.5]])


def test_he2rna_top_k_pooling_matches_loop() -> None:
    torch.manual_seed(0)
    net = HE2RNANet(4, 3, hidden=5, dropout=0.0, ks=(1, 2, 10)).eval()
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 5, [True, True, False, True, False]])
    out = net(x, mask)
    h = net.mlp(x).detach()
    ref = torch.zeros(2, 3)
    for b in range(2):
        valid = h[b][mask[b]]  # (k_valid, G)
        for g in range(3):
            col = torch.sort(valid[:, g], descending=True).values
            ref[b, g] = torch.stack([col[:k].mean() for k in (1, 2, 10)]).mean()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_linear_attention_matches_explicit_formula() -> None:
    torch.manual_seed(1)
    att = LinearAttention(6, 2, 0.0).eval()
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True, False, True, True, False]])
    out = att(x, mask)
    q, k, v = att.qkv(x).view(2, 5, 3, 2, 3).unbind(2)
    phi = lambda t: torch.nn.functional.elu(t) + 1  # noqa: E731
    ref = torch.zeros(2, 5, 2, 3)
    for b in range(2):
        for h in range(2):
            for i in range(5):
                w = torch.stack([phi(q[b, i, h]) @ phi(k[b, j, h]) * mask[b, j] for j in range(5)])
                ref[b, i, h] = (w[:, None] * v[b, :, h]).sum(0) / w.sum()
    torch.testing.assert_close(out, att.out(ref.reshape(2, 5, 6)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [TransformerNet, SequoiaNet])
def test_padding_rows_do_not_change_predictions(cls) -> None:
    torch.manual_seed(2)
    net = cls(4, 3, hidden=8, depth=2, heads=2, dropout=0.0).eval()
    x = torch.randn(1, 3, 4)
    padded = torch.cat([x, 100 * torch.randn(1, 2, 4)], 1)  # (1, 5, 4)
    mask = torch.tensor([[True, True, True, False, False]])
    torch.testing.assert_close(
        net(padded, mask), net(x, torch.ones(1, 3, dtype=torch.bool)), rtol=1e-4, atol=1e-5
    )
