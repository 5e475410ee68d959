"""A run records what its training data came from; prediction uses and checks it."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

import rnafm
from rnafm.errors import IncompatibleRunError, InputError
from rnafm.features.clusters import ClusterConfig
from rnafm.training.run import RUN_FORMAT, check_run, data_record


def _copy_run(tiny_run, tmp_path, **meta_updates):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "config.json").read_text())
    meta.update(meta_updates)
    (run / "config.json").write_text(json.dumps(meta))
    return run


def test_config_gene_sets_are_not_overridden(tiny_cohort, tiny_overrides, tmp_path):
    from rnafm.training.config import TrainConfig, apply_overrides

    root = tiny_cohort["root"]
    config = apply_overrides(TrainConfig(), {**tiny_overrides, "gene_sets": str(root / "sets.gmt")})
    run = rnafm.train(root / "train.csv", root / "features", out=tmp_path / "r", config=config)
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["gene_sets"] == str(root / "sets.gmt")
    assert meta["run_format"] == RUN_FORMAT


def test_run_format_is_checked(tiny_run, tmp_path):
    assert check_run(tiny_run)["run_format"] == RUN_FORMAT
    run = _copy_run(tiny_run, tmp_path, run_format=RUN_FORMAT + 1)  # same rnafm version
    with pytest.raises(IncompatibleRunError, match=f"run format {RUN_FORMAT + 1}"):
        rnafm.load_model(run)


def test_cohort_data_records_clusters_and_encoder(tiny_cohort):
    from rnafm.cohort.dataset import load_cohort_data

    config = ClusterConfig(k=4, seed=2, max_iter=9)
    data = load_cohort_data(tiny_cohort["root"] / "features", cluster_config=config)
    assert data.cluster_config == config
    assert data.feature_attrs == {"encoder": "tiny"}
    record = data_record(data.subset([0, 1]))
    assert record["cluster_config"]["max_iter"] == 9
    assert record["features"] == {"encoder": "tiny"}


def test_prediction_clusters_as_recorded(tiny_run, tmp_path):
    recorded = ClusterConfig(k=5, seed=3, max_iter=7, fit_tiles=100)
    run = _copy_run(tiny_run, tmp_path, cluster_config=recorded.model_dump(mode="json"))
    predictor = rnafm.load_model(run)
    assert predictor.cluster_config == recorded
    assert rnafm.load_model(tiny_run).cluster_config == predictor.config.clusters  # older runs


def test_features_from_another_encoder_are_refused(tiny_run, tiny_cohort, tmp_path, caplog):
    features = tiny_cohort["root"] / "features"
    run = _copy_run(tiny_run, tmp_path, features={"encoder": "uni", "patch_size": 256})
    with pytest.raises(InputError, match="encoder = 'uni'.*encoder = 'tiny'"):
        rnafm.load_model(run).predict(features, slides="all", draws=4)
    same = _copy_run(tiny_run, tmp_path / "b", features={"encoder": "tiny"})
    with caplog.at_level(logging.WARNING):
        adata = rnafm.load_model(same).predict(features, slides="all", draws=4)
    assert adata.n_obs == 23 and "carry no encoder" not in caplog.text


def test_files_without_encoder_attributes_warn(tmp_path, caplog):
    from rnafm.cohort.dataset import load_cohort_data
    from rnafm.features.io import write_features

    rng = np.random.default_rng(0)
    for sid in ("A", "B"):
        write_features(tmp_path / f"{sid}.h5", rng.normal(size=(6, 3)), np.zeros((6, 2)), {})
    with caplog.at_level(logging.WARNING):
        data = load_cohort_data(tmp_path, cluster_config=ClusterConfig(k=2))
    assert data.feature_attrs is None
    assert "carry no encoder/tiling attributes" in caplog.text


def test_other_draws_or_sampler_warn_about_intervals(tiny_run, tiny_cohort, caplog):
    from rnafm.flow import SamplerConfig

    predictor = rnafm.load_model(tiny_run)
    data = predictor.load_data(tiny_cohort["root"] / "features", slides="S01,S02")
    cal = predictor.calibration
    calibrated = SamplerConfig.model_validate(cal["sampler"])
    with caplog.at_level(logging.WARNING, logger="rnafm.training.run"):
        predictor.predict_data(data, draws=int(cal["draws"]), sampler=calibrated)
    assert "calibrated for other sampling settings" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="rnafm.training.run"):
        predictor.predict_data(data, draws=2)
    assert "draws 2 (calibrated with" in caplog.text
    caplog.clear()
    steps = calibrated.model_copy(update={"steps": calibrated.steps + 1})
    with caplog.at_level(logging.WARNING, logger="rnafm.training.run"):
        predictor.predict_data(data, draws=int(cal["draws"]), sampler=steps)
    assert "sampler steps" in caplog.text


def test_truncated_checkpoint_names_the_file(tmp_path):
    from rnafm.training.checkpoint import load_checkpoint

    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="checkpoint.pt.*--no-resume"):
        load_checkpoint(ckpt, None, None, {}, None)


def test_explicit_none_removes_the_time_budget(tiny_run):
    from rnafm.demo import _flow_config, demo_config
    from rnafm.evaluate.baselines.flow import FlowConfig
    from rnafm.training.config import TrainConfig, apply_overrides

    meta = json.loads((tiny_run / "config.json").read_text())
    assert meta["config"]["optim"]["max_minutes"] is None  # the tests budget by epochs
    unset = apply_overrides(TrainConfig(), {"optim.max_minutes": None})
    assert unset.optim.max_minutes == TrainConfig().optim.max_minutes  # CLI: unset options
    flow = FlowConfig.model_validate({"train": {"optim.max_minutes": None}})
    assert flow.train.optim.max_minutes is None
    for size in ("quick", "default"):
        cfg = demo_config(size)
        train = _flow_config(cfg, ClusterConfig(k=cfg.n_clusters)).train
        assert train.optim.max_minutes is None
        assert train.optim.epochs == cfg.train["optim.epochs"]
    timed = demo_config("quick")
    timed = timed.model_copy(update={"train": {**timed.train, "optim.max_minutes": 0.5}})
    assert _flow_config(timed, ClusterConfig()).train.optim.max_minutes == 0.5


def test_check_features_warns_only_when_attributes_are_missing(tmp_path, caplog):
    from rnafm.training.run import check_features

    with caplog.at_level(logging.WARNING, logger="rnafm.training.run"):
        check_features({}, {"encoder": "uni"}, tmp_path)  # an older run: nothing recorded
        assert caplog.text == ""
        check_features({"features": {"encoder": "uni"}}, {"encoder": "uni"}, tmp_path)
        assert caplog.text == ""
        check_features({"features": None}, None, tmp_path)  # neither side knows: nothing to say
        assert caplog.text == ""
        check_features({"features": None}, {"encoder": "uni"}, tmp_path)
    assert "the run's training features carry no encoder/tiling attributes" in caplog.text
