"""benchmarks/quality.py: the oracle Gaussian's CRPS reference."""

from __future__ import annotations

import numpy as np
import pytest

# the ``bench`` fixture (conftest.py) loads benchmarks/<SCRIPT>.py
SCRIPT = "quality"


def test_oracle_gaussian_reaches_the_crps_of_the_true_distribution(bench):
    # y = x b + noise with a per-gene sd: a perfect Gaussian forecast has E[CRPS] = sd / sqrt(pi)
    rng = np.random.default_rng(3)
    n_tr, n_te, d, g = 400, 3000, 5, 7
    b = rng.normal(size=(d, g))
    sd = np.linspace(0.2, 1.7, g)
    x = rng.normal(size=(n_tr + n_te, d))
    y = x @ b + rng.normal(size=(n_tr + n_te, g)) * sd
    out = bench.oracle_gaussian(x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:])
    assert out["crps"] == pytest.approx(np.mean(sd) / np.sqrt(np.pi), rel=0.03)
    assert 0.88 < out["coverage90"] < 0.92
    # the std is per gene: errors of the noisier genes are larger, so it ranks them
    assert out["std_abs_error_spearman"] > 0.3
