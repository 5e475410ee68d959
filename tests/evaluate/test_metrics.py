"""Per-gene metrics against scipy/numpy oracles, and Steiger's test against simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rnafm.metrics import (
    benjamini_hochberg,
    gene_metrics,
    mae,
    pearson,
    rmse,
    spearman,
    steiger_test,
    summarize_genes,
    top_k_summary,
    well_predicted,
)


@pytest.fixture
def yx():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(23, 11)) * 2 + 5
    x = 0.5 * y + rng.normal(size=y.shape)
    x[:, 3] = np.round(x[:, 3])  # ties for Spearman
    x[:, 7] = 4.2  # a constant prediction
    return y, x


def test_pearson_and_spearman_match_scipy(yx) -> None:
    y, x = yx
    r, p = pearson(y, x)
    rho, prho = spearman(y, x)
    for j in range(y.shape[1]):
        if j == 7:
            assert np.isnan(r[j]) and np.isnan(p[j]) and np.isnan(rho[j])
            continue
        ref = stats.pearsonr(y[:, j], x[:, j])
        np.testing.assert_allclose([r[j], p[j]], [ref.statistic, ref.pvalue], rtol=1e-9, atol=1e-12)
        ref = stats.spearmanr(y[:, j], x[:, j])
        np.testing.assert_allclose(
            [rho[j], prho[j]], [ref.statistic, ref.pvalue], rtol=1e-9, atol=1e-12
        )


def test_errors_match_numpy(yx) -> None:
    y, x = yx
    np.testing.assert_allclose(rmse(y, x), np.sqrt(np.mean((y - x) ** 2, axis=0)))
    np.testing.assert_allclose(mae(y, x), np.mean(np.abs(y - x), axis=0))
    t = gene_metrics(y, x, [f"g{j}" for j in range(11)])
    np.testing.assert_allclose(t["rmse_over_mean"], t["rmse"] / y.mean(0))
    assert list(t.index[:2]) == ["g0", "g1"]


def test_bh_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=9), [1.0, 0.0]])
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    p2 = p.copy()
    p2[[3, 17]] = np.nan  # NaNs are skipped, not counted
    q = benjamini_hochberg(p2)
    ok = ~np.isnan(p2)
    np.testing.assert_allclose(q[ok], stats.false_discovery_control(p2[ok]))
    assert np.isnan(q[[3, 17]]).all()


def _simulate(rho_ya: float, rho_yb: float, rho_ab: float, n: int, reps: int, seed: int):
    """reps samples of size n from a trivariate normal; returns the three sample correlations."""
    c = np.array([[1, rho_ya, rho_yb], [rho_ya, 1, rho_ab], [rho_yb, rho_ab, 1]])
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(3), c, size=(reps, n))
    z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
    r = np.einsum("rni,rnj->rij", z, z) / n
    return r[:, 0, 1], r[:, 0, 2], r[:, 1, 2]


@pytest.mark.parametrize("method", ["williams", "steiger_z"])
def test_steiger_is_calibrated_under_the_null(method: str) -> None:
    # equal correlations with y, strongly dependent predictors: rejection rate ~ alpha
    r1, r2, r12 = _simulate(0.5, 0.5, 0.6, n=60, reps=4000, seed=2)
    _, p = steiger_test(r1, r2, r12, 60, method=method)
    assert abs((p < 0.05).mean() - 0.05) < 0.015
    assert abs((p < 0.2).mean() - 0.2) < 0.03


def test_steiger_z_variance_matches_simulation() -> None:
    # the Z denominator is the sd of z(r_ya) - z(r_yb): check it against Monte Carlo
    n = 200
    r1, r2, r12 = _simulate(0.6, 0.3, 0.4, n=n, reps=3000, seed=3)
    diff = np.arctanh(r1) - np.arctanh(r2)
    stat, _ = steiger_test(r1, r2, r12, n, method="steiger_z")
    implied_sd = diff / stat  # per replicate
    np.testing.assert_allclose(np.median(implied_sd), diff.std(), rtol=0.06)


def test_williams_and_steiger_agree_for_large_n_and_have_power() -> None:
    r1, r2, r12 = (
        np.array([0.62, 0.3, 0.1]),
        np.array([0.55, 0.31, -0.2]),
        np.array([0.7, 0.2, 0.5]),
    )
    t, pt = steiger_test(r1, r2, r12, 5000)
    z, pz = steiger_test(r1, r2, r12, 5000, method="steiger_z")
    np.testing.assert_allclose(t, z, rtol=0.05)
    assert pt[0] < 1e-6 and pt[2] < 1e-6 and pt[1] > 0.3
    assert np.sign(t[0]) > 0 and np.sign(steiger_test(r2, r1, r12, 5000)[0][0]) < 0


def test_well_predicted_rules() -> None:
    rng = np.random.default_rng(4)
    n, g = 80, 6
    y = rng.normal(size=(n, g))
    good = y + 0.5 * rng.normal(size=(n, g))
    rand = rng.normal(size=(n, g)) * 0.1
    model = good.copy()
    model[:, 1] = -good[:, 1]  # negative r: never well predicted
    model[:, 2] = rand[:, 2] + 0.01 * rng.normal(size=n)  # no better than random
    model[:, 3] = good[:, 3] * 10  # r high but RMSE worse than the random model
    t = well_predicted(y, model, rand)
    assert t["well_predicted"].tolist() == [True, False, False, False, True, True]
    np.testing.assert_allclose(t["random_rmse"], rmse(y, rand))


def test_top_k_and_summary() -> None:
    values = np.array([0.1, 0.9, np.nan, 0.5, 0.3])
    rank = np.array([5.0, 1.0, 9.0, 4.0, np.nan])
    s = top_k_summary(values, rank, ks=(1, 2, 3, 4))
    # by rank: idx0 (5), idx2 (NaN value, skipped), idx3 (4), idx1 (1); idx4 has no rank
    assert s == {
        "top_1": 0.1,
        "top_2": pytest.approx(0.3),
        "top_3": pytest.approx(0.5),
        "top_4": None,
    }
    t = gene_metrics(*[np.random.default_rng(5).normal(size=(9, 30)) for _ in range(2)])
    out = summarize_genes(t, val_r=np.arange(30.0), ks=(5, 50))
    assert out["top_k_pearson_r"]["ranked_by_test"]["top_50"] is None
    best5 = np.sort(t["pearson_r"].to_numpy())[-5:].mean()
    assert out["top_k_pearson_r"]["ranked_by_test"]["top_5"] == pytest.approx(best5)
    assert out["top_k_pearson_r"]["ranked_by_validation"]["top_5"] == pytest.approx(
        t["pearson_r"].iloc[-5:].mean()
    )
    assert out["n_r_above_0.4"] == int((t["pearson_r"] > 0.4).sum())
