"""A sample whose slides share one pooled prediction of one profile counts once in the metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rnafm.evaluate import evaluate_predictions
from rnafm.evaluate.predictions_io import PredictionFile
from rnafm.predict.pooling import sample_rows


def test_sample_rows_keep_one_row_of_a_pooled_sample():
    rng = np.random.default_rng(0)
    pred, truth = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    keys = ["a", "a", "b", "b", "c", "d", "d", "d"]
    pred[1], truth[1] = pred[0], truth[0]  # a: one prediction of one profile
    truth[3] = truth[2]  # b: one profile, each slide its own prediction
    pred[6] = pred[7] = pred[5]  # d: one prediction, but a slide with its own profile
    truth[6] = truth[5]
    assert sample_rows(keys, pred, truth).tolist() == [0, 2, 3, 4, 5, 6, 7]
    truth[7] = truth[5]  # now d is pooled too
    assert sample_rows(keys, pred, truth).tolist() == [0, 2, 3, 4, 5]
    assert sample_rows(keys, pred).tolist() == [0, 2, 3, 4, 5]  # predictions alone
    assert sample_rows(list("abcdefgh"), pred, truth).tolist() == list(range(8))


def _pooled_file(n=13, g=6, seed=1):
    """Predictions of n slides, slides 2k and 2k+1 of samples 0-3 sharing one profile and one
    pooled prediction (with their draws)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, g))
    draws = y[:, None] + rng.normal(size=(n, 8, g)) * 0.7
    samples = [f"S{i}" for i in range(n)]
    for a in range(0, 8, 2):
        y[a + 1], draws[a + 1] = y[a], draws[a]
        samples[a + 1] = samples[a]
    mean, std = draws.mean(1), draws.std(1, ddof=1)
    pf = PredictionFile(slide_ids=[f"slide{i}" for i in range(n)], genes=[f"G{j}" for j in range(g)],
                        mean=mean, std=std, lower=mean - 1.64 * std, upper=mean + 1.64 * std,
                        observed=y, samples=samples, patient_ids=samples,
                        info={"interval_level": 0.9})  # fmt: skip
    return pf, draws


def test_evaluation_counts_a_pooled_sample_once():
    pf, draws = _pooled_file()
    ev = evaluate_predictions(pf, draws=draws)
    keep = [0, 2, 4, 6, 8, 9, 10, 11, 12]
    assert ev.summary["n_slides"] == 13
    assert ev.summary["n_evaluated"] == 9 and ev.summary["samples_counted_once"] == 4
    assert ev.pred.slide_ids == [f"slide{i}" for i in keep]
    want = np.mean([stats.pearsonr(pf.mean[keep, j], pf.observed[keep, j])[0] for j in range(6)])
    assert ev.summary["genes"]["mean_pearson_r"] == pytest.approx(want, rel=1e-6)
    # the same as evaluating the kept rows slide by slide
    sub = PredictionFile(
        slide_ids=[pf.slide_ids[i] for i in keep], genes=pf.genes, mean=pf.mean[keep],
        std=pf.std[keep], lower=pf.lower[keep], upper=pf.upper[keep], observed=pf.observed[keep],
        samples=[pf.samples[i] for i in keep], patient_ids=[pf.samples[i] for i in keep],
        info=pf.info,
    )  # fmt: skip
    ref = evaluate_predictions(sub, draws=draws[keep], per_slide=True)
    for k in ("mean_pearson_r", "median_pearson_r", "mean_rmse", "n_r_above_0.4"):
        assert ev.summary["genes"][k] == pytest.approx(ref.summary["genes"][k], rel=1e-9)
    assert ev.summary["uncertainty"]["crps"] == pytest.approx(ref.summary["uncertainty"]["crps"])
    # every slide on request
    every = evaluate_predictions(pf, draws=draws, per_slide=True)
    assert every.summary["n_evaluated"] == 13 and every.summary["samples_counted_once"] == 0
    want = np.mean([stats.pearsonr(pf.mean[:, j], pf.observed[:, j])[0] for j in range(6)])
    assert every.summary["genes"]["mean_pearson_r"] == pytest.approx(want, rel=1e-6)
    assert every.summary["genes"]["mean_pearson_r"] != ev.summary["genes"]["mean_pearson_r"]


def test_slides_with_their_own_predictions_are_all_counted():
    pf, draws = _pooled_file()
    pf.mean[1] += 0.1  # slide 1 predicted alone: the pair is two predictions of one profile
    ev = evaluate_predictions(pf, draws=draws)
    assert ev.summary["n_evaluated"] == 10 and ev.summary["samples_counted_once"] == 3
    # without a sample column, the TCGA sample barcode in the slide name groups the slides
    pf, _ = _pooled_file()
    pf.samples, pf.patient_ids = None, None
    ev = evaluate_predictions(pf)
    assert ev.summary["n_evaluated"] == 13
    pf.slide_ids = [f"TCGA-AA-{i // 2 if i < 8 else i:04d}-01Z-00-DX{1 + i % 2}" for i in range(13)]
    ev = evaluate_predictions(pf)
    assert ev.summary["n_evaluated"] == 9
