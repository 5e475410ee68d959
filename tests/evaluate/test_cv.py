"""Cross-validation end to end: out-of-fold file layout, honesty of folds, resume, and the CLI."""

from __future__ import annotations

import html
import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rnafm.errors import InputError
from rnafm.evaluate import CVConfig, cross_validate, evaluate_predictions, load_folds
from rnafm.metrics import pearson

TINY = {"max_epochs": 4, "hidden": 8, "heads": 2, "depth": 1}
SETS = {"SET_A": ["G0", "G1", "G2", "G3", "G4"], "SET_B": [f"G{i}" for i in range(5, 12)]}


def test_cross_validate_writes_honest_oof(tmp_path, make, monkeypatch) -> None:
    data = make(19, seed=3)
    res = cross_validate(
        data,
        out=tmp_path,
        models=["mean", "ridge", "sequoia"],
        config=CVConfig(n_folds=3, seed=1),
        model_options={"sequoia": TINY},
        gene_sets=SETS,
    )
    folds = load_folds(tmp_path / "folds.json", patient_ids=data.patient_ids)
    test_fold = {p: i for i, f in enumerate(folds) for p in f.test}
    for name in ("mean", "ridge", "sequoia"):
        a = ad.read_h5ad(tmp_path / name / "oof_predictions.h5ad")
        assert list(a.obs_names) == data.slide_ids  # every slide exactly once, cohort order
        assert list(a.var_names) == data.genes
        assert [test_fold[p] for p in a.obs["patient_id"]] == a.obs["fold"].tolist()
        assert a.uns["rnafm"]["model"] == name
        np.testing.assert_allclose(a.layers["observed"], data.expression)
        assert a.uns["rnafm_cv"]["val_pearson"].shape == (3, 13)
        assert (tmp_path / name / "per_gene.csv").is_file()
        assert (tmp_path / name / "per_pathway.csv").is_file()
    assert "std" in ad.read_h5ad(tmp_path / "mean" / "oof_predictions.h5ad").layers
    seq = ad.read_h5ad(tmp_path / "sequoia" / "oof_predictions.h5ad")
    assert "random_mean" in seq.layers and "std" not in seq.layers
    # the ridge test predictions equal a model fitted on the fold's training patients only
    ridge = ad.read_h5ad(tmp_path / "ridge" / "oof_predictions.h5ad")
    from rnafm.cohort.splits import fold_indices
    from rnafm.evaluate.baselines import build_regressor

    tr, va, te = fold_indices(folds[1], data.patient_ids)
    reg = build_regressor("ridge")
    reg.fit(data.subset(tr), data.subset(va), seed=1 + 1, out=None)
    np.testing.assert_allclose(ridge.X[te], reg.predict(data.subset(te)).mean, rtol=1e-5, atol=1e-5)
    # metrics are those of the pooled out-of-fold predictions
    m = res.metrics["ridge"]
    r, _ = pearson(data.expression, ridge.X)
    assert m["genes"]["mean_pearson_r"] == pytest.approx(np.nanmean(r), rel=1e-5)
    assert len(m["per_fold"]["folds"]) == 3
    assert "ranked_by_validation" in m["genes"]["top_k_pearson_r"]
    assert m["uncertainty"] is None and res.metrics["mean"]["uncertainty"]["coverage_conformal"]
    assert res.metrics["sequoia"]["genes"]["n_well_predicted"] is not None
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["model"].tolist() == ["mean", "ridge", "sequoia"]
    assert summary.set_index("model").loc["ridge", "mean_pearson_r"] > 0.5
    # beside the pooled r: the mean over folds of each fold's own mean r
    fold_of = ridge.obs["fold"].to_numpy()
    per_fold = [np.nanmean(pearson(data.expression[fold_of == k], ridge.X[fold_of == k])[0])
                for k in range(3)]  # fmt: skip
    row = summary.set_index("model").loc["ridge"]
    assert row["mean_pearson_r_per_fold"] == pytest.approx(np.mean(per_fold), rel=1e-4)
    assert row["mean_pearson_r_per_fold_sd"] == pytest.approx(np.std(per_fold, ddof=1), rel=1e-3)

    # a second run reuses every finished fold
    from rnafm.evaluate import cv as cv_mod

    def boom(*a, **k):
        raise AssertionError("refitted a cached fold")

    monkeypatch.setattr(cv_mod, "build_regressor", boom)
    again = cross_validate(data, out=tmp_path, models=["ridge"], config=CVConfig(n_folds=3, seed=1))
    assert again.metrics["ridge"]["genes"]["mean_pearson_r"] == pytest.approx(
        m["genes"]["mean_pearson_r"]
    )


def test_evaluate_predictions_with_separate_val_and_random_files(tmp_path, make) -> None:
    from rnafm.evaluate.predictions_io import PredictionFile, write_predictions

    data = make(25, seed=4)
    rng = np.random.default_rng(0)
    noisy = data.expression + rng.normal(size=data.expression.shape)
    half = len(data) // 2

    def pf(rows, mean, **kw):
        return PredictionFile(
            slide_ids=[data.slide_ids[i] for i in rows],
            genes=list(data.genes),
            mean=mean[rows],
            patient_ids=[data.patient_ids[i] for i in rows],
            **kw,
        )

    test_rows, val_rows = np.arange(half, len(data)), np.arange(half)
    std = np.ones_like(noisy)
    write_predictions(
        tmp_path / "test.h5ad",
        pf(
            test_rows,
            noisy,
            std=0.5 * std[test_rows],
            info={"interval_level": 0.9},
            lower=noisy[test_rows] - 1.6449 * std[test_rows],
            upper=noisy[test_rows] + 1.6449 * std[test_rows],
        ),
    )
    write_predictions(tmp_path / "val.h5ad", pf(val_rows, noisy, std=0.5 * std[val_rows]))
    write_predictions(tmp_path / "rand.h5ad", pf(test_rows[::-1], rng.normal(size=noisy.shape)))
    ev = evaluate_predictions(
        tmp_path / "test.h5ad",
        data,
        out=tmp_path / "ev",
        val_predictions=tmp_path / "val.h5ad",
        random_predictions=tmp_path / "rand.h5ad",
        gene_sets=SETS,
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "ev" / "per_gene.csv", index_col=0)
    r, p = pearson(data.expression[test_rows], noisy[test_rows])
    np.testing.assert_allclose(table["pearson_r"], r, rtol=1e-5)
    vr, _ = pearson(data.expression[val_rows], noisy[val_rows])
    np.testing.assert_allclose(table["val_pearson_r"], vr, rtol=1e-5)
    assert "well_predicted" in table and metrics["genes"]["n_well_predicted"] >= 1
    u = metrics["uncertainty"]
    # the std is half the truth; the stored interval (calibrated by the model) is right
    assert u["coverage"]["0.9"] < 0.7 and abs(u["coverage_conformal"]["0.9"] - 0.9) < 0.12
    assert u["model_calibrated"]["std_scale"] == pytest.approx(2.0, rel=1e-3)
    assert abs(u["model_calibrated"]["coverage"]["0.9"] - 0.9) < 0.12
    assert u["stored_interval"]["coverage"] == pytest.approx(
        u["model_calibrated"]["coverage"]["0.9"], abs=0.01
    )
    assert metrics["pathways"]["n_pathways"] == 2
    assert ev.pathways.loc["SET_A", "n_genes"] == 5


@pytest.fixture
def files(tmp_path, make):
    """A reference CSV and a folder of TRIDENT feature files (9 tiles per slide)."""
    from rnafm.cohort.reference import Reference, write_reference
    from rnafm.features.io import write_features

    data = make(15, seed=5, k=1, d=5)
    rng = np.random.default_rng(1)
    feats = tmp_path / "features"
    for i, s in enumerate(data.slide_ids):
        tiles = data.clusters[i, 0] + 0.05 * rng.normal(size=(9, 5))
        write_features(
            feats / f"{s}.h5", tiles, np.arange(18).reshape(9, 2) * 256, {"encoder": "toy"}
        )
    ref = Reference(
        slide_ids=data.slide_ids,
        patient_ids=data.patient_ids,
        projects=data.projects,
        genes=data.genes,
        values=np.maximum(data.expression, 0.0),
    )
    write_reference(tmp_path / "reference.csv", ref)
    return tmp_path / "reference.csv", feats


def test_cli_cv_evaluate_report(files, tmp_path) -> None:
    from rnafm.cli.main import cli

    reference, feats = files
    runner = CliRunner()
    out = tmp_path / "cv"
    res = runner.invoke(
        cli,
        [
            "cv",
            "-r",
            str(reference),
            "-f",
            str(feats),
            "-m",
            "ridge",
            "-m",
            "mean",
            "--folds",
            "3",
            "--stratify",
            "project",
            "--clusters",
            "3",
            "--gene-sets",
            "none",
            "--expression-scale",
            "log2",
            "-o",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "ridge" in res.output and (out / "ridge" / "oof_predictions.h5ad").is_file()
    res = runner.invoke(
        cli,
        [
            "cv",
            "-r",
            str(reference),
            "-f",
            str(feats),
            "-m",
            "mean",
            "--folds-file",
            str(out / "folds.json"),
            "--per-slide",
            "--clusters",
            "3",
            "--gene-sets",
            "none",
            "--expression-scale",
            "log2",
            "-o",
            str(tmp_path / "cv2"),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert (
        json.loads((tmp_path / "cv2" / "folds.json").read_text())["folds"]
        == json.loads((out / "folds.json").read_text())["folds"]
    )
    res = runner.invoke(
        cli,
        [
            "evaluate",
            "-p",
            str(out / "mean" / "oof_predictions.h5ad"),
            "-r",
            str(reference),
            "--expression-scale",
            "log2",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "coverage" in res.output
    assert (out / "mean" / "oof_predictions_evaluation" / "per_gene.csv").is_file()
    first = json.loads((out / "mean" / "oof_predictions_evaluation" / "metrics.json").read_text())
    # cv files carry their truth: no reference needed, same numbers
    res = runner.invoke(
        cli,
        ["evaluate", "-p", str(out / "mean" / "oof_predictions.h5ad"), "-o", str(tmp_path / "e2")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    second = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    for key in ("mean_pearson_r", "mean_rmse", "n_r_above_0.4"):
        assert second["genes"][key] == pytest.approx(first["genes"][key], rel=1e-4)
    res = runner.invoke(
        cli, ["report", str(out), "-o", str(tmp_path / "r" / "report.html")], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "ridge" in page
    assert (tmp_path / "r" / "report_figures" / "reliability.png").is_file()


def test_reads_rnafm_predict_files(tmp_path, make) -> None:
    """Files of `rnafm predict` (interval level at the top of uns, string draws ids) evaluate."""
    from rnafm.evaluate.predictions_io import read_predictions
    from rnafm.predict.writer import read_draws, write_draws

    data = make(7, seed=6)
    rng = np.random.default_rng(0)
    draws = data.expression[:, None] + rng.normal(size=(len(data), 5, 13))
    mean, std = draws.mean(1), draws.std(1, ddof=1)
    a = ad.AnnData(
        X=mean.astype(np.float32),
        obs=pd.DataFrame({"patient_id": data.patient_ids}, index=data.slide_ids),
        var=pd.DataFrame(index=data.genes),
        layers={"std": std, "lower": mean - 2 * std, "upper": mean + 2 * std},
        uns={"interval_level": 0.9, "rnafm": {"version": "0.1.0", "model": "run", "x": "none"}},
    )
    a.write_h5ad(tmp_path / "p.h5ad")
    write_draws(tmp_path / "d.h5", data.slide_ids, data.genes, draws)
    pf = read_predictions(tmp_path / "p.h5ad")
    assert pf.level == 0.9 and "x" not in pf.info
    d, slides, genes = read_draws(tmp_path / "d.h5")
    assert slides == data.slide_ids and genes == data.genes
    ev = evaluate_predictions(tmp_path / "p.h5ad", data, draws=tmp_path / "d.h5")
    u = ev.summary["uncertainty"]
    assert u["crps_source"] == "gaussian" and u["n_draws"] == 5 and "crps_draws" in u
    assert u["model_calibrated"]["std_scale"] == pytest.approx(2 / 1.6448536, rel=1e-4)


def test_slide_sites_from_column_or_tcga_barcode(make) -> None:
    from dataclasses import replace

    from rnafm.cohort.dataset import slide_sites
    from rnafm.cohort.tcga import site_from_name

    assert site_from_name("TCGA-05-4244-01Z-00-DX1") == "05" and site_from_name("P001") is None
    data = make(6)
    with pytest.raises(InputError, match="'site' column"):
        slide_sites(data)
    tcga = replace(data, patient_ids=[f"TCGA-{p[-2:]}-A{p[1:]}" for p in data.patient_ids])
    assert slide_sites(tcga) == [p[-2:] for p in data.patient_ids]
    given = replace(tcga, sites=["X"] * (len(data) - 1) + [""])  # the column, gaps from barcodes
    assert slide_sites(given) == ["X"] * (len(data) - 1) + [tcga.patient_ids[-1][5:7]]


def test_cli_cv_holds_out_sites(files, tmp_path) -> None:
    from rnafm.cli.main import cli

    reference, feats = files
    ref = pd.read_csv(reference)
    patients = sorted(set(ref.patient_id))
    site_of = {p: f"SITE-{i % 3}" for i, p in enumerate(patients)}
    ref.insert(2, "site", ref.patient_id.map(site_of))
    with_sites = tmp_path / "with_sites.csv"
    ref.to_csv(with_sites, index=False)
    out = tmp_path / "cv_site"
    args = ["cv", "-r", str(with_sites), "-f", str(feats), "-m", "mean", "--clusters", "3",
            "--gene-sets", "none", "--expression-scale", "log2", "--hold-out", "site"]  # fmt: skip
    res = CliRunner().invoke(cli, [*args, "--folds", "3", "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "folds.json").read_text())
    assert saved["hold_out"] == "site"
    for fold in saved["folds"]:
        test_sites = {site_of[p] for p in fold["test"]}
        assert len(test_sites) == 1
        assert not test_sites & {site_of[p] for p in fold["train"] + fold["val"]}
    res = CliRunner().invoke(cli, [*args, "--folds", "4", "-o", str(tmp_path / "cv4")])
    assert isinstance(res.exception, InputError)  # `rnafm` prints it and exits with 2
    assert "use --folds 3 or fewer" in str(res.exception)


def test_cli_cv_validation_mirrors_the_test_folds(files, tmp_path) -> None:
    from rnafm.cli.main import cli

    reference, feats = files
    ref = pd.read_csv(reference)
    site_of = {p: f"SITE-{i}" for i, p in enumerate(sorted(set(ref.patient_id)))}
    ref.insert(2, "site", ref.patient_id.map(site_of))  # a site per patient: many sites
    with_sites = tmp_path / "with_sites.csv"
    ref.to_csv(with_sites, index=False)
    args = ["cv", "-f", str(feats), "-m", "ridge", "--clusters", "3", "--folds", "2",
            "--gene-sets", "none", "--expression-scale", "log2"]  # fmt: skip
    held = {}
    for name, ref_path, extra in (
        ("site_folds", with_sites, ["--hold-out", "site"]),
        ("patient_folds", with_sites, []),
        ("site_val", with_sites, ["--val-hold-out", "site"]),
        ("site_folds_patient_val", with_sites, ["--hold-out", "site", "--val-hold-out", "patient"]),
        ("no_sites", reference, []),
    ):
        out = tmp_path / name
        res = CliRunner().invoke(
            cli, [*args, "-r", str(ref_path), *extra, "-o", str(out)], catch_exceptions=False
        )
        assert res.exit_code == 0, res.output
        assert re.search(r"ridge +mean r \S+ \(per fold \S+ \+- \S+\)", res.output), res.output
        saved = json.loads((out / "folds.json").read_text())
        held[name] = [f["val_hold_out"] for f in saved["folds"]]
        for fold in saved["folds"]:
            if fold["val_hold_out"] == "site":
                assert fold["val_sites"] == sorted(site_of[p] for p in fold["val"])
    assert held == {
        "site_folds": ["site"] * 2,  # auto, the default: as the test folds
        "patient_folds": ["patient"] * 2,
        "site_val": ["site"] * 2,
        "site_folds_patient_val": ["patient"] * 2,
        "no_sites": ["patient"] * 2,
    }
    page = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "site_folds"), "-o", str(page)])
    assert res.exit_code == 0, res.output
    text = re.sub(r"\s+", "", html.unescape(page.read_text()))
    assert '"validationholdsout":["site","site"]' in text


def test_a_checkpoint_of_another_fold_is_not_resumed(tmp_path, make) -> None:
    data = make(12, seed=2)
    config = CVConfig(n_folds=2, seed=0)
    fold_dir = tmp_path / "ridge" / "fold_0"
    fold_dir.mkdir(parents=True)
    (fold_dir / "checkpoint.pt").write_bytes(b"an interrupted run of other folds")
    cross_validate(data, out=tmp_path, models=["ridge"], config=config)
    assert not (fold_dir / "checkpoint.pt").exists()  # no key of its own: trained afresh
    started = (fold_dir / "fold_key.txt").read_text()
    # interrupted again after this fold started: the checkpoint is its own and is kept
    (fold_dir / "fold.npz").unlink()
    (fold_dir / "checkpoint.pt").write_bytes(b"this fold's interrupted run")
    cross_validate(data, out=tmp_path, models=["ridge"], config=config)
    assert (fold_dir / "checkpoint.pt").exists()
    assert (fold_dir / "fold_key.txt").read_text() == started
    # the same folder with other folds (another seed): the old fold's checkpoint goes
    (fold_dir / "fold.npz").unlink()
    cross_validate(data, out=tmp_path, models=["ridge"], config=CVConfig(n_folds=2, seed=1))
    assert not (fold_dir / "checkpoint.pt").exists()
    assert (fold_dir / "fold_key.txt").read_text() != started
    # the same folds on other input data, with the fold's finished cache still there: it goes
    seed1 = (fold_dir / "fold_key.txt").read_text()
    (fold_dir / "checkpoint.pt").write_bytes(b"a run on the old data")
    other = make(12, seed=3)
    assert list(other.patient_ids) == list(data.patient_ids)
    cross_validate(other, out=tmp_path, models=["ridge"], config=CVConfig(n_folds=2, seed=1))
    assert not (fold_dir / "checkpoint.pt").exists()
    assert (fold_dir / "fold_key.txt").read_text() != seed1


def test_cv_pools_every_model_where_slides_of_a_sample_share_rna(tmp_path, make) -> None:
    from dataclasses import replace

    data = make(30, seed=4)  # patients 0, 3, 6, ... have two slides
    y = data.expression.copy()
    for i in range(1, len(y)):
        if data.patient_ids[i] == data.patient_ids[i - 1]:
            y[i] = y[i - 1]  # one sample, one profile
    data = replace(data, expression=y)
    res = cross_validate(data, out=tmp_path / "pooled", models=["ridge", "mean"],
                         config=CVConfig(n_folds=3, seed=1))  # fmt: skip
    alone = cross_validate(data, out=tmp_path / "alone", models=["ridge", "mean"],
                           config=CVConfig(n_folds=3, seed=1, per_slide=True))  # fmt: skip
    pairs = [(i - 1, i) for i in range(1, len(y)) if data.patient_ids[i] == data.patient_ids[i - 1]]
    for name in ("ridge", "mean"):
        p = ad.read_h5ad(res.predictions[name])
        a = ad.read_h5ad(alone.predictions[name])
        assert json.loads(p.uns["rnafm"]["pooled_samples"])[0]["key"] == "sample"
        assert json.loads(a.uns["rnafm"]["pooled_samples"]) == [None, None, None]
        for i, j in pairs:
            np.testing.assert_allclose(p.X[i], p.X[j])
            np.testing.assert_allclose(p.X[i], (a.X[i] + a.X[j]) / 2, rtol=1e-5, atol=1e-5)
        single = [i for i in range(len(y)) if all(i not in q for q in pairs)]
        np.testing.assert_allclose(p.X[single], a.X[single])
    # a pooled sample counts once in every model's metrics; --per-slide counts every slide
    for name in ("ridge", "mean"):
        assert res.metrics[name]["n_evaluated"] == len(y) - len(pairs)
        assert res.metrics[name]["samples_counted_once"] == len(pairs)
        assert alone.metrics[name]["n_evaluated"] == len(y)
    assert p.obs["sample"].tolist() == list(data.patient_ids)  # no barcode: the patient
    summary = pd.read_csv(tmp_path / "pooled" / "summary.csv").set_index("model")
    assert summary.loc["ridge", "n_evaluated"] == len(y) - len(pairs)
    # averaging two predictions of one target helps
    r_pooled = res.metrics["ridge"]["genes"]["mean_pearson_r"]
    assert r_pooled > alone.metrics["ridge"]["genes"]["mean_pearson_r"]
    from rnafm.report import make_report

    page = make_report([tmp_path / "pooled"], out=tmp_path / "r.html").read_text()
    assert re.search(r"slides of one sample pooled&quot;: \[\s*true,\s*true,\s*true\s*\]", page)
    assert "rows scored" in page
    # a sample column that gives the second slide of each patient a sample of its own
    second = {j for _, j in pairs}
    split = replace(data, samples=["b" if i in second else "a" for i in range(len(y))])
    sep = cross_validate(split, out=tmp_path / "split", models=["ridge"],
                         config=CVConfig(n_folds=3, seed=1))  # fmt: skip
    assert json.loads(ad.read_h5ad(sep.predictions["ridge"]).uns["rnafm"]["pooled_samples"]) == [
        None, None, None]  # fmt: skip
    assert sep.metrics["ridge"]["n_evaluated"] == len(y)
    # the slides' own rows: nothing pooled
    own = cross_validate(make(30, seed=4), out=tmp_path / "own", models=["ridge"],
                         config=CVConfig(n_folds=3, seed=1))  # fmt: skip
    own_pred = ad.read_h5ad(own.predictions["ridge"])
    assert json.loads(own_pred.uns["rnafm"]["pooled_samples"]) == [None, None, None]
