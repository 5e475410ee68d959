"""`rnafm cohort` / build_cohort: matching, values, exclusions, summaries, bad input, CLI."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from rnafm.cohort import build_cohort
from rnafm.cohort.reference import ExpressionScale, load_reference
from rnafm.errors import InputError

_spec = importlib.util.spec_from_file_location(
    "gdc_factory", Path(__file__).with_name("gdc_factory.py")
)
gf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gf)

U = "d4ff32cd-a3b7-4e4b-8b4d-8a8c47d5e6f0"
#        TSPAN6 TNMD  CD99 CD99_Y PINX1a PINX1b LINC  TP53
TPM = {
    "TCGA-05-4244-01A#1": [10.0, 0.2, 30.0, 0.0, 4.0, 2.0, 50.0, 8.0],
    "TCGA-05-4244-01A#2": [20.0, 0.4, 10.0, 0.0, 2.0, 2.0, 30.0, 4.0],  # re-run: averaged
    "TCGA-05-4245-01A#1": [5.0, 0.1, 60.0, 0.0, 1.0, 1.0, 10.0, 16.0],
    "TCGA-05-4245-11A#1": [7.0, 0.3, 20.0, 0.0, 3.0, 3.0, 20.0, 2.0],  # normal
    "TCGA-05-4246-01A#1": [1.0, 0.1, 2.0, 0.0, 1.0, 1.0, 5.0, 1.0],  # no slide
}
SLIDES = [
    f"TCGA-05-4244-01Z-00-DX1.{U}.svs",
    f"TCGA-05-4244-01Z-00-DX2.{U}.svs",  # second slide of the patient: shares expression
    f"TCGA-05-4245-01Z-00-DX1.{U}.svs",
    f"TCGA-05-4245-11A-01-TS1.{U}.svs",  # normal tissue slide: excluded by default
    f"TCGA-05-4247-01Z-00-DX1.{U}.svs",  # no expression
]


@pytest.fixture
def gdc(tmp_path):
    files = gf.write_gdc(tmp_path / "expr", TPM)
    gf.write_sample_sheet(tmp_path / "sheet.tsv", files)
    slides = tmp_path / "slides"
    slides.mkdir()
    for s in SLIDES:
        (slides / s).write_bytes(b"")
    return tmp_path


def test_gdc_end_to_end(gdc):
    out = gdc / "reference.csv"
    res = build_cohort(gdc / "expr", gdc / "slides", out=out, sample_sheet=gdc / "sheet.tsv")
    df = pd.read_csv(out)
    assert list(df.columns[:3]) == ["wsi_file_name", "patient_id", "project"]
    assert df["wsi_file_name"].tolist() == [s[:-4] for s in SLIDES[:3]]
    assert df["patient_id"].tolist() == ["TCGA-05-4244", "TCGA-05-4244", "TCGA-05-4245"]
    assert set(df["project"]) == {"TCGA-LUAD"}
    # protein_coding only (LINC dropped), mean >= 1 (TNMD dropped), PINX1 summed, PAR_Y gone
    assert [c for c in df.columns if c.startswith("rna_")] == [
        "rna_TSPAN6",
        "rna_CD99",
        "rna_PINX1",
        "rna_TP53",
    ]
    np.testing.assert_allclose(df.iloc[0, 3:].to_numpy(float), [15.0, 20.0, 5.0, 6.0], rtol=1e-5)
    np.testing.assert_allclose(df.iloc[1, 3:].to_numpy(float), df.iloc[0, 3:].to_numpy(float))
    np.testing.assert_allclose(df.iloc[2, 3:].to_numpy(float), [5.0, 60.0, 2.0, 16.0], rtol=1e-5)
    ref = load_reference(out, scale=ExpressionScale.RAW)
    np.testing.assert_allclose(ref.values, res.reference.values, atol=1e-5)
    s = json.loads((gdc / "reference.summary.json").read_text())
    assert s["n_slides_matched"] == 3 and s["n_patients"] == 2 and s["n_slides"] == 5
    reasons = {d["slide"][:15]: d["reason"] for d in s["slides_without_expression"]}
    assert (
        "excluded" in reasons["TCGA-05-4245-11"]
        and "--sample-type 11" in reasons["TCGA-05-4245-11"]
    )
    assert reasons["TCGA-05-4247-01"] == "no expression for sample TCGA-05-4247-01"
    assert s["expression_without_slides"] == ["TCGA-05-4246-01"]
    assert [d["sample"] for d in s["excluded_samples"]] == ["TCGA-05-4245-11A"]
    assert (
        list(s["averaged_samples"]) == ["TCGA-05-4244-01"]
        and len(s["averaged_samples"]["TCGA-05-4244-01"]) == 2
    )
    assert s["genes"]["duplicate_symbols_summed"] == 1 and s["genes"]["final"] == 4


def test_normal_included_when_asked(gdc):
    res = build_cohort(
        gdc / "expr",
        gdc / "slides",
        sample_sheet=gdc / "sheet.tsv",
        sample_types=["01", "11"],
        gene_types=["all"],
        min_mean=0.0,
        value="unstranded",
    )
    ref = res.reference
    assert len(ref) == 4 and ref.slide_ids[3].startswith("TCGA-05-4245-11A")
    assert "rna_LINC00856" not in ref.genes and "LINC00856" in ref.genes
    i = ref.genes.index("TSPAN6")
    assert np.exp2(ref.values[3, i]) - 1 == pytest.approx(round(7.0 * 37), rel=1e-5)  # counts
    top = build_cohort(gdc / "expr", gdc / "slides", sample_sheet=gdc / "sheet.tsv", top_variable=2)
    assert len(top.reference.genes) == 2


def test_no_sample_sheet_no_match(gdc):
    with pytest.raises(InputError, match="--sample-sheet"):
        build_cohort(gdc / "expr", gdc / "slides")


def test_bad_value_column(gdc):
    with pytest.raises(InputError, match="value"):
        build_cohort(gdc / "expr", gdc / "slides", sample_sheet=gdc / "sheet.tsv", value="tpm")


def test_wrong_tsv_in_folder(gdc):
    (gdc / "expr" / "notes.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match=r"notes\.tsv: not a GDC STAR-counts TSV"):
        build_cohort(gdc / "expr", gdc / "slides", sample_sheet=gdc / "sheet.tsv")


def _table(tmp_path, values, genes, samples, name="expr.csv"):
    df = pd.DataFrame(values, index=samples, columns=genes)
    df.index.name = "sample"
    path = tmp_path / name
    df.to_csv(path, sep="," if name.endswith(".csv") else "\t")
    return path


def test_table_log2_and_slide_list(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.gamma(2.0, 20.0, size=(3, 23))
    genes = [f"GENE{i}" for i in range(23)]
    path = _table(
        tmp_path,
        np.log2(raw + 1),
        genes,
        ["TCGA-AA-0001-01A", "TCGA-AA-0002-01A", "TCGA-AA-0003-11A"],
    )
    lst = tmp_path / "slides.txt"
    lst.write_text("TCGA-AA-0001-01Z-00-DX1.abc.svs\nTCGA-AA-0002-01Z-00-DX1.def.svs\n")
    res = build_cohort(path, lst, out=tmp_path / "ref.csv", min_mean=0.0)
    assert res.summary["expression_scale"] == "log2"
    df = pd.read_csv(tmp_path / "ref.csv")
    np.testing.assert_allclose(df.iloc[:, 2:].to_numpy(float), raw[:2], rtol=1e-4)  # written raw
    assert "project" not in df.columns


def test_table_mixed_scales(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.gamma(2.0, 20.0, size=(3, 25))
    raw[1] = np.log2(raw[1] + 1)
    path = _table(
        tmp_path,
        raw,
        [f"G{i}" for i in range(25)],
        ["TCGA-AA-0001-01A", "TCGA-AA-0002-01A", "TCGA-AA-0003-01A"],
        "e.tsv",
    )
    with pytest.raises(InputError, match="mixed scales"):
        build_cohort(path, ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX1"], min_mean=0.0)


def test_table_ensembl_with_gene_map(tmp_path):
    star = tmp_path / "map.tsv"
    star.write_text(gf.star_text([1.0] * 8))
    ids = ["ENSG00000000003.15", "ENSG00000254093.9", "ENSG00000258724.1", "ENSG00000230417.11"]
    vals = np.array([[100.0, 3.0, 4.0, 60.0], [200.0, 5.0, 6.0, 70.0]])
    path = _table(tmp_path, vals, ids, ["s1", "s2"])
    res = build_cohort(path, ["s1.svs", "s2.tiff"], gene_map=star, min_mean=0.0)
    ref = res.reference
    assert ref.genes == ["TSPAN6", "PINX1"]  # lncRNA dropped by the default protein_coding
    np.testing.assert_allclose(np.exp2(ref.values) - 1, [[100.0, 7.0], [200.0, 11.0]], rtol=1e-5)
    with pytest.raises(InputError, match="no gene types"):
        build_cohort(path, ["s1"], gene_types=["protein_coding"])


def test_h5ad(tmp_path):
    ad = anndata.AnnData(
        X=np.array([[5.0, 80.0, 3.0], [6.0, 90.0, 2.0]], dtype=np.float32),
        obs=pd.DataFrame({"project": ["P", "P"]}, index=["TCGA-AA-0001-01A", "TCGA-AA-0002-01B"]),
        var=pd.DataFrame(index=["A", "B", "C"]),
    )
    ad.write_h5ad(tmp_path / "e.h5ad")
    res = build_cohort(
        tmp_path / "e.h5ad",
        ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX1"],
        expression_scale="raw",
        min_mean=2.6,
    )
    assert res.reference.genes == ["A", "B"] and res.reference.projects == ["P", "P"]


def test_cli_entry_point(gdc, monkeypatch, capsys):
    from rnafm.cli.main import main

    out = gdc / "r.csv"
    argv = [
        "rnafm",
        "cohort",
        "--expression",
        str(gdc / "expr"),
        "--slides",
        str(gdc / "slides"),
        "--sample-sheet",
        str(gdc / "sheet.tsv"),
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    assert "3 of 5 slides matched" in capsys.readouterr().out and out.exists()
    monkeypatch.setattr(sys, "argv", argv[:-4] + ["--out", str(out)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "--sample-sheet" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["rnafm", "genesets", "show", "hallmark"])
    main()
    assert "HALLMARK_HYPOXIA\t200" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["rnafm", "genesets", "list"])
    main()
    assert "reactome" in capsys.readouterr().out
