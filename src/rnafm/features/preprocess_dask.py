"""``rnafm preprocess`` on Dask: tiling and feature extraction, one task per slide.

Each task tiles one slide (``rnafm.slides.batch.tile_slide_job``) and, when that worked,
encodes it (``rnafm.features.extract.extract_slide_job``); both skip finished work, lock the
slide and write atomically, so tasks can be retried or re-run. The encoder is built once per
worker process. Outcomes are merged into ``<out>/failures.json`` exactly like a local run, and a
:class:`rnafm.features.preprocess.PreprocessReport` is returned.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnafm.features.dask_runner import Scheduler, run_per_slide

__all__ = ["preprocess_distributed", "preprocess_slide"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _encoder(extraction_json: str) -> tuple[Any, Any]:
    """(bundle, device) for an ExtractConfig, built once per worker process."""
    from rnafm.features.encoders import build_encoder
    from rnafm.features.extract import ExtractConfig
    from rnafm.runtime import Device, resolve_device

    config = ExtractConfig.model_validate_json(extraction_json)
    bundle = build_encoder(config.encoder, weights=config.weights)
    device = resolve_device(Device.CPU if config.encoder == "builtin" else config.device)
    bundle.model.eval().to(device)
    return bundle, device


def preprocess_slide(slide: str, *, out: str, config: Any) -> tuple[Any, Any]:
    """Tile and encode one slide; returns ``(tile SlideJob, extract SlideJob or None)``.

    ``config`` is a :class:`rnafm.features.preprocess.PreprocessConfig`. A bad slide does not
    raise: its job has status ``failed`` with the reason (the runner records anything else).
    """
    from rnafm.features.extract import extract_slide_job
    from rnafm.slides.batch import tile_slide_job
    from rnafm.slides.jobs import JobStatus
    from rnafm.slides.tiling import tiles_path

    tiling = config.tiling.model_copy(update={"progress": False})
    tile_job = tile_slide_job(slide, out, tiling)
    if tile_job.status not in (JobStatus.DONE, JobStatus.SKIPPED):
        return tile_job, None
    extraction = config.extraction.model_copy(update={"progress": False})
    bundle, device = _encoder(extraction.model_dump_json())
    tile_file = tiles_path(out, tile_job.slide_id)
    return tile_job, extract_slide_job(tile_file, out, bundle, extraction, device=device)


def preprocess_distributed(
    slides: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: Any = None,
    *,
    scheduler: str | Any = Scheduler.LOCAL.value,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    retries: int = 1,
    progress: bool = True,
) -> Any:
    """Tile and encode ``slides`` into ``out`` with one Dask task per slide.

    Parameters
    ----------
    slides
        Slide files, folders (searched recursively) or CSVs with ``wsi_file_name``.
    out
        Output folder, visible to every worker.
    config
        :class:`rnafm.features.preprocess.PreprocessConfig` (default settings when None).
    scheduler, n_workers, threads_per_worker, processes, retries, progress
        As in :func:`rnafm.features.dask_runner.run_per_slide`.

    Returns
    -------
    rnafm.features.preprocess.PreprocessReport
        Tiling and extraction outcomes; ``features`` is the folder to pass to ``rnafm train``.
    """
    from rnafm._io import write_json
    from rnafm.features.extract import features_dir
    from rnafm.features.preprocess import PreprocessConfig, PreprocessReport
    from rnafm.slides.jobs import CohortReport, JobStatus, SlideJob, resolve_slides, update_failures
    from rnafm.slides.wsi import slide_id_of

    config = config or PreprocessConfig()
    out = Path(out)
    if isinstance(slides, (str, os.PathLike)):
        slides = [slides]
    paths = resolve_slides(slides)
    write_json(out / "preprocess_config.json", config.model_dump(mode="json"))
    task = functools.partial(preprocess_slide, out=str(out), config=config)
    results = run_per_slide(
        task,
        paths,
        scheduler=scheduler,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        retries=retries,
        progress=progress,
    )
    tiling, extraction = CohortReport(stage="tile"), CohortReport(stage="extract")
    for r in results:
        if r.ok:
            tile_job, extract_job = r.result
            tiling.jobs.append(tile_job)
            if extract_job is not None:
                extraction.jobs.append(extract_job)
        else:  # the task itself failed (worker died, unexpected error): a tiling failure
            tiling.jobs.append(
                SlideJob(
                    slide_id_of(r.slide), r.slide, JobStatus.FAILED, error=r.error, reason=r.reason
                )
            )
    update_failures(out, tiling)
    if extraction.jobs:
        update_failures(out, extraction)
    report = PreprocessReport(
        tiling,
        extraction if extraction.jobs else None,
        features_dir(out, config.extraction.encoder),
    )
    logger.info(report.summary())
    return report
