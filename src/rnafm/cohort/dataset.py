"""Cohort data in memory: per-slide cluster means matched to the reference expression."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnafm.cohort.reference import Reference, slide_id_from_name
from rnafm.errors import InputError
from rnafm.features.clusters import ClusterConfig

__all__ = ["CohortData", "load_cohort_data"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass
class CohortData:
    """Slides ready for a model: cluster means, sizes and (when known) expression."""

    slide_ids: list[str]
    patient_ids: list[str]
    projects: list[str] | None
    clusters: np.ndarray  # float32 (n, K, D)
    sizes: np.ndarray  # float32 (n, K)
    genes: list[str] | None
    expression: (
        np.ndarray | None
    )  # float32 (n, G) log2(x+1), None when predicting without a reference
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (slide_id, reason)

    def __len__(self) -> int:
        return len(self.slide_ids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> CohortData:
        """Rows ``idx`` (integer indices or a bool mask), in that order; ``skipped`` is kept."""
        ix = np.asarray(idx)
        if ix.dtype == bool:
            ix = np.flatnonzero(ix)
        ix = ix.astype(np.int64)
        return CohortData(
            slide_ids=[self.slide_ids[i] for i in ix],
            patient_ids=[self.patient_ids[i] for i in ix],
            projects=None if self.projects is None else [self.projects[i] for i in ix],
            clusters=self.clusters[ix],
            sizes=self.sizes[ix],
            genes=None if self.genes is None else list(self.genes),
            expression=None if self.expression is None else self.expression[ix],
            skipped=list(self.skipped),
        )


def _feature_files(features_dir: PathLike | Sequence[PathLike]) -> dict[str, Path]:
    from rnafm.features.io import find_feature_files

    dirs = [features_dir] if isinstance(features_dir, (str, os.PathLike)) else list(features_dir)
    files: dict[str, Path] = {}
    for d in dirs:
        for sid, p in find_feature_files(d).items():
            files.setdefault(sid, p)
    return files


@contextlib.contextmanager
def _progress() -> Iterator[Any]:
    """A rich progress bar; a silent stand-in when another live display refuses a second one."""
    from rich.errors import LiveError
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    try:
        bar.start()
    except LiveError:  # older rich inside another progress bar
        bar = Progress(disable=True)
    try:
        yield bar
    finally:
        bar.stop()


def load_cohort_data(
    features_dir: PathLike | Sequence[PathLike],
    *,
    reference: Reference | None = None,
    slides: Sequence[str] | None = None,
    cluster_config: ClusterConfig | None = None,
) -> CohortData:
    """Load the cluster means of every slide, matched to the reference when one is given.

    Parameters
    ----------
    features_dir
        A folder of feature files (or several), any layout :func:`rnafm.features.io.find_feature_files`
        accepts.
    reference
        Slides and their expression; ``None`` when predicting without one.
    slides
        Slide ids (file names are accepted: a known extension is dropped) to restrict to. Without a
        reference and without ``slides`` every feature file is used.
    cluster_config
        K-means settings (default :class:`ClusterConfig`); clusters are cached beside the features.

    Returns
    -------
    CohortData
        The slides that could be loaded, in reference (or ``slides``, or file name) order. Slides
        without a feature file, with an unreadable one or with a mismatching feature dimension are
        listed in ``skipped`` with the reason (and a warning is logged).

    Raises
    ------
    InputError
        No slide could be loaded (e.g. reference names and feature files do not match).
    """
    from rnafm.cohort.tcga import patient_from_name
    from rnafm.features.clusters import load_clusters

    config = cluster_config or ClusterConfig()
    files = _feature_files(features_dir)
    skipped: list[tuple[str, str]] = []
    wanted = None if slides is None else list(dict.fromkeys(slide_id_from_name(s) for s in slides))
    if reference is not None:
        ref_pos = {s: i for i, s in enumerate(reference.slide_ids)}
        if wanted is None:
            wanted = list(reference.slide_ids)
        else:
            skipped += [(s, "not in the reference") for s in wanted if s not in ref_pos]
            wanted = [s for s in wanted if s in ref_pos]
    elif wanted is None:
        wanted = sorted(files)
    skipped += [(s, "no feature file") for s in wanted if s not in files]
    candidates = [s for s in wanted if s in files]

    loaded: list[str] = []
    means: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    dim: int | None = None
    with _progress() as progress:
        task = progress.add_task("clustering slide features", total=len(candidates))
        for sid in candidates:
            try:
                c = load_clusters(files[sid], config)
            except InputError as e:
                skipped.append((sid, str(e)))
                progress.advance(task)
                continue
            if dim is None:
                dim = c.means.shape[1]
            if c.means.shape[1] != dim:
                skipped.append(
                    (sid, f"feature dimension {c.means.shape[1]} != {dim} of other slides")
                )
            else:
                loaded.append(sid)
                means.append(c.means)
                sizes.append(c.sizes)
            progress.advance(task)
    for sid, reason in skipped:
        logger.warning("skipping slide %s: %s", sid, reason)
    if not loaded:
        where = features_dir if isinstance(features_dir, (str, os.PathLike)) else list(features_dir)
        raise InputError(
            f"{where}: no slide could be loaded ({len(files)} feature files, {len(wanted)} slides "
            f"requested, e.g. requested {wanted[:2]} vs files {sorted(files)[:2]}). Slide ids are "
            "file names without extension; check that the reference and feature files match."
        )
    if reference is not None:
        idx = np.array([ref_pos[s] for s in loaded], dtype=np.int64)
        patients = [reference.patient_ids[i] for i in idx]
        projects = None if reference.projects is None else [reference.projects[i] for i in idx]
        genes: list[str] | None = list(reference.genes)
        expression = reference.values[idx].astype(np.float32)  # (n, G)
    else:
        patients = [patient_from_name(s) for s in loaded]
        projects, genes, expression = None, None, None
    logger.info("loaded %d slides (%d skipped)", len(loaded), len(skipped))
    return CohortData(
        slide_ids=loaded,
        patient_ids=patients,
        projects=projects,
        clusters=np.stack(means).astype(np.float32),  # (n, K, D)
        sizes=np.stack(sizes).astype(np.float32),  # (n, K)
        genes=genes,
        expression=expression,
        skipped=skipped,
    )
