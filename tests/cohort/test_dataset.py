"""load_cohort_data: matching reference slides to feature files, skips, errors."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.cohort.dataset import load_cohort_data
from rnafm.cohort.reference import Reference
from rnafm.errors import InputError
from rnafm.features.clusters import ClusterConfig
from rnafm.features.io import write_features

CFG = ClusterConfig(k=4, seed=0)


def _folder(tmp_path, names, *, d=5, n=9):
    rng = np.random.default_rng(0)
    for name in names:
        write_features(tmp_path / f"{name}.h5", rng.normal(size=(n, d)), None, {})
    return tmp_path


def _ref(slides):
    return Reference(
        slide_ids=list(slides),
        patient_ids=[s.split("_")[0] for s in slides],
        projects=["X"] * len(slides),
        genes=["A", "B"],
        values=np.arange(2 * len(slides), dtype=np.float32).reshape(-1, 2),
        sites=[f"site-{s}" for s in slides],
    )


def test_match_and_skip(tmp_path, caplog):
    feats = _folder(tmp_path, ["p1_s1", "p1_s2", "p2_s1", "extra"])
    bad = np.ones((4, 5), np.float32)
    bad[0, 0] = np.nan
    write_features(feats / "p3_s1.h5", bad, None, {})
    write_features(feats / "p4_s1.h5", np.ones((4, 7)), None, {})  # other feature dimension
    ref = _ref(["p2_s1", "p1_s1", "p9_s1", "p3_s1", "p1_s2", "p4_s1"])
    with pytest.raises(InputError, match=r"3 have 5, but \S*p4_s1.h5 \(dimension 7\)"):
        load_cohort_data(feats, reference=ref, cluster_config=CFG)
    (feats / "p4_s1.h5").unlink()
    data = load_cohort_data(feats, reference=ref, cluster_config=CFG)
    assert data.slide_ids == ["p2_s1", "p1_s1", "p1_s2"]
    assert data.patient_ids == ["p2", "p1", "p1"]
    assert data.clusters.shape == (3, 4, 5) and data.sizes.shape == (3, 4)
    assert data.sizes.sum(1).tolist() == [9, 9, 9]
    np.testing.assert_array_equal(data.expression, ref.values[[0, 1, 4]])
    reasons = dict(data.skipped)
    assert reasons["p9_s1"] == "no feature file"
    assert "NaN" in reasons["p3_s1"]
    assert reasons["p4_s1"] == "no feature file"
    assert "skipping slide p9_s1" in caplog.text
    assert data.sites == ["site-p2_s1", "site-p1_s1", "site-p1_s2"]  # the loaded slides' own
    sub = data.subset([2, 0])
    assert sub.slide_ids == ["p1_s2", "p2_s1"] and sub.sites == ["site-p1_s2", "site-p2_s1"]
    np.testing.assert_array_equal(sub.clusters[1], data.clusters[0])


def test_without_reference(tmp_path):
    feats = _folder(tmp_path, ["TCGA-AA-1234-01Z-00-DX1.abc", "b"])
    data = load_cohort_data(feats, cluster_config=CFG)
    assert data.slide_ids == ["TCGA-AA-1234-01Z-00-DX1.abc", "b"]
    assert data.patient_ids == ["TCGA-AA-1234", "b"]
    assert data.expression is None and data.genes is None
    only = load_cohort_data([feats], slides=["b.svs", "missing"], cluster_config=CFG)
    assert only.slide_ids == ["b"] and only.skipped == [("missing", "no feature file")]


def test_slides_with_reference(tmp_path):
    feats = _folder(tmp_path, ["p1_s1", "p2_s1"])
    data = load_cohort_data(
        feats, reference=_ref(["p1_s1", "p2_s1"]), slides=["p2_s1", "zz"], cluster_config=CFG
    )
    assert data.slide_ids == ["p2_s1"]
    assert ("zz", "not in the reference") in data.skipped


def test_nothing_matches(tmp_path):
    feats = _folder(tmp_path, ["a", "b"])
    with pytest.raises(InputError, match="no slide could be loaded"):
        load_cohort_data(feats, reference=_ref(["x_1", "y_1"]), cluster_config=CFG)
