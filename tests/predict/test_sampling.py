"""Prediction maths: antithetic noise, model-space -> log2 transform with blend, summaries."""

from __future__ import annotations

import numpy as np
import torch

from rnafm.flow.draws import _noise, summarise
from rnafm.training.targets import OutputTransform


def test_antithetic_noise_pairs():
    g = torch.Generator().manual_seed(0)
    z = _noise(3, 5, 7, antithetic=True, generator=g, device="cpu").reshape(3, 5, 7)
    torch.testing.assert_close(z[:, 1], -z[:, 0])
    torch.testing.assert_close(z[:, 3], -z[:, 2])
    assert not torch.allclose(z[:, 4], -z[:, 2])  # odd draw count: last draw is a fresh one
    plain = _noise(3, 5, 7, antithetic=False, generator=g, device="cpu")
    assert plain.shape == (15, 7)


def test_transform_blend_keeps_spread_and_shrinks_mean():
    rng = np.random.default_rng(0)
    n, s, g = 4, 6, 5
    t = OutputTransform(
        mean=rng.normal(size=g), std=rng.uniform(1, 2, g), res_scale=rng.uniform(0.5, 1, g)
    )
    x = rng.normal(size=(n, s, g))
    prior = rng.normal(size=(n, g))
    full = t.to_log2(x, prior)
    np.testing.assert_allclose(full, (prior[:, None] + t.res_scale * x) * t.std + t.mean)
    half = t.to_log2(x, prior, blend=0.5)
    np.testing.assert_allclose(half.std(1), full.std(1))
    expect = (prior + 0.5 * t.res_scale * x.mean(1)) * t.std + t.mean
    np.testing.assert_allclose(half.mean(1), expect)
    np.testing.assert_allclose(t.to_log2(x, None, blend=0.0), full - prior[:, None] * t.std)


def test_summarise_interval():
    d = np.random.default_rng(1).normal(size=(2, 9, 3))
    s = summarise(d, level=0.9)
    np.testing.assert_allclose(s["std"], d.std(1, ddof=1))
    np.testing.assert_allclose(s["upper"] - s["mean"], 1.6448536 * s["std"], rtol=1e-6)
    s2 = summarise(d, level=0.9, multiplier=2.0)
    np.testing.assert_allclose(s2["mean"] - s2["lower"], 2.0 * s2["std"])
    assert s2["mean"].shape == (2, 3)
    np.testing.assert_allclose(s2["mean"], d.mean(1))
