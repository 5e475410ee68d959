"""GDC-style STAR-counts files: byte layout, values consistent with the latents, and rnafm cohort."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from rnafm.synth.gdc import GDC_COLUMNS


def _read(path):
    return pd.read_csv(path, sep="\t", comment="#", dtype={"gene_id": str})


def test_star_counts_layout(tiny_cohort):
    files = tiny_cohort.gdc_files
    assert len(files) == len(tiny_cohort.patient_ids)
    for f in files:
        assert f.name.endswith(".rna_seq.augmented_star_gene_counts.tsv")
        assert f.parent.name == f.name.split(".")[0]  # GDC client layout: <file id>/<file name>
        lines = f.read_text().splitlines()
        assert lines[0] == "# gene-model: GENCODE v36"
        assert lines[1].split("\t") == list(GDC_COLUMNS)
        assert [ln.split("\t")[0] for ln in lines[2:6]] == [
            "N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous",
        ]  # fmt: skip
        assert all(len(ln.split("\t")) == len(GDC_COLUMNS) for ln in lines[1:])
        ids = [ln.split("\t")[0] for ln in lines[6:]]
        assert all(re.fullmatch(r"ENSG\d{11}\.\d+(_PAR_Y)?", i) for i in ids), ids[:3]
        assert len(set(ids)) == len(ids)


def test_star_counts_values_match_latents(tiny_cohort):
    lat = tiny_cohort.load_latents()
    sheet = pd.read_csv(tiny_cohort.sample_sheet, sep="\t")
    assert list(sheet.columns) == [
        "File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID", "Sample ID",
        "Sample Type",
    ]  # fmt: skip
    by_name = {f.name: f for f in tiny_cohort.gdc_files}
    genes = tiny_cohort.genes
    for _, row in sheet.iterrows():
        p = tiny_cohort.patient_ids.index(row["Case ID"])
        assert row["Sample ID"] == f"{row['Case ID']}-01A"
        df = _read(by_name[row["File Name"]])
        body = df[~df["gene_id"].str.startswith("N_") & ~df["gene_id"].str.endswith("_PAR_Y")]
        body = body.set_index("gene_name")
        np.testing.assert_array_equal(body.loc[genes, "unstranded"].to_numpy(), lat["counts"][p])
        np.testing.assert_allclose(
            body.loc[genes, "tpm_unstranded"].to_numpy(), lat["tpm"][p], atol=6e-5
        )
        assert (body["stranded_second"] <= body["unstranded"]).all()
        par = df[df["gene_id"].str.endswith("_PAR_Y")]
        assert (par[["unstranded", "tpm_unstranded"]].to_numpy() == 0).all()
        assert set(body["gene_type"]) == {"protein_coding", "lncRNA"}


def test_rnafm_cohort_builds_the_same_reference(tiny_cohort, tmp_path):
    import rnafm.cohort.build as build
    from rnafm.cohort import load_reference

    out = tmp_path / "ref.csv"
    build.build_cohort(
        tiny_cohort.gdc_dir, [str(p) for p in tiny_cohort.slides], out=out,
        sample_sheet=tiny_cohort.sample_sheet, min_mean=0.0,
    )  # fmt: skip
    built = load_reference(out)
    mine = load_reference(tiny_cohort.reference)
    assert sorted(built.slide_ids) == sorted(mine.slide_ids)
    common = sorted(set(built.genes) & set(mine.genes))
    assert len(common) >= len(mine.genes) - 5
    b = built.subset(mine.slide_ids)
    bi = [b.genes.index(g) for g in common]
    mi = [mine.genes.index(g) for g in common]
    np.testing.assert_allclose(b.values[:, bi], mine.values[:, mi], atol=1e-3)
