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


def test_gene_scale_ceiling_is_the_spearman_of_each_genes_own_test_rms(bench):
    # errors with a per-gene sd: the ceiling is the pooled Spearman of the per-gene RMS (checked
    # against scipy on the broadcast RMS) and a model whose std is that RMS reaches it exactly
    from scipy.stats import spearmanr

    rng = np.random.default_rng(4)
    n, g = 53, 11
    mean = rng.normal(size=(n, g))
    err = rng.normal(size=(n, g)) * np.linspace(0.3, 2.0, g)
    truth = mean + err
    rms = np.sqrt(np.mean(err**2, axis=0))
    ceiling = bench.gene_scale_ceiling(truth, mean)
    ref = spearmanr(np.broadcast_to(rms, err.shape).ravel(), np.abs(err).ravel()).statistic
    assert ceiling == pytest.approx(ref, abs=1e-12)
    out = bench.score(truth, mean, std=np.broadcast_to(rms, err.shape))
    assert out["std_abs_error_spearman"] == pytest.approx(ceiling, abs=1e-12)
    assert out["std_abs_error_spearman_gene_ceiling"] == pytest.approx(ceiling, abs=1e-12)
    # a flat std per gene, shuffled across genes, ranks the errors worse than the ceiling
    worse = bench.score(truth, mean, std=np.broadcast_to(rms[::-1], err.shape))
    assert worse["std_abs_error_spearman"] < ceiling - 0.2
