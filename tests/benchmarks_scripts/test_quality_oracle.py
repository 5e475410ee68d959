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


def test_score_reports_the_per_gene_ceiling_of_the_spearman(bench):
    # a std equal to each gene's own test RMS error reaches the ceiling that score reports
    rng = np.random.default_rng(4)
    n, g = 53, 11
    mean = rng.normal(size=(n, g))
    err = rng.normal(size=(n, g)) * np.linspace(0.3, 2.0, g)
    rms = np.broadcast_to(np.sqrt(np.mean(err**2, axis=0)), err.shape)
    out = bench.score(mean + err, mean, std=rms)
    assert out["std_abs_error_spearman"] == pytest.approx(
        out["std_abs_error_spearman_gene_ceiling"], abs=1e-12
    )
    assert out["std_abs_error_spearman"] > 0.3


def test_score_rates_draws_by_their_mean_and_std(bench):
    # draws rescaled to the stated mean and std (as rnafm's): the CRPS is that of the mean and
    # std, the same as for a Gaussian model with them; the draws' own (too small) one is extra
    rng = np.random.default_rng(6)
    n, s, g = 400, 16, 9
    mean = rng.normal(size=(n, g))
    std = rng.uniform(0.5, 1.5, size=(n, g))
    truth = mean + std * rng.normal(size=(n, g))
    dev = rng.normal(size=(n, s, g))
    dev -= dev.mean(1, keepdims=True)
    draws = mean[:, None] + dev / dev.std(1, ddof=1, keepdims=True) * std[:, None]
    with_draws = bench.score(truth, mean, std=std, draws=draws)
    gaussian = bench.score(truth, mean, std=std)
    assert with_draws["crps"] == pytest.approx(gaussian["crps"], rel=1e-12)
    assert with_draws["crps_source"] == "gaussian"
    assert with_draws["crps_draws"] < with_draws["crps"]


def test_split_holds_out_a_whole_site_or_random_patients(bench, tmp_path):
    import pandas as pd

    patients = [f"P{i // 2:03d}" for i in range(40)]  # two slides per patient
    sites = ["SITE-A" if i % 4 < 2 else "SITE-B" for i in range(40)]  # a patient's site
    ref = pd.DataFrame({"wsi_file_name": [f"S{i}.svs" for i in range(40)], "patient_id": patients})
    meta = {"patients": patients, "sites": sites, "reference": ref}
    tr, te = bench.split_reference(tmp_path, meta, test_site="SITE-B")
    assert {sites[i] for i in te} == {"SITE-B"} and {sites[i] for i in tr} == {"SITE-A"}
    assert len(tr) + len(te) == 40
    written = pd.read_csv(tmp_path / "test.csv")
    assert list(written.wsi_file_name) == [f"S{i}.svs" for i in te]
    # the random split keeps a patient's slides together and mixes the sites
    tr, te = bench.split_reference(tmp_path, meta)
    assert not {patients[i] for i in tr} & {patients[i] for i in te}
    assert {sites[i] for i in te} == {"SITE-A", "SITE-B"}
    with pytest.raises(ValueError, match="SITE-C"):
        bench.split_reference(tmp_path, meta, test_site="SITE-C")


def test_pool_scores_a_pooled_sample_once(bench):
    from types import SimpleNamespace

    from rnafm.cohort.samples import SharedExpression

    rng = np.random.default_rng(5)
    n, g = 11, 6
    patients = [f"P{i // 2}" if i < 6 else f"P{i}" for i in range(n)]  # P0-P2 have two slides
    truth = rng.normal(size=(n, g))
    for i in (1, 3, 5):
        truth[i] = truth[i - 1]
    mean = truth + rng.normal(size=(n, g))
    test = SimpleNamespace(slide_ids=[f"s{i}" for i in range(n)], patient_ids=patients)
    pool = bench.Pool(SharedExpression("sample", 3, 3, 0.5), test)
    pooled = pool.mean(mean)
    keep = [0, 2, 4, 6, 7, 8, 9, 10]
    assert pool.rows(pooled, truth).tolist() == keep
    assert pool.pcc(mean, truth) == pytest.approx(bench.pcc_mean(pooled[keep], truth[keep]))
    alone = bench.Pool(None, test)  # nothing pooled: every slide scored
    assert alone.pcc(mean, truth) == pytest.approx(bench.pcc_mean(mean, truth))
