"""One task per slide on a Dask LocalCluster; failures recorded, the run goes on."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from rnafm.errors import InputError
from rnafm.features.dask_runner import Scheduler, failure_records, run_per_slide


def _tasks():
    name = "rnafm_test_dask_tasks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("dask_tasks.py")
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)  # workers cannot import the tests folder
    return sys.modules[name]


def _slides(tmp_path: Path) -> list[Path]:
    names = ["s1.svs", "s2.svs", "bad3.svs", "s4.tiff", "s5.ndpi"]
    paths = [tmp_path / n for n in names]
    for p in paths:
        p.write_bytes(b"x")
    return paths


def _check(results, slides: list[Path]) -> None:
    assert [r.slide for r in results] == [str(s) for s in slides]  # input order
    ok = [r for r in results if r.ok]
    assert len(ok) == 4
    for r in ok:
        assert Path(r.slide).with_suffix(".done").read_text() == Path(r.slide).name
        assert r.result["slide_id"] == Path(r.slide).stem
    (failure,) = failure_records(results)
    assert failure["slide"] == str(slides[2])
    assert failure["ok"] is False
    assert failure["error"] == "ValueError"
    assert "corrupt header" in failure["reason"]


def test_local_cluster_of_two_process_workers(tmp_path: Path) -> None:
    slides = _slides(tmp_path)
    results = run_per_slide(
        _tasks().fake_slide_task, slides, scheduler="local", n_workers=2, processes=True
    )
    _check(results, slides)
    pids = [r.result["pid"] for r in results if r.ok]
    assert pids and all(isinstance(p, int) and p > 0 for p in pids)
    assert os.getpid() not in pids  # the work ran in the worker processes
    assert all(r.worker for r in results)


def test_serial_scheduler_gives_the_same_report(tmp_path: Path) -> None:
    slides = _slides(tmp_path)
    results = run_per_slide(_tasks().fake_slide_task, slides, scheduler=Scheduler.SERIAL)
    _check(results, slides)
    assert "Traceback" in results[2].traceback


def test_unpicklable_function_and_bad_address(tmp_path: Path) -> None:
    slides = _slides(tmp_path)
    assert run_per_slide(_tasks().fake_slide_task, [], scheduler="local") == []
    with open(slides[0], "rb") as fh:
        with pytest.raises(InputError, match="cannot be sent to Dask workers"):
            run_per_slide(functools.partial(print, file=fh), slides, scheduler="local")
    with pytest.raises(InputError, match="cannot reach a Dask scheduler"):
        run_per_slide(
            _tasks().fake_slide_task, slides, scheduler="tcp://127.0.0.1:9", connect_timeout_s=2
        )


def test_existing_cluster_by_address_function_missing_on_workers(tmp_path: Path) -> None:
    """A function workers cannot import fails every slide with the reason; nothing hangs."""
    from distributed import LocalCluster

    spec = importlib.util.spec_from_file_location(
        "rnafm_test_unimportable", Path(__file__).with_name("dask_tasks.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[spec.name] = module  # importable here, not on the workers
    slides = _slides(tmp_path)[:2]
    try:
        with LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster:
            results = run_per_slide(
                module.fake_slide_task, slides, scheduler=cluster.scheduler_address
            )
    finally:
        del sys.modules[spec.name]
    assert [r.ok for r in results] == [False, False]
    assert {r.error for r in results} == {"ModuleNotFoundError"}
    assert all("rnafm_test_unimportable" in r.reason for r in results)
