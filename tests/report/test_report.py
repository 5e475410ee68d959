"""The HTML report: self-contained, and it renders with all its figures in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_PROBE = (
    '<script>window.addEventListener("load",function(){var im=document.images,ok=0;'
    "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
    'document.body.setAttribute("data-images",im.length);'
    'document.body.setAttribute("data-images-ok",ok);});</script>'
)


def _cohort(n_patients: int = 17, g: int = 23, seed: int = 0):
    from rnafm.cohort.dataset import CohortData

    rng = np.random.default_rng(seed)
    pids = [f"P{p:02d}" for p in range(n_patients) for _ in range(1 + (p % 5 == 0))]
    n = len(pids)
    clusters = rng.normal(size=(n, 5, 3)).astype(np.float32)
    expr = 4 + clusters.mean(1) @ rng.normal(size=(3, g)) + 0.4 * rng.normal(size=(n, g))
    return CohortData(
        slide_ids=[f"{p}-{i}" for i, p in enumerate(pids)],
        patient_ids=pids,
        projects=None,
        clusters=clusters,
        sizes=np.ones((n, 5), np.float32),
        genes=[f"GENE{j}" for j in range(g)],
        expression=expr.astype(np.float32),
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from rnafm.evaluate import CVConfig, cross_validate
    from rnafm.report import make_report

    tmp = tmp_path_factory.mktemp("report")
    data = _cohort()
    sets = {
        "PATH_A": [f"GENE{j}" for j in range(0, 8)],
        "PATH_B": [f"GENE{j}" for j in range(6, 19)],
    }
    cross_validate(
        data,
        out=tmp / "cv",
        models=["mean", "ridge", "trnasformer"],
        config=CVConfig(n_folds=3),
        gene_sets=sets,
        model_options={"trnasformer": {"max_epochs": 3, "hidden": 8, "heads": 2, "depth": 1}},
    )
    return make_report(
        [tmp / "cv"],
        out=tmp / "out" / "report.html",
        reference=data,
        gene_sets=sets,
        genes=["GENE1", "GENE2", "NOT_A_GENE"],
    )


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for section in (
        "Summary",
        "Per-gene correlation",
        "Top genes",
        "Predicted vs true",
        "Uncertainty calibration",
        "Pathway level",
        "Training curves",
        "Data and configuration",
    ):
        assert f"<h2>{section}" in page
    assert "ranked by validation r" in page and "Test-ranked" in page
    pngs = sorted(p.name for p in (report.parent / "report_figures").glob("*.png"))
    assert len(pngs) == page.count("<img") == 6
    assert all((report.parent / "report_figures" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _load(page: Path, tmp: Path) -> tuple[str, list[str]]:
    probe = tmp / f"probe_{page.name}"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    res = _chromium(probe.as_uri(), tmp, "--dump-dom")
    errors = [
        ln
        for ln in res.stderr.splitlines()
        if ("CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln))
        or "Uncaught" in ln
        or "Failed to load resource" in ln
    ]
    return res.stdout, errors


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    # negative control: the probe does see a broken image and a script error
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
        "<script>undefined_function()</script></body></html>"
    )
    dom, errors = _load(bad, tmp_path)
    assert 'data-images="1"' in dom and 'data-images-ok="0"' in dom
    assert errors, "console errors are not detected"

    dom, errors = _load(report, tmp_path)
    assert errors == []
    n = int(re.search(r'data-images="(\d+)"', dom).group(1))
    assert n == 6 and f'data-images-ok="{n}"' in dom
    shot = report.parent / "screenshot.png"
    _chromium(
        report.as_uri(),
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1200,2400",
        f"--screenshot={shot}",
    )
    data = shot.read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 50_000  # a rendered page, not a blank one
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 2400)


def test_report_cli_rejects_unknown_input(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "rnafm", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2 and "not a predictions .h5ad" in res.stderr


def test_report_of_a_training_run(tmp_path) -> None:
    import json

    from rnafm.report import make_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"seed": 0, "optim": {"lr": 0.001}}))
    (run / "val_metrics.json").write_text(json.dumps({"val_pcc": 0.41}))
    lines = [{"epoch": e, "loss": 2 / e, "val_pcc": 0.1 * e} for e in range(1, 6)]
    (run / "history.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{torn")
    page = make_report(run, out=tmp_path / "r.html").read_text()
    assert "<h2>Training curves" in page and page.count("<img") == 1
    assert "val_pcc" in page and "&quot;lr&quot;: 0.001" in page
