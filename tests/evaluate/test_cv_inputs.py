"""Cross-validation reuses a cached fold only on the same input data."""

from __future__ import annotations

import logging

import numpy as np

from rnafm.evaluate import CVConfig, cross_validate
from rnafm.evaluate import cv as cv_mod


def _count_fits(monkeypatch) -> list[str]:
    fits: list[str] = []
    real = cv_mod.build_regressor

    def counting(name, options):
        fits.append(name)
        return real(name, options)

    monkeypatch.setattr(cv_mod, "build_regressor", counting)
    return fits


def test_rerun_with_other_features_or_expression_recomputes(tmp_path, make, monkeypatch, caplog):
    data = make(seed=3)
    cfg = CVConfig(n_folds=3, seed=1, random_baseline=False)
    fits = _count_fits(monkeypatch)
    cross_validate(data, out=tmp_path, models=["ridge"], config=cfg)
    assert len(fits) == 3
    cross_validate(data, out=tmp_path, models=["ridge"], config=cfg)
    assert len(fits) == 3  # same inputs: every fold reused

    other = make(seed=3)
    other.clusters = other.clusters + 1.0  # features from another encoder
    with caplog.at_level(logging.WARNING, logger="rnafm.evaluate.cv"):
        cross_validate(other, out=tmp_path, models=["ridge"], config=cfg)
    assert len(fits) == 6
    assert "changed: features" in caplog.text

    caplog.clear()
    shifted = make(seed=3)
    shifted.expression = shifted.expression * 2.0  # other expression values
    with caplog.at_level(logging.WARNING, logger="rnafm.evaluate.cv"):
        res = cross_validate(shifted, out=tmp_path, models=["ridge"], config=cfg)
    assert len(fits) == 9
    assert "changed: expression" in caplog.text
    import anndata

    oof = anndata.read_h5ad(res.predictions["ridge"])
    # predictions follow the doubled expression (ridge is linear in the targets)
    assert np.nanmean(oof.X) > 1.5 * np.nanmean(data.expression)


def test_fingerprint_names_what_changed(make) -> None:
    from rnafm.features.clusters import ClusterConfig

    a = make(seed=0)
    b = make(seed=0)
    assert a.fingerprint() == b.fingerprint()
    b.cluster_config = ClusterConfig(k=7, max_iter=20)
    diff = {k for k in a.fingerprint() if a.fingerprint()[k] != b.fingerprint()[k]}
    assert diff == {"clusters"}
    sub = b.subset([0, 1])
    assert sub.cluster_config == b.cluster_config


def test_cli_cv_gives_rnafm_its_clusters_and_gene_sets() -> None:
    from rnafm.cli.evaluate import _rnafm_options
    from rnafm.evaluate.baselines.flow import FlowConfig
    from rnafm.features.clusters import ClusterConfig

    clusters = ClusterConfig(k=12, seed=4)
    opts = _rnafm_options({"rnafm": {"train": {"optim.epochs": 2}}}, clusters, "reactome")
    flow = FlowConfig.model_validate(opts["rnafm"])
    assert flow.train.clusters == clusters  # not TrainConfig's default k-means settings
    assert flow.train.gene_sets == "reactome"
    assert flow.train.optim.epochs == 2
    mine = _rnafm_options({"rnafm": {"train": {"gene_sets": "go_bp"}}}, clusters, "reactome")
    assert FlowConfig.model_validate(mine["rnafm"]).train.gene_sets == "go_bp"


def test_same_slide_in_two_feature_folders_warns(tmp_path, caplog) -> None:
    from rnafm.cohort.dataset import load_cohort_data
    from rnafm.features.clusters import ClusterConfig
    from rnafm.features.io import write_features

    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_features(tmp_path / folder / "S1.h5", rng.normal(size=(5, 3)), None, {})
    with caplog.at_level(logging.WARNING):
        data = load_cohort_data([tmp_path / "a", tmp_path / "b"], cluster_config=ClusterConfig(k=2))
    assert data.slide_ids == ["S1"]
    assert str(tmp_path / "a" / "S1.h5") in caplog.text
    assert str(tmp_path / "b" / "S1.h5") in caplog.text


def test_rnafm_in_cv_says_a_site_validation_split_is_not_applied(monkeypatch, caplog) -> None:
    import rnafm
    import rnafm.pathways
    from rnafm.evaluate.baselines.flow import FlowConfig, FlowRegressor

    fitted = []
    monkeypatch.setattr(rnafm.pathways, "select_tokens", lambda *a, **k: None)
    monkeypatch.setattr(rnafm.pathways, "load_gene_sets", lambda *a, **k: None)
    monkeypatch.setattr(rnafm, "fit", lambda train, val, **k: fitted.append(val) or "run")
    monkeypatch.setattr(rnafm, "load_model", lambda run: run)

    class Data:
        genes = ["G1"]

    for hold_out, warned in (("patient", False), ("site", True)):
        caplog.clear()
        config = FlowConfig.model_validate({"train": {"validation.hold_out": hold_out}})
        with caplog.at_level(logging.WARNING):
            FlowRegressor(config).fit(Data(), "fold-val", seed=0, out=None)
        assert ("not applied inside cross-validation" in caplog.text) is warned
    assert fitted == ["fold-val", "fold-val"]  # the fold's own validation split, both times
