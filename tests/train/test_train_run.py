"""End to end: rnafm.train -> run directory -> load_model -> predict; resume; determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rnafm
from rnafm.errors import IncompatibleRunError, InputError
from rnafm.training import loop as loop_module
from rnafm.training.run import REQUIRED, RUN_FORMAT, read_history


@pytest.fixture
def train_tiny(tiny_cohort, tiny_overrides):
    def run(out, **extra):
        root = tiny_cohort["root"]
        return rnafm.train(
            root / "train.csv",
            root / "features",
            gene_sets=root / "sets.gmt",
            out=out,
            **{**tiny_overrides, **extra},
        )

    return run


def test_run_directory_has_everything(tiny_run):
    for name in (*REQUIRED, "history.jsonl", "val_metrics.json", "prior.npz", "split.json"):
        assert (tiny_run / name).is_file(), name
    meta = json.loads((tiny_run / "config.json").read_text())
    assert meta["rnafm_version"] == rnafm.__version__
    assert meta["config"]["model"]["hidden"] == 16
    history = read_history(tiny_run)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and "val_pcc" in r for r in history)
    cal = json.loads((tiny_run / "calibration.json").read_text())
    assert cal["level"] == 0.9 and cal["multiplier"] > 0 and 0 <= cal["blend"] <= 1
    split = json.loads((tiny_run / "split.json").read_text())
    assert not set(split["train_patients"]) & set(split["val_patients"])
    # the tile head (the maps' per-tile expression): fitted, recorded, loaded
    assert (tiny_run / "tile_head.safetensors").is_file()
    record = json.loads((tiny_run / "val_metrics.json").read_text())["tile_head"]
    assert record["epochs"] == 3 and np.isfinite(record["val_pcc"])
    # the prior the out-of-fold PCC chose, as prior.npz holds it
    chosen = json.loads((tiny_run / "val_metrics.json").read_text())["prior"]
    assert chosen == rnafm.load_model(tiny_run).targets.prior.describe()
    assert chosen["kernel"] in ("linear", "rbf", "composition")
    head = rnafm.load_model(tiny_run).tile_head
    assert head is not None and head.expression.out_features == len(
        json.loads((tiny_run / "genes.json").read_text())
    )


def test_a_run_without_a_tile_head_loads_without_one(train_tiny, tmp_path):
    out = train_tiny(tmp_path / "run", **{"tile_head.fit_tile_head": False})
    assert not (out / "tile_head.safetensors").exists()
    assert "tile_head" not in json.loads((out / "val_metrics.json").read_text())
    assert rnafm.load_model(out).tile_head is None


def test_predict_anndata(tiny_run, tiny_cohort, tmp_path):
    root = tiny_cohort["root"]
    predictor = rnafm.load_model(tiny_run)
    out = tmp_path / "pred.h5ad"
    adata = predictor.predict(
        root / "features",
        reference=root / "test.csv",
        draws=6,
        out=out,
        draws_out=tmp_path / "d.h5",
    )
    assert list(adata.obs_names) == tiny_cohort["slides"][17:]
    assert list(adata.var_names) == predictor.genes
    assert set(adata.layers) == {"std", "lower", "upper"}
    assert np.all(adata.layers["lower"] <= adata.X) and np.all(adata.X <= adata.layers["upper"])
    assert np.all(adata.layers["std"] >= 0)
    assert adata.obsm["pathway_scores"].shape == (6, len(adata.uns["pathways"]))
    assert adata.uns["rnafm"]["draws"] == 6 and adata.uns["interval_level"] == 0.9
    assert list(adata.obs["patient_id"]) == [f"P{i // 2:02d}" for i in range(17, 23)]
    import anndata
    import h5py

    back = anndata.read_h5ad(out)
    np.testing.assert_allclose(back.X, adata.X)
    with h5py.File(tmp_path / "d.h5") as f:
        draws = f["draws"][:]
    assert draws.shape == (6, 6, adata.n_vars)
    # the predictive mean is the mean of the saved draws
    np.testing.assert_allclose(draws.mean(1), adata.X, rtol=1e-4, atol=1e-4)


def test_predict_same_seed_same_result_and_missing_slides(tiny_run, tiny_cohort):
    root = tiny_cohort["root"]
    p = rnafm.load_model(tiny_run)
    a = p.predict(root / "features", slides=["S01", "S02", "NOPE"], draws=4, seed=3)
    b = p.predict(root / "features", slides="S01,S02", draws=4, seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.n_obs == 2 and ["NOPE", "no feature file"] in [list(s) for s in a.uns["skipped"]]


def test_determinism_and_resume(train_tiny, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    a = train_tiny(tmp_path / "a")
    wa = load_file(a / "model.safetensors")
    # a second run, interrupted after 2 epochs then resumed, gives the same weights bit for bit
    # (determinism of the first epochs and exact resumption)
    real = loop_module._train_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "_train_epoch", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tmp_path / "c")
    monkeypatch.setattr(loop_module, "_train_epoch", real)
    c = train_tiny(tmp_path / "c")
    wc = load_file(c / "model.safetensors")
    assert all(np.array_equal(wa[k], wc[k]) for k in wa)
    assert [r["epoch"] for r in read_history(c)] == [1, 2, 3]
    # a different config on the same folder is refused, not silently mixed
    with pytest.raises(InputError, match="different configuration"):
        train_tiny(tmp_path / "c", seed=5)


def test_incompatible_runs(tiny_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    (bad / "tokens.json").unlink()
    with pytest.raises(IncompatibleRunError, match="missing tokens.json"):
        rnafm.load_model(bad)
    shutil.copy(tiny_run / "tokens.json", bad / "tokens.json")
    meta = json.loads((bad / "config.json").read_text())
    meta["run_format"] = RUN_FORMAT + 1  # a newer run format, same rnafm version
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleRunError, match=f"run format {RUN_FORMAT + 1} written by"):
        rnafm.load_model(bad)
    del meta["run_format"]  # a 0.1.0 run without a format number counts as format 1
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleRunError, match="run format 1 written by"):
        rnafm.load_model(bad)
    meta["rnafm_version"] = "99.0.0"
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleRunError, match="run format None written by rnafm 99.0.0"):
        rnafm.load_model(bad)


def test_no_validation_split(train_tiny, tiny_cohort, tmp_path):
    run = train_tiny(tmp_path / "noval", **{"validation.fraction": 0.0, "prior.kind": "none"})
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["method"] == "none" and cal["blend"] == 1.0
    assert not (run / "prior.npz").exists()
    adata = rnafm.load_model(run).predict(tiny_cohort["root"] / "features", slides="all", draws=2)
    assert adata.n_obs == 23


def test_predict_with_a_reference_whose_values_are_unreadable(tiny_run, tiny_cohort, tmp_path):
    import pandas as pd

    ref = pd.read_csv(tiny_cohort["root"] / "test.csv")
    ref["rna_GENE0"] = -5.0  # negative values: load_reference refuses them
    bad = tmp_path / "test_bad.csv"
    ref.to_csv(bad, index=False)
    adata = rnafm.load_model(tiny_run).predict(
        tiny_cohort["root"] / "features", reference=bad, draws=2
    )
    assert list(adata.obs_names) == tiny_cohort["slides"][17:]
