"""Slides of one sample that share its RNA: training records it, prediction pools them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np

RNAFM = Path(sys.executable).with_name("rnafm")


def _shared_reference(root: Path, out: Path) -> None:
    """all.csv with every patient's slides given the mean of their rows (as TCGA pairs every
    slide of a sample with the sample's one profile)."""
    import pandas as pd

    ref = pd.read_csv(root / "all.csv")
    rna = [c for c in ref.columns if c.startswith("rna_")]
    ref[rna] = ref.groupby("patient_id")[rna].transform("mean")
    ref.iloc[:17].to_csv(out / "train.csv", index=False)
    ref.iloc[17:].to_csv(out / "test.csv", index=False)


def _predict(run: Path, root: Path, ref: Path, out: Path, *extra: str) -> ad.AnnData:
    r = subprocess.run(
        [str(RNAFM), "predict", "--model", str(run), "--features", str(root / "features"),
         "--reference", str(ref), "--draws", "4", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return ad.read_h5ad(out), r.stdout


def test_slides_of_a_sample_share_the_pooled_prediction(tiny_cohort, tiny_overrides, tmp_path):
    import rnafm

    root = tiny_cohort["root"]
    _shared_reference(root, tmp_path)
    run = rnafm.train(tmp_path / "train.csv", root / "features", gene_sets=root / "sets.gmt",
                      out=tmp_path / "run", **tiny_overrides)  # fmt: skip
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["shared_expression"]["identical"] == cal["shared_expression"]["groups"] >= 3
    pooled, stdout = _predict(run, root, tmp_path / "test.csv", tmp_path / "p.h5ad")
    alone, _ = _predict(run, root, tmp_path / "test.csv", tmp_path / "a.h5ad", "--per-slide")
    # test slides S17 (P08), S18 + S19 (P09), S20 + S21 (P10), S22 (P11)
    assert pooled.obs["pooled_slides"].tolist() == [1, 2, 2, 2, 2, 1]
    assert "4 slides share their sample's pooled prediction" in stdout
    assert alone.obs["pooled_slides"].tolist() == [1] * 6
    for a, b in ((1, 2), (3, 4)):
        np.testing.assert_allclose(pooled.X[a], pooled.X[b])
        np.testing.assert_allclose(pooled.X[a], (alone.X[a] + alone.X[b]) / 2, atol=1e-5)
        assert not np.allclose(alone.X[a], alone.X[b])
        assert (pooled.layers["std"][a] <= np.sqrt(
            (alone.layers["std"][a] ** 2 + alone.layers["std"][b] ** 2) / 2) + 1e-5).all()  # fmt: skip
    for i in (0, 5):  # a slide alone in its sample keeps its own prediction
        np.testing.assert_allclose(pooled.X[i], alone.X[i])
    assert pooled.uns["rnafm"]["pooled"]["key"] == "sample"
    # rnafm evaluate counts each pooled sample once, every slide with --per-slide
    for extra, want in (((), "6 slides (4 rows: 2 pooled sample(s) counted once)"),
                        (("--per-slide",), "6 slides: mean r")):  # fmt: skip
        r = subprocess.run(
            [str(RNAFM), "evaluate", "-p", str(tmp_path / "p.h5ad"), "-r",
             str(tmp_path / "test.csv"), "-o", str(tmp_path / f"ev{len(extra)}"), *extra],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert want in r.stdout
        assert "the spread ranks the slides' error sizes at Spearman" in r.stdout
    m = json.loads((tmp_path / "ev0" / "metrics.json").read_text())
    assert (m["n_slides"], m["n_evaluated"], m["samples_counted_once"]) == (6, 4, 2)
    # a sample_id column says that S18 and S19 of patient P09 are two samples: not pooled
    import pandas as pd

    ref = pd.read_csv(tmp_path / "test.csv")
    ref.insert(2, "sample_id", ["", "a", "b", "", "", ""])
    ref.to_csv(tmp_path / "test_samples.csv", index=False)
    split, _ = _predict(run, root, tmp_path / "test_samples.csv", tmp_path / "s.h5ad")
    assert split.obs["pooled_slides"].tolist() == [1, 1, 1, 2, 2, 1]
    assert split.obs["sample"].tolist()[1:3] == ["P09/a", "P09/b"]
    np.testing.assert_allclose(split.X[1], alone.X[1], atol=1e-6)


def test_slides_with_their_own_rna_are_not_pooled(tiny_run, tiny_cohort, tmp_path):
    root = tiny_cohort["root"]
    assert json.loads((tiny_run / "calibration.json").read_text())["shared_expression"] is None
    pred, stdout = _predict(tiny_run, root, root / "test.csv", tmp_path / "p.h5ad")
    assert pred.obs["pooled_slides"].tolist() == [1] * 6
    assert "pooled" not in stdout
