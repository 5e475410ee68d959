"""``rnafm demo``: the pipeline wiring (fast, baselines only) and the --quick acceptance run (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_STAGES = ("rnafm.features.preprocess", "rnafm.cohort.build", "rnafm.evaluate.cv")


def _need_stages(*extra: str) -> None:
    """Import the stages the demo runs: one of rnafm's own modules failing to import fails."""
    import importlib

    for mod in _STAGES + extra:
        importlib.import_module(mod)


def _rnafm() -> list[str]:
    exe = Path(sys.executable).with_name("rnafm")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("rnafm")
    return [found] if found else [sys.executable, "-m", "rnafm"]


def test_demo_config_presets():
    from rnafm.demo import DemoSize, demo_config

    quick, full = demo_config(DemoSize.QUICK), demo_config("default")
    assert quick.n_patients < full.n_patients and quick.slide_width < full.slide_width
    assert "rnafm" in quick.models and "ridge" in quick.models
    assert demo_config("quick", n_folds=3, seed=None).n_folds == 3
    for cfg in (quick, full):  # budgeted by epochs: the same numbers on a busy machine
        assert cfg.train["optim.max_minutes"] is None and cfg.train["optim.epochs"] >= 10


def test_demo_wiring_with_baselines(tmp_path):
    """Every stage runs on a tiny cohort (ridge and mean only, so it is fast)."""
    _need_stages()
    from rnafm.demo import demo_config, run_demo

    cfg = demo_config("quick", n_patients=13, slide_width=611, slide_height=577, n_genes=53,
                      n_clusters=8, n_folds=3, models=["ridge", "mean"], seed=3)  # fmt: skip
    res = run_demo(tmp_path / "demo", config=cfg)
    assert set(res.summary) == {"ridge", "mean"}
    assert np.isfinite(res.summary["ridge"]["mean_pearson"])
    assert res.summary["ridge"]["top_rank"] in ("validation", "test")
    assert res.reference.name == "reference_from_gdc.csv"  # built by rnafm cohort from GDC files
    assert (res.cv_dir / "ridge" / "oof_predictions.h5ad").is_file()
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert set(summary["models"]) == {"ridge", "mean"} and summary["seconds"]["total"] > 0
    assert res.report is not None and res.report.is_file()  # a missing report is a failure


def _per_gene(cv: Path, model: str) -> pd.Series:
    table = pd.read_csv(cv / model / "per_gene.csv")
    gene_col = "gene" if "gene" in table.columns else table.columns[0]
    r_col = next(c for c in ("pearson_r", "r", "pearson") if c in table.columns)
    return table.set_index(gene_col)[r_col]


@pytest.mark.slow
def test_quick_demo_acceptance(tmp_path):
    """`rnafm demo --quick` through the entry point: RNA-FM beats ridge, its 90% intervals are
    calibrated, and the report is written."""
    _need_stages("rnafm.training", "rnafm.predict")
    out = tmp_path / "demo"
    res = subprocess.run(_rnafm() + ["demo", "--quick", "--out", str(out)], capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "mean per-gene PCC" in res.stdout and "rnafm" in res.stdout and "ridge" in res.stdout
    assert "slides scored as" in res.stdout  # two-slide patients share their RNA: pooled once
    summary = json.loads((out / "demo_summary.json").read_text())["models"]
    rnafm, ridge = summary["rnafm"], summary["ridge"]
    # per-gene paired comparison over the same out-of-fold slides: RNA-FM must be better on
    # average and on more than half of the genes (one-sided sign test p < 0.05)
    a, b = _per_gene(out / "cv", "rnafm"), _per_gene(out / "cv", "ridge")
    diff = (a - b.reindex(a.index)).dropna()
    wins, n = int((diff > 0).sum()), len(diff)
    from scipy.stats import binomtest

    assert rnafm["mean_pearson"] > ridge["mean_pearson"], (rnafm, ridge)
    assert binomtest(wins, n, 0.5, alternative="greater").pvalue < 0.05, (wins, n)
    assert 0.85 <= rnafm["coverage_90"] <= 0.95, rnafm
    report = out / "report.html"
    assert report.is_file() and report.stat().st_size > 10_000


def test_summarise_uses_one_ranking_and_the_stored_interval():
    from rnafm.demo import summarise

    def metrics(val_top, stored=None, draws_cov=0.7):
        u = {"coverage": {"0.9": draws_cov}}
        if stored is not None:
            u["stored_interval"] = {"level": 0.9, "coverage": stored}
        return {
            "genes": {
                "mean_pearson_r": 0.5,
                "mean_rmse": 0.4,
                "top_k_pearson_r": {
                    "ranked_by_test": {"top_100": 0.8},
                    "ranked_by_validation": {"top_100": val_top},
                },
            },
            "uncertainty": u,
        }

    rows = summarise({"rnafm": metrics(0.7, stored=0.91), "ridge": metrics(None)})
    assert rows["rnafm"]["top_rank"] == rows["ridge"]["top_rank"] == "test"
    assert rows["rnafm"]["top100_pearson"] == 0.8
    assert rows["rnafm"]["coverage_90"] == 0.91 and rows["ridge"]["coverage_90"] == 0.7
    rows = summarise({"rnafm": metrics(0.7), "ridge": metrics(0.6)})
    assert rows["ridge"]["top_rank"] == "validation" and rows["ridge"]["top100_pearson"] == 0.6
