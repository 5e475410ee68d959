"""The reference table: one row per slide with its patient and bulk expression (SEQUOIA/RNA-FM CSV).

Columns: ``wsi_file_name`` (slide file name; a known slide/feature extension is dropped to give the
slide id), ``patient_id``, optional ``project``, ``site`` (tissue source site) and ``sample_id``
(the RNA sample, where a patient's slides come from several samples and their names carry no
TCGA barcode), then one
``rna_<SYMBOL>`` column per gene. Values are raw (TPM, FPKM-UQ, counts) or log2(x+1);
:class:`ExpressionScale` says which. Inside rnafm the values are always log2(x+1).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from rnafm.errors import InputError

__all__ = [
    "ExpressionScale",
    "Reference",
    "load_reference",
    "write_reference",
    "resolve_scale",
    "slide_id_from_name",
    "GENE_PREFIX",
]

logger = logging.getLogger(__name__)

GENE_PREFIX = "rna_"
SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide",
    ".czi", ".dcm", ".isyntax", ".qptiff", ".h5", ".hdf5", ".pt", ".npy",
)  # fmt: skip
_RAW_MIN_MAX = 50.0  # a maximum above this cannot be log2(x+1) of an expression value
_LOG2_MAX = 25.0  # log2(x+1) of expression values stays below this (x < 3.3e7)


class ExpressionScale(str, Enum):
    """Scale of the expression values in a user file."""

    RAW = "raw"  # TPM, FPKM(-UQ), counts: transformed with log2(x+1)
    LOG2 = "log2"  # already log2(x+1)
    AUTO = "auto"  # decide from the values; refuse when ambiguous


def slide_id_from_name(name: str) -> str:
    """Slide id from a ``wsi_file_name``: the name without a known slide or feature extension.

    TCGA names carry a UUID after a dot (``TCGA-...-DX1.d4ff32cd-...``); it is part of the id.
    """
    base = Path(str(name).strip()).name
    low = base.lower()
    for ext in SLIDE_EXTENSIONS:
        if low.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return base


@dataclass
class Reference:
    """Slides with their patients and expression on the log2(x+1) scale."""

    slide_ids: list[str]
    patient_ids: list[str]
    projects: list[str] | None
    genes: list[str]  # symbols without the rna_ prefix
    values: np.ndarray  # float32 (n_slides, n_genes), log2(x+1) scale
    source: Path | None = None
    sites: list[str] | None = None  # tissue source site of each slide (the ``site`` column)
    samples: list[str] | None = None  # RNA sample of each slide (the ``sample_id`` column)

    def __len__(self) -> int:
        return len(self.slide_ids)

    def subset(self, slide_ids: Sequence[str]) -> Reference:
        """The rows of ``slide_ids``, in that order.

        Raises
        ------
        InputError
            A slide id is not in the reference.
        """
        pos = {s: i for i, s in enumerate(self.slide_ids)}
        missing = [s for s in slide_ids if s not in pos]
        if missing:
            raise InputError(
                f"{self.source or 'reference'}: {len(missing)} slide(s) not in the reference, "
                f"e.g. {missing[:3]}. Check the slide names."
            )
        idx = np.array([pos[s] for s in slide_ids], dtype=np.int64)
        return Reference(
            slide_ids=[self.slide_ids[i] for i in idx],
            patient_ids=[self.patient_ids[i] for i in idx],
            projects=None if self.projects is None else [self.projects[i] for i in idx],
            genes=list(self.genes),
            values=self.values[idx],
            source=self.source,
            sites=None if self.sites is None else [self.sites[i] for i in idx],
            samples=None if self.samples is None else [self.samples[i] for i in idx],
        )


def resolve_scale(
    values: np.ndarray, scale: ExpressionScale, *, source: str = "expression"
) -> ExpressionScale:
    """Decide raw vs log2 for ``scale=auto`` and check for mixed scales.

    Rules for ``auto`` (on finite, non-negative values):

    - maximum above 50, or all values integers (counts) -> ``raw``;
    - all values within [0, 25] and some non-integer -> ``log2``;
    - anything else (a maximum between 25 and 50 with fractions) -> :class:`InputError` asking for
      ``--expression-scale``.

    For ``raw`` and ``auto`` a table whose rows look log2 (row maximum <= 25 with fractions) while
    other rows are clearly raw (row maximum > 50) is refused as mixed scales.
    """
    v = np.asarray(values)
    if v.size == 0:
        raise InputError(f"{source}: no expression values.")
    vmax = float(np.max(v))
    is_int = bool(np.all(np.equal(np.mod(v, 1.0), 0.0)))
    if scale is ExpressionScale.AUTO:
        if vmax > _RAW_MIN_MAX or (is_int and vmax > 0):
            resolved = ExpressionScale.RAW
        elif vmax <= _LOG2_MAX and not is_int:
            resolved = ExpressionScale.LOG2
        else:
            raise InputError(
                f"{source}: cannot tell whether the expression is raw or log2(x+1) "
                f"(maximum {vmax:.3g}). Pass --expression-scale raw or --expression-scale log2."
            )
        logger.info("%s: expression scale detected as %s (max %.3g)", source, resolved.value, vmax)
    else:
        resolved = scale
    if resolved is ExpressionScale.RAW and v.ndim == 2 and v.shape[0] > 1 and v.shape[1] >= 20:
        row_max = v.max(axis=1)
        row_frac = np.any(np.mod(v, 1.0) != 0.0, axis=1)
        looks_log = (row_max <= _LOG2_MAX) & row_frac
        if looks_log.any() and (row_max > _RAW_MIN_MAX).any():
            raise InputError(
                f"{source}: mixed scales: {int(looks_log.sum())} of {v.shape[0]} samples look "
                "log2(x+1)-transformed while others are raw. Put all samples on one scale."
            )
    if resolved is ExpressionScale.LOG2 and vmax > _RAW_MIN_MAX:
        raise InputError(
            f"{source}: --expression-scale log2 but the maximum value is {vmax:.3g}, which is not "
            "a log2(x+1) expression value. Use --expression-scale raw."
        )
    return resolved


def _check_values(v: np.ndarray, slides: list[str], genes: list[str], source: str) -> None:
    bad = ~np.isfinite(v)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(
            f"{source}: {int(bad.sum())} missing or non-finite expression values, e.g. slide "
            f"{slides[r]!r} gene {genes[c]!r}. Fill or drop them (rnafm does not impute)."
        )
    neg = v < 0
    if neg.any():
        r, c = np.argwhere(neg)[0]
        raise InputError(
            f"{source}: {int(neg.sum())} negative expression values, e.g. slide {slides[r]!r} gene "
            f"{genes[c]!r} = {v[r, c]:.3g}. Expected raw values or log2(x+1) (both >= 0); "
            "z-scored or log-ratio data are not supported."
        )


def load_reference(
    path: str | os.PathLike[str], *, scale: ExpressionScale = ExpressionScale.AUTO
) -> Reference:
    """Read a reference CSV (or TSV) and return it on the log2(x+1) scale.

    Parameters
    ----------
    path
        Table with ``wsi_file_name``, ``patient_id``, optional ``project`` and ``site`` (tissue
        source site), ``rna_<SYMBOL>`` columns.
        Without ``patient_id`` the patient is the TCGA barcode prefix (12 characters) of
        ``wsi_file_name`` when it looks like one, else the slide id.
    scale
        Scale of the ``rna_`` values; ``auto`` follows :func:`resolve_scale`.

    Raises
    ------
    InputError
        Unreadable file, no ``wsi_file_name`` or ``rna_`` columns, duplicated slides or genes,
        NaN, negative values, ambiguous or mixed scales.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: reference table not found. Create one with `rnafm cohort`.")
    try:
        with p.open(encoding="utf-8", errors="replace") as f:
            first = f.readline()
        sep = "\t" if first.count("\t") > first.count(",") else ","
        header = next(csv.reader([first.rstrip("\r\n")], delimiter=sep)) if first.strip() else []
        gene_cols = [c for c in header if str(c).startswith(GENE_PREFIX)]
        dtypes = {c: str for c in header if not str(c).startswith(GENE_PREFIX)}
        df = pd.read_csv(p, sep=sep, dtype=dtypes)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{p}: cannot read the reference table ({e}).") from e
    header = [str(c) for c in df.columns]
    if "wsi_file_name" not in header:
        raise InputError(
            f"{p}: no 'wsi_file_name' column (found {header[:5]}...). The reference needs "
            "wsi_file_name, patient_id and rna_<GENE> columns (see `rnafm cohort`)."
        )
    if not gene_cols:
        raise InputError(
            f"{p}: no 'rna_<GENE>' columns. Expression columns must be named rna_<SYMBOL>, "
            "e.g. rna_TP53; build the table with `rnafm cohort`."
        )
    genes = [c[len(GENE_PREFIX) :] for c in gene_cols]
    dup_genes = (
        sorted({g for g in genes if genes.count(g) > 1}) if len(set(genes)) < len(genes) else []
    )
    if dup_genes:
        raise InputError(f"{p}: duplicated gene columns {dup_genes[:5]}. Keep one column per gene.")
    if len(df) == 0:
        raise InputError(f"{p}: the reference has no rows.")
    names = df["wsi_file_name"].fillna("").astype(str).tolist()
    if any(not n.strip() for n in names):
        raise InputError(f"{p}: empty wsi_file_name in some rows. Every row needs a slide name.")
    slides = [slide_id_from_name(n) for n in names]
    if len(set(slides)) < len(slides):
        seen: set[str] = set()
        dups = [s for s in slides if s in seen or seen.add(s)]
        raise InputError(
            f"{p}: slide(s) listed more than once, e.g. {dups[:3]}. Keep one row per slide."
        )
    if "patient_id" in df.columns:
        patients = df["patient_id"].fillna("").astype(str).str.strip().tolist()
        if any(not x for x in patients):
            raise InputError(
                f"{p}: empty patient_id in some rows. Fill it (TCGA: first 12 characters)."
            )
    else:
        from rnafm.cohort.tcga import patient_from_name

        patients = [patient_from_name(s) for s in slides]
        logger.warning("%s: no patient_id column; using %s", p, "TCGA barcodes / slide ids")
    projects = df["project"].fillna("").astype(str).tolist() if "project" in df.columns else None
    sites = df["site"].fillna("").astype(str).str.strip().tolist() if "site" in df.columns else None
    samples = None
    if "sample_id" in df.columns:
        samples = df["sample_id"].fillna("").astype(str).str.strip().tolist()
    try:
        v = df[gene_cols].to_numpy(dtype=np.float64)  # fast path: all columns parsed as numbers
    except (ValueError, TypeError):
        v = None
    try:
        if v is None:
            v = df[gene_cols].apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise InputError(f"{p}: non-numeric values in rna_ columns ({e}).") from e
    _check_values(v, slides, genes, str(p))
    resolved = resolve_scale(v, ExpressionScale(scale), source=str(p))
    if resolved is ExpressionScale.RAW:
        v = np.log2(v + 1.0)
    return Reference(
        slide_ids=slides,
        patient_ids=patients,
        projects=projects,
        genes=genes,
        values=v.astype(np.float32),
        source=p,
        sites=sites,
        samples=samples,
    )


def write_reference(path: str | os.PathLike[str], ref: Reference, *, raw: bool = False) -> None:
    """Write ``ref`` as a reference CSV, atomically.

    Parameters
    ----------
    path
        Destination CSV.
    ref
        The reference (values on log2(x+1)).
    raw
        Write ``2**v - 1`` (raw values) instead of log2(x+1).
    """
    from rnafm._io import atomic_path

    v = np.asarray(ref.values, dtype=np.float64)  # (n, G)
    if raw:
        v = np.maximum(np.exp2(v) - 1.0, 0.0)
    optional = [("project", ref.projects), ("site", ref.sites), ("sample_id", ref.samples)]
    meta_names = ["wsi_file_name", "patient_id"] + [n for n, c in optional if c is not None]
    meta_cols = [ref.slide_ids, ref.patient_ids] + [c for _, c in optional if c is not None]
    row_fmt = ",".join(["%.6g"] * v.shape[1])
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(meta_names + [f"{GENE_PREFIX}{g}" for g in ref.genes])
        for i in range(v.shape[0]):
            meta = io.StringIO()
            csv.writer(meta, lineterminator="").writerow([str(c[i]) for c in meta_cols])
            f.write(meta.getvalue() + "," + (row_fmt % tuple(v[i])) + "\n")
