"""`rnafm train` and `rnafm predict` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RNAFM = Path(sys.executable).with_name("rnafm")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RNAFM), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_train_predict(tiny_cohort, tiny_overrides, tmp_path):
    root = tiny_cohort["root"]
    cfg = tmp_path / "cfg.json"
    nested: dict = {}
    for key, value in tiny_overrides.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    cfg.write_text(json.dumps(nested))
    run = tmp_path / "run"
    r = _run(
        "train", "--reference", str(root / "train.csv"), "--features", str(root / "features"),
        "--gene-sets", str(root / "sets.gmt"), "--out", str(run), "--config", str(cfg),
        "--expression-scale", "raw", "--epochs", "2", "--seed", "1", "--set", "optim.lr=0.002",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads((run / "config.json").read_text())["config"]
    assert (meta["optim"]["epochs"], meta["seed"], meta["optim"]["lr"]) == (2, 1, 0.002)
    assert meta["expression_scale"] == "raw"
    out = tmp_path / "pred.h5ad"
    r = _run(
        "predict", "--model", str(run), "--features", str(root / "features"),
        "--reference", str(root / "test.csv"), "--draws", "4", "--out", str(out), "--save-draws",
        "--steps", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.is_file() and (tmp_path / "pred.draws.h5").is_file()
    assert "predicted 6 slides" in r.stdout


def test_cli_errors(tiny_cohort, tmp_path):
    root = tiny_cohort["root"]
    r = _run("predict", "--model", str(tmp_path), "--features", str(root / "features"),
             "--out", str(tmp_path / "p.h5ad"))  # fmt: skip
    assert r.returncode == 2 and "incomplete run" in r.stderr
    r = _run(
        "train", "--reference", str(root / "train.csv"), "--features", str(root / "features"),
        "--out", str(tmp_path / "r"), "--set", "optim.nope=1",
    )  # fmt: skip
    assert r.returncode == 2 and "unknown config option" in r.stderr


def test_cli_train_validates_on_a_held_out_site(tiny_cohort, tiny_overrides, tmp_path):
    import pandas as pd

    root = tiny_cohort["root"]
    ref = pd.read_csv(root / "all.csv")  # 23 slides of 12 patients, P00-P11
    site = {f"P{i:02d}": "A" if i < 6 else ("B" if i < 8 else "C") for i in range(12)}
    ref.insert(2, "site", ref["patient_id"].map(site))
    with_sites = tmp_path / "ref.csv"
    ref.to_csv(with_sites, index=False)
    tiny = []
    for key, value in tiny_overrides.items():
        tiny += ["--set", f"{key}={json.dumps(value)}"]
    sets = ["--set", "validation.hold_out=site", *tiny]
    run = tmp_path / "run"
    r = _run(
        "train", "-r", str(with_sites), "-f", str(root / "features"), "-g", str(root / "sets.gmt"),
        "-o", str(run), "--epochs", "1", *sets,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    split = json.loads((run / "split.json").read_text())
    assert split["hold_out"] == "site" and len(split["val_sites"]) == 1
    val = {site[p] for p in split["val_patients"]}
    assert val == set(split["val_sites"]) and not val & {site[p] for p in split["train_patients"]}
    assert (
        json.loads((run / "config.json").read_text())["config"]["validation"]["hold_out"] == "site"
    )
    # the default (auto) holds out sites on this three-site cohort, and patients without sites
    for ref_file, want in ((with_sites, "site"), (root / "train.csv", "patient")):
        out = tmp_path / f"auto_{want}"
        r = _run(
            "train", "-r", str(ref_file), "-f", str(root / "features"),
            "-g", str(root / "sets.gmt"), "-o", str(out), "--epochs", "1", *tiny,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        split = json.loads((out / "split.json").read_text())
        assert split["hold_out"] == want and (split["val_sites"] is None) == (want == "patient")
    # without a site column (and no TCGA barcodes) the error says what to add
    r = _run(
        "train", "-r", str(root / "train.csv"), "-f", str(root / "features"),
        "-g", str(root / "sets.gmt"), "-o", str(tmp_path / "r2"), *sets,
    )  # fmt: skip
    assert r.returncode != 0 and "add a 'site' column" in r.stderr
