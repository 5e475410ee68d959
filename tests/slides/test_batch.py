"""Cohort runs: corrupt slides, resumption, locks, slide lists, failures report."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

from rnafm.errors import InputError
from rnafm.slides import batch as batch_mod
from rnafm.slides.batch import tile_slides
from rnafm.slides.config import TilingConfig
from rnafm.slides.jobs import JobStatus, resolve_slides, slide_lock

CFG = TilingConfig(magnification=20, progress=False)


@pytest.fixture
def cohort_dir(tmp_path, slide_40x, slide_20x, cmu_svs):
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(slide_40x, d / "a_40x.tiff")
    (d / "b_corrupt.svs").write_bytes(cmu_svs.read_bytes()[:5000])  # truncated in the middle
    shutil.copy(slide_20x, d / "c_20x.tiff")
    return d


def test_corrupt_slide_in_the_middle_does_not_stop_the_cohort(cohort_dir, tmp_path, cmu_svs):
    out = tmp_path / "out"
    report = tile_slides(cohort_dir, out, CFG)
    status = {j.slide_id: j.status for j in report.jobs}
    assert status == {
        "a_40x": JobStatus.DONE,
        "b_corrupt": JobStatus.FAILED,
        "c_20x": JobStatus.DONE,
    }
    assert not report.ok
    failures = json.loads((out / "failures.json").read_text())["failures"]
    assert [f["slide_id"] for f in failures] == ["b_corrupt"]
    assert "b_corrupt.svs" in failures[0]["reason"] and failures[0]["stage"] == "tile"
    assert sorted(p.name for p in (out / "tiles").glob("*.h5")) == ["a_40x.h5", "c_20x.h5"]
    # replacing the slide and re-running clears its failure; finished slides are skipped
    shutil.copy(cmu_svs, cohort_dir / "b_corrupt.svs")
    report2 = tile_slides(cohort_dir, out, CFG)
    status = {j.slide_id: j.status for j in report2.jobs}
    assert status == {
        "a_40x": JobStatus.SKIPPED,
        "b_corrupt": JobStatus.DONE,
        "c_20x": JobStatus.SKIPPED,
    }
    assert json.loads((out / "failures.json").read_text())["failures"] == []


def test_resume_after_interrupted_run(cohort_dir, tmp_path, monkeypatch):
    (cohort_dir / "b_corrupt.svs").unlink()
    out = tmp_path / "out"
    real = batch_mod.tile_slide
    calls = []

    def crash_on_second(path, *args, **kwargs):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-cohort
        return real(path, *args, **kwargs)

    monkeypatch.setattr(batch_mod, "tile_slide", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        tile_slides(cohort_dir, out, CFG)
    first = (out / "tiles" / "a_40x.h5").read_bytes()
    assert not (out / "tiles" / "c_20x.h5").exists()
    assert not list((out / "tiles").glob(".*.tmp*"))  # no half-written files left
    assert not list((out / "tiles" / ".locks").glob("*.lock"))  # lock released
    monkeypatch.setattr(batch_mod, "tile_slide", real)
    report = tile_slides(cohort_dir, out, CFG)
    assert {j.slide_id: j.status for j in report.jobs} == {
        "a_40x": JobStatus.SKIPPED,
        "c_20x": JobStatus.DONE,
    }
    assert (out / "tiles" / "a_40x.h5").read_bytes() == first
    # a different tiling setting makes the old file stale: redone, not skipped
    report = tile_slides(cohort_dir, out, TilingConfig(magnification=10, progress=False))
    assert {j.status for j in report.jobs} == {JobStatus.DONE}


def test_locked_slide_is_left_to_its_owner(cohort_dir, tmp_path):
    out = tmp_path / "out"
    (cohort_dir / "b_corrupt.svs").unlink()
    with slide_lock(out / "tiles" / ".locks", "a_40x"):
        report = tile_slides(cohort_dir, out, CFG)
    assert {j.slide_id: j.status for j in report.jobs}["a_40x"] == JobStatus.LOCKED
    assert not report.ok and not (out / "tiles" / "a_40x.h5").exists()  # not done: no success
    assert [j.slide_id for j in report.locked] == ["a_40x"]


def test_stale_lock_of_a_dead_process_is_broken(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "s.lock").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "time": 0})
    )
    with slide_lock(locks, "s") as p:
        assert json.loads(p.read_text())["pid"] == os.getpid()
    assert not (locks / "s.lock").exists()


def test_lock_of_another_host_expires_after_the_timeout(tmp_path, monkeypatch):
    from rnafm.slides.jobs import SlideLocked, lock_timeout_s

    locks = tmp_path / "locks"
    locks.mkdir()
    lock = locks / "s.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid", "time": 0}))
    os.utime(lock, (time.time() - 2 * 3600, time.time() - 2 * 3600))  # written 2 h ago
    monkeypatch.delenv("RNAFM_LOCK_TIMEOUT_HOURS", raising=False)
    assert lock_timeout_s() == 6 * 3600  # well below a day
    with pytest.raises(SlideLocked), slide_lock(locks, "s"):
        pass
    monkeypatch.setenv("RNAFM_LOCK_TIMEOUT_HOURS", "1")
    with slide_lock(locks, "s") as p:
        assert json.loads(p.read_text())["host"] == socket.gethostname()
    monkeypatch.setenv("RNAFM_LOCK_TIMEOUT_HOURS", "soon")
    with pytest.raises(InputError, match="RNAFM_LOCK_TIMEOUT_HOURS"):
        lock_timeout_s()


def test_resolve_slides_from_csv_folders_and_files(cohort_dir, tmp_path):
    csv = cohort_dir / "list.csv"
    csv.write_text("wsi_file_name,patient_id\na_40x.tiff,P1\nc_20x,P2\nmissing.svs,P3\n")
    got = resolve_slides([csv])
    assert [p.name for p in got] == ["a_40x.tiff", "c_20x.tiff", "missing.svs"]
    assert [p.name for p in resolve_slides([cohort_dir])] == [
        "a_40x.tiff",
        "b_corrupt.svs",
        "c_20x.tiff",
    ]
    with pytest.raises(InputError, match="wsi_file_name"):
        (tmp_path / "bad.csv").write_text("slide\nx\n")
        resolve_slides([tmp_path / "bad.csv"])
    with pytest.raises(InputError, match="no such"):
        resolve_slides([tmp_path / "nope.svs"])
    (tmp_path / "dup").mkdir()
    shutil.copy(cohort_dir / "a_40x.tiff", tmp_path / "dup" / "a_40x.svs")
    with pytest.raises(InputError, match="share the id"):
        resolve_slides([cohort_dir, tmp_path / "dup"])


def test_missing_file_in_csv_is_a_reported_failure(cohort_dir, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text(f"wsi_file_name\n{cohort_dir / 'gone.svs'}\n{cohort_dir / 'c_20x.tiff'}\n")
    report = tile_slides(csv, tmp_path / "out", CFG)
    assert [j.status for j in report.jobs] == [JobStatus.FAILED, JobStatus.DONE]
    assert "not found" in report.jobs[0].reason
