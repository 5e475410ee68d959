"""Cohort plumbing shared by tiling and extraction: slide lists, lock files, failure reports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from rnafm._io import read_json, write_json
from rnafm.errors import InputError, SlideError
from rnafm.slides.wsi import SLIDE_EXTENSIONS, slide_id_of

__all__ = [
    "JobStatus",
    "SlideJob",
    "CohortReport",
    "resolve_slides",
    "slide_lock",
    "SlideLocked",
    "recorded",
    "lock_timeout_s",
    "update_failures",
]

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.json"
LOCK_TIMEOUT_ENV = "RNAFM_LOCK_TIMEOUT_HOURS"
_LOCK_TIMEOUT_HOURS = 6.0


def lock_timeout_s() -> float:
    """Age in seconds after which a slide lock is stale whoever holds it: ``$RNAFM_LOCK_TIMEOUT_HOURS``
    hours (default 6; locks of dead processes on this host are broken at once).

    Raises
    ------
    InputError
        The variable is not a positive number.
    """
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return _LOCK_TIMEOUT_HOURS * 3600
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise InputError(f"{LOCK_TIMEOUT_ENV}={raw!r}: expected a positive number of hours")
    return hours * 3600


class JobStatus(str, Enum):
    """Outcome of one slide in a cohort run."""

    DONE = "done"
    SKIPPED = "skipped"  # output already complete
    LOCKED = "locked"  # another process holds the slide
    FAILED = "failed"


@dataclass
class SlideJob:
    """One slide's outcome: status, output file, tile count, seconds, and the reason on failure."""

    slide_id: str
    slide_path: str
    status: JobStatus
    output: str | None = None
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None


@dataclass
class CohortReport:
    """Outcomes of a cohort run (``rnafm tile`` / ``rnafm extract``)."""

    stage: str
    jobs: list[SlideJob] = field(default_factory=list)
    failures_path: Path | None = None

    def count(self, status: JobStatus) -> int:
        return sum(j.status == status for j in self.jobs)

    @property
    def failed(self) -> list[SlideJob]:
        return [j for j in self.jobs if j.status == JobStatus.FAILED]

    @property
    def locked(self) -> list[SlideJob]:
        """Slides left alone because another process holds their lock (not done by this run)."""
        return [j for j in self.jobs if j.status == JobStatus.LOCKED]

    @property
    def ok(self) -> bool:
        """True when every slide is done or was already complete (none failed or locked)."""
        return not self.failed and not self.locked

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s.value}" for s in JobStatus if self.count(s)]
        return f"{self.stage}: {len(self.jobs)} slides ({', '.join(parts) or 'none'})"

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "jobs": [{**asdict(j), "status": j.status.value} for j in self.jobs],
        }


def _csv_slides(csv: Path) -> list[Path]:
    import pandas as pd

    try:
        table = pd.read_csv(csv, sep="\t" if csv.suffix.lower() == ".tsv" else ",", dtype=str)
    except (OSError, ValueError) as e:
        raise InputError(f"{csv}: cannot read the slide table ({e})") from e
    if "wsi_file_name" not in table.columns:
        raise InputError(f"{csv}: needs a 'wsi_file_name' column (found {list(table.columns)[:8]})")
    out = []
    for name in table["wsi_file_name"].dropna():
        p = Path(name)
        if not p.is_absolute():
            p = csv.parent / p
        if p.suffix.lower() not in SLIDE_EXTENSIONS:  # a slide id: look for <id>.<ext>
            found = [p.with_name(p.name + ext) for ext in SLIDE_EXTENSIONS]
            p = next((f for f in found if f.exists()), p)
        out.append(p)
    return out


def resolve_slides(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand SLIDES arguments (files, folders searched recursively, CSVs with ``wsi_file_name``).

    Missing files listed in a CSV are kept (they fail later and land in the failures report);
    a missing command-line argument is an :class:`InputError`.

    Raises
    ------
    InputError
        A path does not exist, a CSV lacks ``wsi_file_name``, or two slides share an id.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(
                sorted(
                    f for f in p.rglob("*")
                    if f.suffix.lower() in SLIDE_EXTENSIONS and f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )  # fmt: skip
        elif p.suffix.lower() in {".csv", ".tsv"}:
            if not p.exists():
                raise InputError(f"{p}: slide table not found")
            found.extend(_csv_slides(p))
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"{p}: no such slide, folder or CSV; check the path")
    seen: dict[str, Path] = {}
    for f in found:
        sid = slide_id_of(f)
        if sid in seen and seen[sid].resolve() != f.resolve():
            raise InputError(f"two slides share the id {sid!r}: {seen[sid]} and {f}; rename one")
        seen[sid] = f
    return list(seen.values())


class SlideLocked(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Another live process is working on this slide."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def slide_lock(lock_dir: Path, slide_id: str, *, stale_s: float | None = None) -> Iterator[Path]:
    """Hold ``<lock_dir>/<slide>.lock`` for the duration of the block.

    The lock file is created exclusively (``O_EXCL``) and records the owner's host, pid and start
    time, so several processes (on one machine or on a shared file system) can work on one output
    folder. A lock whose owner process on this host is gone, or older than ``stale_s`` seconds
    (default :func:`lock_timeout_s`: a process on another host cannot be checked), is broken.

    Raises
    ------
    SlideLocked
        A live process holds the lock.
    """
    stale_s = lock_timeout_s() if stale_s is None else stale_s
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{slide_id}.lock"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    for _attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _stale(path, stale_s):
                log.warning("%s: breaking stale lock %s (%s)", slide_id, path, _owner(path))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            raise SlideLocked(str(path)) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise SlideLocked(str(path))
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _owner(path: Path) -> str:
    """``pid P on HOST since TIME`` of a lock file (what could be read)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "owner unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("time") or 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {since}"


def _stale(path: Path, stale_s: float) -> bool:
    try:
        info = json.loads(path.read_text() or "{}")
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written right now
    if age > stale_s:
        return True
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return not _pid_alive(info["pid"])
    return False


@contextlib.contextmanager
def recorded(job: SlideJob, source: object, logger: logging.Logger = log) -> Iterator[SlideJob]:
    """Run one slide's work so that it never raises for a bad slide: a lock held by another
    process marks ``job`` locked, a bad slide or I/O error marks it failed with the reason
    (``source`` names the input in it), and the seconds are recorded either way."""
    start = time.perf_counter()
    try:
        yield job
    except SlideLocked:
        job.status = JobStatus.LOCKED
        logger.info("%s: locked by another process, skipped", job.slide_id)
    except SlideError as e:
        job.status, job.error, job.reason = JobStatus.FAILED, type(e).__name__, str(e)
        logger.warning("%s: %s", job.slide_id, e)
    except (OSError, ValueError, RuntimeError, MemoryError) as e:
        job.status, job.error, job.reason = JobStatus.FAILED, type(e).__name__, f"{source}: {e}"
        logger.warning("%s failed: %s: %s", job.slide_id, type(e).__name__, e)
    finally:
        job.seconds = time.perf_counter() - start


def update_failures(out: Path, report: CohortReport) -> Path:
    """Merge this run's outcomes into ``<out>/failures.json``.

    Entries of this stage for slides that now succeeded (or were skipped as complete) are
    removed; new failures are added; other stages' entries are kept.
    """
    path = out / FAILURES_FILE
    entries: list[dict] = []
    if path.exists():
        with contextlib.suppress(OSError, ValueError):
            entries = list(read_json(path).get("failures", []))
    touched = {j.slide_id for j in report.jobs if j.status != JobStatus.LOCKED}
    entries = [
        e for e in entries if not (e.get("stage") == report.stage and e.get("slide_id") in touched)
    ]
    for j in report.failed:
        entries.append(
            {"stage": report.stage, "slide_id": j.slide_id, "slide_path": j.slide_path,
             "error": j.error, "reason": j.reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )  # fmt: skip
    write_json(path, {"n_failed": len(entries), "failures": entries})
    report.failures_path = path
    return path
