"""TCGA barcodes and the GDC STAR-counts / sample-sheet readers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rnafm.cohort.gdc import GdcValue, collapse_symbols, read_sample_sheet, read_star_counts
from rnafm.cohort.tcga import parse_barcode, patient_from_name
from rnafm.errors import InputError

_spec = importlib.util.spec_from_file_location(
    "gdc_factory", Path(__file__).with_name("gdc_factory.py")
)
gf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gf)


def test_parse_barcode():
    bc = parse_barcode("TCGA-05-4244-01Z-00-DX1.d4ff32cd-a3b7-4e4b-8b4d-8a8c47d5e6f0")
    assert (bc.patient, bc.sample_type, bc.vial, bc.sample) == (
        "TCGA-05-4244",
        "01",
        "Z",
        "TCGA-05-4244-01",
    )
    assert parse_barcode("TCGA-05-4244-11A-01R-1107-07").sample_type == "11"
    assert parse_barcode("TCGA-05-4244").sample_type is None
    assert parse_barcode("slide_001") is None
    assert patient_from_name("TCGA-AB-1234-01A") == "TCGA-AB-1234"
    assert patient_from_name("slide_001") == "slide_001"


def test_read_star_counts(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text(gf.star_text([1.5, 2.0, 3.0, 9.0, 4.0, 5.0, 0.5, 7.25]))
    sc = read_star_counts(p)
    assert sc.gene_ids[0] == "ENSG00000000003"  # version stripped
    assert "CD99" in sc.gene_names and len(sc.gene_names) == 7  # N_* and PAR_Y dropped
    np.testing.assert_allclose(sc.values, [1.5, 2.0, 3.0, 4.0, 5.0, 0.5, 7.25])
    counts = read_star_counts(p, value=GdcValue.COUNTS)
    assert counts.values[0] == round(1.5 * 37)
    names, vals, types, n_dup = collapse_symbols(sc.gene_names, sc.values[None], sc.gene_types)
    assert n_dup == 1 and names.count("PINX1") == 1
    assert vals[0, names.index("PINX1")] == pytest.approx(9.0)  # summed
    assert types[names.index("LINC00856")] == "lncRNA"


def test_star_bad_input(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text(gf.star_text([1.0] * 8))
    with pytest.raises(InputError, match="no value column 'tpm'.*Pass --value"):
        read_star_counts(p, value="tpm")
    q = tmp_path / "wrong.tsv"
    q.write_text("id\tvalue\nA\t1\n")
    with pytest.raises(InputError, match=r"wrong\.tsv: not a GDC STAR-counts TSV"):
        read_star_counts(q)
    r = tmp_path / "trunc.tsv"
    r.write_text(gf.star_text([1.0] * 8)[:-25])  # download cut in the last row
    with pytest.raises(InputError, match=r"trunc\.tsv: 1 missing, non-numeric.*ENSG00000141510"):
        read_star_counts(r)


def test_sample_sheet(tmp_path):
    files = gf.write_gdc(tmp_path / "dl", {"TCGA-05-4244-01A#1": [1.0] * 8})
    gf.write_sample_sheet(tmp_path / "sheet.tsv", files)
    sheet = read_sample_sheet(tmp_path / "sheet.tsv")
    (entry,) = sheet.values()
    assert entry.sample_id == "TCGA-05-4244-01A" and entry.case_id == "TCGA-05-4244"
    assert entry.project == "TCGA-LUAD"
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="not a GDC sample sheet"):
        read_sample_sheet(tmp_path / "bad.tsv")


def test_sample_sheet_duplicate_file_rows(tmp_path, caplog):
    head = "File ID\tFile Name\tData Category\tData Type\tProject ID\tCase ID\tSample ID\tSample Type\n"
    row_a = "id1\tx.tsv\tT\tG\tTCGA-LUAD\tTCGA-05-4244\tTCGA-05-4244-01A\tPrimary Tumor\n"
    row_b = "id2\tx.tsv\tT\tG\tTCGA-LUAD\tTCGA-05-4249\tTCGA-05-4249-01A\tPrimary Tumor\n"
    (tmp_path / "same.tsv").write_text(head + row_a + row_a)
    with caplog.at_level("WARNING"):
        sheet = read_sample_sheet(tmp_path / "same.tsv")
    assert list(sheet) == ["x.tsv"] and "lines 2 and 3" in caplog.text
    (tmp_path / "clash.tsv").write_text(head + row_a + row_b)
    with pytest.raises(InputError, match=r"x\.tsv is listed on lines 2 and 3.*TCGA-05-4249-01A"):
        read_sample_sheet(tmp_path / "clash.tsv")


def test_slide_list_repeats_are_named(tmp_path, caplog):
    from rnafm.cohort.build import list_slides

    with caplog.at_level("WARNING"):
        ids = list_slides(["a.svs", "b.svs", "a.tif"])
    assert ids == ["a", "b"]
    assert "a.tif (same slide id as a.svs)" in caplog.text
