"""Tile a batch of slides: skip finished slides, lock each slide, record failures and go on."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnafm.errors import SlideError
from rnafm.slides.config import TilingConfig
from rnafm.slides.jobs import (
    CohortReport,
    JobStatus,
    SlideJob,
    recorded,
    resolve_slides,
    slide_lock,
    update_failures,
)
from rnafm.slides.progress import cohort_progress, rate_text
from rnafm.slides.tiling import read_tile_file, tile_slide, tiles_path
from rnafm.slides.wsi import slide_id_of

__all__ = ["TilingReport", "tile_slides", "tile_slide_job", "tiles_complete"]

log = logging.getLogger(__name__)

TilingReport = CohortReport


def tiles_complete(path: Path, config: TilingConfig) -> bool:
    """A tile file exists, is readable, and was made with the same tiling settings."""
    if not path.exists():
        return False
    try:
        _, attrs = read_tile_file(path)
    except SlideError:
        return False
    return attrs.get("tiling_digest") == config.digest()


def tile_slide_job(
    slide_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TilingConfig,
    *,
    progress: Any = None,
) -> SlideJob:
    """Tile one slide as a cohort job: skip if done, lock, never raise for a bad slide.

    This is the unit of work a scheduler (e.g. one Dask task per slide) runs.
    """
    out = Path(out)
    sid = slide_id_of(slide_path)
    target = tiles_path(out, sid)
    job = SlideJob(sid, str(slide_path), JobStatus.DONE, output=str(target))
    if not config.overwrite and tiles_complete(target, config):
        job.status = JobStatus.SKIPPED
        job.n_tiles = len(read_tile_file(target)[0])
        return job
    with recorded(job, slide_path, log), slide_lock(out / "tiles" / ".locks", sid):
        if not config.overwrite and tiles_complete(target, config):  # finished meanwhile
            job.status = JobStatus.SKIPPED
            return job
        result = tile_slide(slide_path, out, config, progress=progress)
        job.n_tiles = len(result.coords)
    return job


def tile_slides(
    slides: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TilingConfig | None = None,
) -> TilingReport:
    """Tile every slide; write ``<out>/tiles``, ``<out>/thumbnails`` and ``<out>/failures.json``.

    Parameters
    ----------
    slides:
        Slide files, folders (searched recursively) or CSVs with a ``wsi_file_name`` column.
    out:
        Output folder (may be shared by several processes).
    config:
        Tiling settings.

    Returns
    -------
    TilingReport
        One :class:`SlideJob` per slide; ``report.ok`` is False when any slide failed.
    """
    config = config or TilingConfig()
    out = Path(out)
    if isinstance(slides, (str, os.PathLike)):
        slides = [slides]
    paths = resolve_slides(slides)
    report = CohortReport(stage="tile")
    log.info("tiling %d slides into %s", len(paths), out / "tiles")
    with cohort_progress(config.progress and len(paths) > 0) as bar:
        cohort_task = bar.add_task("slides", total=len(paths), rate="") if bar else None
        t0 = time.perf_counter()
        tiles_done = 0
        for path in paths:
            slide_task = bar.add_task(slide_id_of(path)[:30], total=None, rate="") if bar else None
            s0 = time.perf_counter()
            count = [0]

            def advance(n: int, _task=slide_task, _s0=s0, _count=count) -> None:
                _count[0] += n
                bar.update(
                    _task, advance=n, rate=rate_text(_count[0], time.perf_counter() - _s0, "tiles")
                )

            job = tile_slide_job(path, out, config, progress=advance if bar else None)
            report.jobs.append(job)
            tiles_done += count[0]
            if bar:
                bar.remove_task(slide_task)
                bar.update(
                    cohort_task, advance=1,
                    rate=rate_text(tiles_done, time.perf_counter() - t0, "tiles"),
                )  # fmt: skip
    update_failures(out, report)
    log.info(report.summary())
    return report
