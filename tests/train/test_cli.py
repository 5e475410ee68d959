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
