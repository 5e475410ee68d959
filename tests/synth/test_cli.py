"""``rnafm synth`` through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _rnafm() -> list[str]:
    exe = Path(sys.executable).with_name("rnafm")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("rnafm")
    return [found] if found else [sys.executable, "-m", "rnafm"]


def test_synth_command_writes_a_cohort(tmp_path):
    out = tmp_path / "cohort"
    cmd = _rnafm() + ["synth", "--out", str(out), "--patients", "3", "--seed", "4",
                      "--slide-size", "613x529", "--mpp", "1", "--genes", "41", "--gdc"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "3 patients" in res.stdout
    slides = sorted((out / "slides").glob("*.tiff"))
    assert len(slides) >= 3
    ref = pd.read_csv(out / "reference.csv")
    assert len(ref) == len(slides)
    assert ref.columns.str.startswith("rna_").sum() > 41  # 41 set genes plus genes in no set
    assert (out / "latent.npz").is_file() and (out / "latent.json").is_file()
    assert (out / "gdc" / "gdc_sample_sheet.tsv").is_file()
    assert len(list((out / "gdc" / "expression").glob("*/*.tsv"))) == 3
    with np.load(out / "latent.npz") as z:
        assert z["proportions"].shape == (3, 5)


def test_synth_bad_slide_size_is_a_usage_error(tmp_path):
    cmd = _rnafm() + ["synth", "--out", str(tmp_path / "x"), "--slide-size", "big"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "WIDTHxHEIGHT" in res.stderr
    assert not (tmp_path / "x").exists()


def test_commands_listed():
    res = subprocess.run(_rnafm() + ["--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "synth" in res.stdout and "demo" in res.stdout
    res = subprocess.run(_rnafm() + ["demo", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--quick" in res.stdout
