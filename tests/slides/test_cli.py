"""`rnafm tile|extract|preprocess` through the real click group and the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnafm.cli.main import cli


@pytest.fixture
def slides(tmp_path, slide_20x, cmu_svs):
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(slide_20x, d / "s20.tiff")
    (d / "broken.svs").write_bytes(cmu_svs.read_bytes()[:3000])
    shutil.copy(cmu_svs, d / "z_cmu.svs")
    return d


def test_tile_then_extract_with_a_broken_slide(slides, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(
        cli, ["tile", str(slides), "--out", str(out), "--mag", "20", "--no-progress"]
    )
    assert res.exit_code == 1, res.output
    assert "1 slide(s) failed" in res.output
    assert sorted(p.name for p in (out / "tiles").glob("*.h5")) == ["s20.h5", "z_cmu.h5"]
    assert (out / "thumbnails" / "z_cmu.png").exists()
    failures = json.loads((out / "failures.json").read_text())["failures"]
    assert [f["slide_id"] for f in failures] == ["broken"]
    res = runner.invoke(
        cli,
        [
            "extract",
            "--tiles",
            str(out / "tiles"),
            "--out",
            str(out),
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output  # exit status reflects this run only
    assert sorted(p.name for p in (out / "features" / "builtin").glob("*.h5")) == [
        "s20.h5",
        "z_cmu.h5",
    ]


def test_bad_options_are_usage_errors(slides, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        cli, ["tile", str(slides), "--out", str(tmp_path), "--mag", "20", "--mpp", "0.5"]
    )
    assert res.exit_code == 2 and "either" in res.output
    res = runner.invoke(
        cli, ["extract", "--tiles", str(slides), "--out", str(tmp_path), "--encoder", "clip"]
    )
    assert res.exit_code == 2 and "unknown encoder" in res.output


@pytest.mark.slow
def test_preprocess_console_script_feeds_training(slides, tmp_path):
    (slides / "broken.svs").unlink()
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "rnafm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rnafm"]
    args = [
        "preprocess",
        str(slides),
        "--out",
        str(out),
        "--workers",
        "0",
        "--no-progress",
        "--max-tiles",
        "12",
    ]
    res = subprocess.run(cmd + args, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "features: " in res.stdout
    from rnafm.cohort.dataset import load_cohort_data
    from rnafm.features.clusters import ClusterConfig

    data = load_cohort_data(out / "features" / "builtin", cluster_config=ClusterConfig(k=4))
    assert sorted(data.slide_ids) == ["s20", "z_cmu"]
    assert data.clusters.shape[:2] == (2, 4) and data.clusters.shape[2] > 30
    # running again does nothing new and succeeds
    res = subprocess.run(cmd + args, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "2 skipped" in res.stdout


def test_tile_exit_status_when_a_slide_is_locked(slides, tmp_path):
    from rnafm.slides.jobs import slide_lock

    (slides / "broken.svs").unlink()
    out = tmp_path / "out"
    with slide_lock(out / "tiles" / ".locks", "s20"):
        res = CliRunner().invoke(
            cli, ["tile", str(slides), "--out", str(out), "--mag", "20", "--no-progress"]
        )
    assert res.exit_code == 3, res.output
    assert "1 slide(s) not processed: locked by another process (e.g. s20)" in res.output
