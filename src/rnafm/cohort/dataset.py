"""Cohort data in memory: per-slide cluster means matched to the reference expression."""

from __future__ import annotations

import contextlib
import json
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

__all__ = ["CohortData", "load_cohort_data", "slide_sites", "mean_tile_features"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def mean_tile_features(clusters: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    """Size-weighted mean of cluster means (n, K, D) with sizes (n, K): each slide's mean tile
    feature, float64 (n, D). Without sizes, or for a slide whose sizes are all zero, the
    clusters count equally."""
    clusters = np.asarray(clusters, dtype=np.float64)  # (n, K, D)
    if sizes is None:
        return clusters.mean(axis=1)
    w = np.asarray(sizes, dtype=np.float64)  # (n, K)
    total = w.sum(axis=1, keepdims=True)  # (n, 1)
    w = np.where(total > 0, w / np.maximum(total, 1e-12), 1.0 / w.shape[1])  # (n, K)
    return np.einsum("nk,nkd->nd", w, clusters)  # (n, D)


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
    cluster_config: ClusterConfig | None = None  # the k-means settings the clusters came from
    feature_attrs: dict[str, Any] | None = None  # encoder / tiling of the feature files
    sites: list[str] | None = None  # tissue source site of each slide (the reference's column)
    samples: list[str] | None = None  # RNA sample of each slide (the reference's sample_id)

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
            cluster_config=self.cluster_config,
            feature_attrs=None if self.feature_attrs is None else dict(self.feature_attrs),
            sites=None if self.sites is None else [self.sites[i] for i in ix],
            samples=None if self.samples is None else [self.samples[i] for i in ix],
        )

    def fingerprint(self) -> dict[str, str]:
        """Digests of the inputs a model sees, one per kind (compare them to say what changed).

        ``features``: the cluster means and sizes (another encoder, other feature files or
        other k-means settings change it); ``expression``: genes and values; ``slides``:
        slide and patient ids; ``clusters``: the k-means settings, when known.
        """
        import hashlib

        def digest(*parts: Any) -> str:
            h = hashlib.sha1()
            for part in parts:
                if isinstance(part, np.ndarray):
                    a = np.ascontiguousarray(part)
                    h.update(f"{a.dtype.str}{a.shape}".encode())
                    h.update(a.tobytes())
                else:
                    h.update(repr(part).encode())
            return h.hexdigest()[:16]

        expr = None if self.expression is None else np.asarray(self.expression, dtype=np.float32)
        clusters = None if self.cluster_config is None else self.cluster_config.model_dump()
        return {
            "slides": digest(list(self.slide_ids), list(self.patient_ids)),
            "features": digest(
                np.asarray(self.clusters, dtype=np.float32), np.asarray(self.sizes, np.float32)
            ),
            "expression": digest(self.genes, expr),
            "clusters": digest(sorted((clusters or {}).items())),
        }


def slide_sites(data: CohortData) -> list[str]:
    """The tissue source site of every slide: the reference's ``site`` column, else the site
    field of the slide's or patient's TCGA barcode (``TCGA-<site>-<participant>``).

    Raises
    ------
    InputError
        A slide has no site.
    """
    from rnafm.cohort.tcga import site_from_name

    out, missing = [], []
    for i, (sid, pid) in enumerate(zip(data.slide_ids, data.patient_ids, strict=True)):
        given = data.sites[i].strip() if data.sites is not None else ""
        site = given or site_from_name(pid) or site_from_name(sid)
        if site is None:
            missing.append(sid)
        out.append(site or "")
    if missing:
        raise InputError(
            f"no tissue source site for {len(missing)} slide(s), e.g. {missing[:3]}: add a "
            "'site' column to the reference (TCGA barcodes carry it: TCGA-<site>-<participant>)"
        )
    return out


def sites_for(data: CohortData, *, required: bool) -> list[str] | None:
    """:func:`slide_sites` when ``required`` (its error names the fix when a slide has no
    site); otherwise the sites when every slide has one, else None (hold out patients)."""
    if required:
        return slide_sites(data)
    try:
        return slide_sites(data)
    except InputError:
        return None


def _feature_files(features_dir: PathLike | Sequence[PathLike]) -> dict[str, Path]:
    from rnafm.features.io import find_feature_files

    dirs = [features_dir] if isinstance(features_dir, (str, os.PathLike)) else list(features_dir)
    files: dict[str, Path] = {}
    for d in dirs:
        for sid, p in find_feature_files(d).items():
            if sid in files and files[sid] != p:
                logger.warning(
                    "slide %s has feature files in several folders; using %s, ignoring %s",
                    sid,
                    files[sid],
                    p,
                )
                continue
            files.setdefault(sid, p)
    return files


PROVENANCE_KEYS = (
    "encoder",
    "encoder_id",
    "patch_size",
    "target_magnification",
    "target_mpp",
)


def _file_provenance(path: Path) -> dict[str, Any]:
    """Encoder and tiling attributes of one feature file ({} when it has none or is unreadable)."""
    import h5py

    from rnafm.features.io import _to_python

    found: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            for ds in ("coords", "features"):
                if ds in f:
                    found.update({str(k): _to_python(v) for k, v in f[ds].attrs.items()})
            found.update({str(k): _to_python(v) for k, v in f.attrs.items()})
    except (OSError, ValueError):
        return {}
    return {k: found[k] for k in PROVENANCE_KEYS if k in found and found[k] is not None}


def feature_provenance(paths: dict[str, Path]) -> dict[str, Any] | None:
    """The encoder and tiling the feature files came from (None when no file says).

    A key whose value differs between files maps to the sorted list of distinct values (and a
    warning names two files that disagree); files without any such attribute are counted.
    """
    per_file = {sid: _file_provenance(p) for sid, p in paths.items()}
    bare = [sid for sid, a in per_file.items() if not a]
    if per_file and len(bare) == len(per_file):
        logger.warning(
            "the %d feature files (e.g. %s) carry no encoder/tiling attributes: a model cannot "
            "check that new features come from the same encoder",
            len(bare),
            paths[bare[0]],
        )
        return None
    out: dict[str, Any] = {}
    for key in PROVENANCE_KEYS:
        seen: dict[str, str] = {}
        for sid, attrs in per_file.items():
            if key in attrs:
                seen.setdefault(json.dumps(attrs[key], default=str), sid)
        if len(seen) == 1:
            out[key] = json.loads(next(iter(seen)))
        elif len(seen) > 1:
            values = sorted(seen)
            logger.warning(
                "feature files disagree on %s: %s has %s, %s has %s",
                key,
                paths[seen[values[0]]],
                values[0],
                paths[seen[values[1]]],
                values[1],
            )
            out[key] = [json.loads(v) for v in values]
    if bare:
        logger.warning(
            "%d feature file(s) carry no encoder/tiling attributes (e.g. %s)",
            len(bare),
            paths[bare[0]],
        )
        out["files_without_attributes"] = len(bare)
    return out


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
        The slides that could be loaded, in reference (or ``slides``, or file name) order, with
        the k-means settings used (``cluster_config``) and the encoder/tiling attributes of the
        files (``feature_attrs``). Slides without a feature file or with an unreadable one are
        listed in ``skipped`` with the reason (and a warning is logged).

    Raises
    ------
    InputError
        No slide could be loaded (e.g. reference names and feature files do not match), or the
        feature files have different dimensions (the odd files are named).
    """
    from rnafm.cohort.tcga import patient_from_name

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

    loaded, means, sizes = _load_all(candidates, files, config, skipped)
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
        sites = None if reference.sites is None else [reference.sites[i] for i in idx]
        samples = None if reference.samples is None else [reference.samples[i] for i in idx]
        genes: list[str] | None = list(reference.genes)
        expression = reference.values[idx].astype(np.float32)  # (n, G)
    else:
        patients = [patient_from_name(s) for s in loaded]
        projects, sites, samples, genes, expression = None, None, None, None, None
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
        cluster_config=config,
        feature_attrs=feature_provenance({s: files[s] for s in loaded}),
        sites=sites,
        samples=samples,
    )


def _load_all(
    candidates: list[str],
    files: dict[str, Path],
    config: ClusterConfig,
    skipped: list[tuple[str, str]],
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Cluster every candidate slide (unreadable ones go to ``skipped``).

    Raises
    ------
    InputError
        The slides do not all have the same feature dimension (names the odd files).
    """
    from rnafm.features.clusters import load_clusters

    loaded: list[str] = []
    means: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    with _progress() as progress:
        task = progress.add_task("clustering slide features", total=len(candidates))
        for sid in candidates:
            try:
                c = load_clusters(files[sid], config)
            except InputError as e:
                skipped.append((sid, str(e)))
            else:
                loaded.append(sid)
                means.append(c.means)
                sizes.append(c.sizes)
            progress.advance(task)
    dims: dict[int, list[str]] = {}
    for sid, m in zip(loaded, means, strict=True):
        dims.setdefault(int(m.shape[1]), []).append(sid)
    if len(dims) > 1:
        common = max(dims, key=lambda d: len(dims[d]))
        odd = [
            f"{files[s]} (dimension {d})" for d, sids in dims.items() if d != common for s in sids
        ]
        raise InputError(
            f"feature files have different dimensions: {len(dims[common])} have {common}, but "
            f"{'; '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}. Features from different "
            "encoders cannot be mixed: re-extract these slides with the same encoder or remove them."
        )
    return loaded, means, sizes
