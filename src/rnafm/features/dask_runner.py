"""One task per slide on a Dask cluster; per-slide failures are recorded and the run goes on.

>>> from functools import partial
>>> results = run_per_slide(partial(tile_slide_job, out=out, config=cfg), slides)  # doctest: +SKIP
>>> [r.to_record() for r in results if not r.ok]                                   # doctest: +SKIP

``scheduler`` picks where tasks run:

- ``"local"``: a ``LocalCluster`` on this machine (``n_workers`` processes, each with
  ``threads_per_worker`` threads), started and closed by the call;
- ``"serial"``: in this process, one slide after another, no Dask (debugging, tiny cohorts);
- ``"tcp://host:8786"`` (any scheduler address): an existing cluster, e.g. started with
  ``dask scheduler`` + ``dask worker`` or by dask-jobqueue;
- a ``distributed.Client``: used as is and left open (dask-jobqueue's ``SLURMCluster``).

The function must be picklable (a top-level function, or a ``functools.partial`` of one, in
an importable module), take one slide path and return a small picklable result. Each call
should write its own outputs atomically, so a task that is retried or run twice is harmless.
A script that starts a ``"local"`` cluster of worker processes must call this under
``if __name__ == "__main__":`` (workers are spawned and re-import the script).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from rnafm.errors import InputError

__all__ = ["Scheduler", "SlideResult", "run_per_slide", "failure_records"]

logger = logging.getLogger(__name__)


class Scheduler(str, Enum):
    """Named schedulers; any other value is a Dask scheduler address."""

    LOCAL = "local"  # a LocalCluster on this machine
    SERIAL = "serial"  # no Dask: a plain loop in this process


@dataclass
class SlideResult:
    """Outcome of one slide's task."""

    slide: str  # the slide path as given
    ok: bool
    result: Any = None  # what the function returned (None on failure)
    error: str | None = None  # exception type on failure
    reason: str | None = None  # exception message on failure
    traceback: str | None = None  # formatted traceback, for the log
    seconds: float = 0.0
    worker: str | None = None  # host:pid that ran it

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record for a failure report (no traceback, no result)."""
        record = asdict(self)
        record.pop("traceback")
        record.pop("result")
        return record


def failure_records(results: Sequence[SlideResult]) -> list[dict[str, Any]]:
    """Report records of the failed slides, in input order."""
    return [r.to_record() for r in results if not r.ok]


def _run_one(func: Callable[[str], Any] | bytes, slide: str) -> SlideResult:
    """Run ``func(slide)``; any exception becomes a failure record.

    ``func`` may come as cloudpickle bytes (how the Dask path sends it), so a function that
    cannot be loaded on a worker fails its slides with a clear reason instead of killing the
    worker.
    """
    start = time.perf_counter()
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        if isinstance(func, bytes):
            import cloudpickle

            func = cloudpickle.loads(func)
        value = func(slide)
    except Exception as e:  # noqa: BLE001 - the per-slide failure boundary: record it, go on
        return SlideResult(
            slide=slide,
            ok=False,
            error=type(e).__name__,
            reason=str(e) or repr(e),
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - start,
            worker=where,
        )
    return SlideResult(slide, True, value, seconds=time.perf_counter() - start, worker=where)


def _pickled(func: Callable[[str], Any]) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps(func)
    except Exception as e:  # noqa: BLE001 - any pickling failure means the same fix
        raise InputError(
            f"the per-slide function {func!r} cannot be sent to Dask workers ({e}); use a "
            "top-level function of an importable module, or functools.partial of one"
        ) from e


@contextmanager
def _client(
    scheduler: Any,
    *,
    n_workers: int | None,
    threads_per_worker: int,
    processes: bool,
    n: int,
    connect_timeout_s: float,
) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler == Scheduler.LOCAL.value:
        workers = n_workers or max(1, min(n, (os.cpu_count() or 1) // max(threads_per_worker, 1)))
        logger.info("starting a LocalCluster: %d workers x %d threads", workers, threads_per_worker)
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=processes,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    logger.info("connecting to the Dask scheduler at %s", scheduler)
    try:
        client = Client(scheduler, timeout=f"{connect_timeout_s}s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(
            f"cannot reach a Dask scheduler at {scheduler!r} ({e}); start one "
            "(`dask scheduler`, then `dask worker <address>`) or use --scheduler local"
        ) from e
    with client:
        yield client


def _log_done(result: SlideResult, done: int, total: int) -> None:
    if result.ok:
        logger.info("[%d/%d] %s done in %.1f s", done, total, result.slide, result.seconds)
    else:
        logger.warning(
            "[%d/%d] %s failed: %s: %s", done, total, result.slide, result.error, result.reason
        )
        if result.traceback:
            logger.debug("%s", result.traceback)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]slides"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("slides", total=total)
        yield lambda: bar.advance(task)


def run_per_slide(
    func: Callable[[str], Any],
    slides: Sequence[str | os.PathLike[str]],
    *,
    scheduler: str | Any = Scheduler.LOCAL.value,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    retries: int = 0,
    progress: bool = False,
    connect_timeout_s: float = 30.0,
) -> list[SlideResult]:
    """Run ``func(slide)`` once per slide, gathering results and failures.

    Parameters
    ----------
    func
        Picklable callable taking one slide path (``str``) and returning a small result.
    slides
        Slide paths; results come back in this order.
    scheduler
        ``"local"`` (LocalCluster), ``"serial"`` (no Dask), a scheduler address
        (``"tcp://host:8786"``) or a ``distributed.Client``.
    n_workers, threads_per_worker, processes
        LocalCluster shape (default: one single-threaded worker process per CPU core, at most
        one per slide); ignored for other schedulers.
    retries
        Resubmissions of a task whose worker died (e.g. a preempted SLURM job). Exceptions
        raised by ``func`` are not retried: they are recorded.
    progress
        Show a rich progress bar (completions are logged either way).
    connect_timeout_s
        How long to wait for a scheduler given by address.

    Returns
    -------
    list[SlideResult]
        One per slide; ``ok`` is False with ``error``/``reason`` when the slide failed.
    """
    paths = [str(s) for s in slides]
    if not paths:
        return []
    if isinstance(scheduler, Scheduler):
        scheduler = scheduler.value
    if scheduler == Scheduler.SERIAL.value:
        out = []
        with _progress(progress, len(paths)) as advance:
            for i, path in enumerate(paths, 1):
                out.append(_run_one(func, path))
                _log_done(out[-1], i, len(paths))
                advance()
        return out
    blob = _pickled(func)
    from distributed import as_completed

    start = time.perf_counter()
    results: list[SlideResult | None] = [None] * len(paths)
    with (
        _client(
            scheduler,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            n=len(paths),
            connect_timeout_s=connect_timeout_s,
        ) as client,
        _progress(progress, len(paths)) as advance,
    ):
        futures = {
            client.submit(_run_one, blob, path, pure=False, retries=retries): i
            for i, path in enumerate(paths)
        }
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            if future.status == "finished":
                results[i] = future.result()
            else:  # the task itself broke: worker died, result could not be sent, cancelled
                exc = future.exception() if future.status == "error" else None
                results[i] = SlideResult(
                    slide=paths[i],
                    ok=False,
                    error=type(exc).__name__ if exc else future.status,
                    reason=str(exc) if exc else f"task {future.status}",
                )
            _log_done(results[i], done, len(paths))
            advance()
    final = [r for r in results if r is not None]
    n_failed = sum(not r.ok for r in final)
    logger.info(
        "%d slides in %.1f s: %d done, %d failed",
        len(final),
        time.perf_counter() - start,
        len(final) - n_failed,
        n_failed,
    )
    return final
