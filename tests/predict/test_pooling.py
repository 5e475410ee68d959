"""Pooled predictions of slides that share one RNA sample, against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.cohort.samples import SharedExpression
from rnafm.predict.pooling import pool_predictions
from rnafm.predict.predictor import PredictionArrays


def test_pooling_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    n, s, g = 7, 9, 5
    draws = (rng.normal(size=(n, s, g)) * rng.uniform(0.5, 2, (n, 1, g))).astype(np.float32)
    mean = draws.mean(1)
    std = draws.std(1, ddof=1)
    pred = PredictionArrays(mean=mean, std=std, lower=mean - 1.6 * std, upper=mean + 1.6 * std,
                            draws=draws, level=0.9)  # fmt: skip
    keys = ["a", "b", "a", "c", "b", "a", "d"]
    shared = SharedExpression(key="sample", groups=2, identical=2, error_corr=0.6)
    before = {k: np.copy(getattr(pred, k)) for k in ("mean", "std", "draws")}
    out = pool_predictions(pred, keys, shared)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(pred, k), v)  # the input is not modified
    for key in set(keys):
        ix = [i for i, k in enumerate(keys) if k == key]
        m = len(ix)
        f = np.sqrt((1 + (m - 1) * 0.6) / m)
        want_mean = np.mean([mean[i] for i in ix], axis=0)
        want_std = f * np.sqrt(np.mean([std[i] ** 2 for i in ix], axis=0))
        for i in ix:
            np.testing.assert_allclose(out.mean[i], want_mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out.std[i], want_std, rtol=1e-5)
            np.testing.assert_allclose(out.upper[i] - out.mean[i], 1.6 * want_std, rtol=1e-4)
            np.testing.assert_allclose(out.mean[i] - out.lower[i], 1.6 * want_std, rtol=1e-4)
            # the draws say the same: their mean and std are the pooled ones
            np.testing.assert_allclose(out.draws[i].mean(0), want_mean, atol=1e-5)
            np.testing.assert_allclose(out.draws[i].std(0, ddof=1), want_std, rtol=1e-4)
    assert out.level == 0.9
    # fully correlated errors: pooling moves the mean and keeps the spread
    same = pool_predictions(pred, keys, SharedExpression("sample", 2, 2, 1.0))
    assert same.std[0] == pytest.approx(np.sqrt((std[0] ** 2 + std[2] ** 2 + std[5] ** 2) / 3))


def test_point_predictions_pool_their_mean_only():
    from rnafm.evaluate.baselines.base import Predictions

    mean = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = pool_predictions(Predictions(mean=mean), ["x", "y", "x", "z"],
                           SharedExpression("sample", 3, 3, 0.2))  # fmt: skip
    np.testing.assert_allclose(out.mean, [[3, 4, 5], [3, 4, 5], [3, 4, 5], [9, 10, 11]])
    assert out.std is None and out.draws is None
