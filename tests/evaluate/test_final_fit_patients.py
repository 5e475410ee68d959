"""Baselines' final fits see the patients rnafm's final model sees (training + validation), and
the prior-Gaussian ablation (rnafm without the flow) is rnafm's own ridge prior."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.evaluate import CVConfig, cross_validate, load_folds
from rnafm.evaluate.baselines import build_regressor
from rnafm.evaluate.baselines.base import with_validation
from rnafm.metrics import coverage, pearson


def _split(data):
    n = len(data.slide_ids)
    return (
        data.subset(range(0, n - 10)),
        data.subset(range(n - 10, n - 5)),
        data.subset(range(n - 5, n)),
    )


@pytest.mark.parametrize("name", ["mean", "ridge"])
def test_final_fit_uses_training_and_validation_slides(name, make) -> None:
    train, val, test = _split(make(30, seed=5))
    reg = build_regressor(name)
    reg.fit(train, val, seed=2, out=None)
    both = build_regressor(name)
    both.fit(with_validation(train, val), None, seed=2, out=None)
    np.testing.assert_allclose(reg.predict(test).mean, both.predict(test).mean, rtol=1e-6)
    only = build_regressor(name)
    only.fit(train, None, seed=2, out=None)
    assert not np.allclose(only.predict(test).mean, reg.predict(test).mean)
    # the validation predictions come from the model that had not seen the validation slides
    np.testing.assert_allclose(reg.val_predictions.mean, only.predict(val).mean, rtol=1e-6)


def test_cv_ranks_genes_with_the_honest_validation_predictions(tmp_path, make) -> None:
    data = make(19, seed=3)
    res = cross_validate(data, out=tmp_path, models=["ridge"], config=CVConfig(n_folds=3, seed=1))
    folds = load_folds(tmp_path / "folds.json", patient_ids=data.patient_ids)
    from rnafm.cohort.splits import fold_indices

    tr, va, _ = fold_indices(folds[0], data.patient_ids)
    only = build_regressor("ridge")
    only.fit(data.subset(tr), None, seed=1, out=None)
    expected = pearson(data.expression[va], only.predict(data.subset(va)).mean)[0]
    import anndata as ad

    got = ad.read_h5ad(res.predictions["ridge"]).uns["rnafm_cv"]["val_pearson"][0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, equal_nan=True)


def test_prior_gaussian_is_rnafms_prior_with_a_calibrated_gaussian(make) -> None:
    from rnafm.training.config import TrainConfig
    from rnafm.training.targets import prepare_targets

    train, val, test = _split(make(40, seed=6))
    reg = build_regressor("prior_gaussian")
    reg.fit(train, None, seed=3, out=None)
    targets, _ = prepare_targets(train, np.asarray(train.expression, float), TrainConfig(seed=3))
    p = reg.predict(test)
    np.testing.assert_allclose(
        p.mean, targets.prior_log2(test.clusters, test.sizes), rtol=1e-5, atol=1e-5
    )
    sd = targets.prior.res_std * targets.norm.std  # no validation: no conformal scaling
    np.testing.assert_allclose(p.std, np.broadcast_to(sd, p.std.shape), rtol=1e-5)
    assert p.level == 0.9 and np.all(p.lower < p.mean) and np.all(p.upper > p.mean)

    cal = build_regressor("prior_gaussian")
    cal.fit(train, val, seed=3, out=None)
    pv = cal.val_predictions  # from the training-only prior, conformally scaled on validation
    np.testing.assert_allclose(pv.mean, reg.predict(val).mean, rtol=1e-5, atol=1e-5)
    assert coverage(val.expression, pv.lower, pv.upper) >= 0.9
    assert cal.scale_ != 1.0
    # the final prior was refitted on training + validation slides (as rnafm refits its prior)
    assert not np.allclose(cal.predict(test).mean, reg.predict(test).mean)


def test_cv_and_report_show_the_no_flow_ablation_row(tmp_path, make) -> None:
    from types import SimpleNamespace

    import pandas as pd

    from rnafm.report.html import _summary_rows

    data = make(19, seed=3)
    res = cross_validate(
        data, out=tmp_path, models=["prior_gaussian"], config=CVConfig(n_folds=3, seed=1)
    )
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert summary.loc["prior_gaussian", "label"] == "prior_gaussian (rnafm_no_flow)"
    assert summary.loc["prior_gaussian", "mean_pearson_r"] > 0.5
    assert np.isfinite(summary.loc["prior_gaussian", "crps"])
    assert 0.5 < summary.loc["prior_gaussian", "coverage_90"] <= 1.0
    rows = _summary_rows({"prior_gaussian": SimpleNamespace(summary=res.metrics["prior_gaussian"])})
    assert rows[0]["model"] == "prior_gaussian (rnafm_no_flow)" and rows[0]["CRPS"] is not None
