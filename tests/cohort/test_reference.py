"""Reference CSV: reading, scales, write round trip, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnafm.cohort.reference import (
    ExpressionScale,
    Reference,
    load_reference,
    resolve_scale,
    slide_id_from_name,
    write_reference,
)
from rnafm.errors import InputError

UUID = "d4ff32cd-a3b7-4e4b-8b4d-8a8c47d5e6f0"


def _table(values: np.ndarray, *, names=None, genes=None) -> pd.DataFrame:
    n, g = values.shape
    names = names or [f"TCGA-AA-{1000 + i}-01Z-00-DX1.{UUID}.svs" for i in range(n)]
    genes = genes or [f"G{j}" for j in range(g)]
    df = pd.DataFrame(values, columns=[f"rna_{x}" for x in genes])
    df.insert(0, "patient_id", [s[:12] for s in names])
    df.insert(0, "wsi_file_name", names)
    return df


def test_slide_id_from_name():
    assert (
        slide_id_from_name(f"TCGA-05-4244-01Z-00-DX1.{UUID}.svs")
        == f"TCGA-05-4244-01Z-00-DX1.{UUID}"
    )
    assert (
        slide_id_from_name(f"TCGA-05-4244-01Z-00-DX1.{UUID}") == f"TCGA-05-4244-01Z-00-DX1.{UUID}"
    )
    assert slide_id_from_name("dir/slide_3.ndpi") == "slide_3"
    assert slide_id_from_name("slide.h5") == "slide"


def test_raw_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.gamma(1.0, 40.0, size=(5, 7)) * 3
    path = tmp_path / "ref.csv"
    sites = ["A1", "A1", "B2", "B2", "C3"]
    _table(raw).assign(project="TCGA-BRCA", site=sites).to_csv(path, index=False)
    ref = load_reference(path)
    assert ref.slide_ids[0] == f"TCGA-AA-1000-01Z-00-DX1.{UUID}"
    assert ref.patient_ids[0] == "TCGA-AA-1000" and ref.projects == ["TCGA-BRCA"] * 5
    assert ref.sites == sites and ref.subset(ref.slide_ids[::-1]).sites == sites[::-1]
    assert ref.genes == [f"G{j}" for j in range(7)]
    assert ref.values.dtype == np.float32
    np.testing.assert_allclose(ref.values, np.log2(raw + 1), rtol=1e-5)
    out = tmp_path / "out.csv"
    write_reference(out, ref, raw=True)
    again = load_reference(out, scale=ExpressionScale.RAW)
    np.testing.assert_allclose(again.values, ref.values, rtol=1e-5, atol=1e-5)
    assert again.sites == sites and again.projects == ref.projects
    write_reference(out, ref)
    log = load_reference(out, scale=ExpressionScale.LOG2)
    np.testing.assert_allclose(log.values, ref.values, rtol=1e-5, atol=1e-5)


def test_scale_detection():
    log = np.random.default_rng(0).uniform(0, 14, size=(4, 30))
    assert resolve_scale(log, ExpressionScale.AUTO) is ExpressionScale.LOG2
    counts = np.random.default_rng(0).integers(0, 30, size=(4, 30)).astype(float)
    assert resolve_scale(counts, ExpressionScale.AUTO) is ExpressionScale.RAW
    assert resolve_scale(log * 10, ExpressionScale.AUTO) is ExpressionScale.RAW
    with pytest.raises(InputError, match="--expression-scale"):
        resolve_scale(log * 2.5, ExpressionScale.AUTO)  # max ~35 with fractions: ambiguous
    with pytest.raises(InputError, match="raw"):
        resolve_scale(log * 10, ExpressionScale.LOG2)


def test_mixed_scales(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.gamma(1.0, 100.0, size=(6, 40))
    v[2] = np.log2(v[2] + 1)
    path = tmp_path / "ref.csv"
    _table(v).to_csv(path, index=False)
    with pytest.raises(InputError, match="mixed scales"):
        load_reference(path)


def test_tsv_and_no_patient_column(tmp_path):
    path = tmp_path / "ref.tsv"
    _table(np.full((2, 3), 100.0)).drop(columns="patient_id").to_csv(path, sep="\t", index=False)
    ref = load_reference(path)
    assert ref.patient_ids == ["TCGA-AA-1000", "TCGA-AA-1001"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=[c for c in df if c.startswith("rna_")]), "no 'rna_<GENE>'"),
        (lambda df: df.drop(columns="wsi_file_name"), "wsi_file_name"),
        (lambda df: df.assign(rna_G1=[np.nan, 1.0, 2.0]), "missing or non-finite.*G1"),
        (lambda df: df.assign(rna_G2=[-1.0, 1.0, 2.0]), "negative"),
        (lambda df: df.assign(wsi_file_name=["a.svs", "a.tiff", "b"]), "more than once"),
        (lambda df: df.assign(rna_G0=["x", "1", "2"]), "non-numeric"),
    ],
)
def test_bad_reference(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(_table(np.full((3, 3), 80.5))).to_csv(path, index=False)
    with pytest.raises(InputError, match=message) as e:
        load_reference(path)
    assert "bad.csv" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_reference(tmp_path / "none.csv")


def test_subset():
    ref = Reference(
        slide_ids=["a", "b", "c"],
        patient_ids=["p", "q", "r"],
        projects=None,
        genes=["G"],
        values=np.arange(3, dtype=np.float32)[:, None],
    )
    sub = ref.subset(["c", "a"])
    assert sub.slide_ids == ["c", "a"] and sub.patient_ids == ["r", "p"]
    np.testing.assert_array_equal(sub.values[:, 0], [2, 0])
    with pytest.raises(InputError, match="not in the reference"):
        ref.subset(["z"])
