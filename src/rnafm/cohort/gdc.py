"""GDC downloads: augmented STAR-counts TSVs and the GDC sample sheet.

A GDC "STAR - Counts" file (``<uuid>.rna_seq.augmented_star_gene_counts.tsv``) looks like::

    # gene-model: GENCODE v36
    gene_id  gene_name  gene_type  unstranded  stranded_first  stranded_second  tpm_unstranded  fpkm_unstranded  fpkm_uq_unstranded
    N_unmapped  ...
    N_multimapping  ...
    N_noFeature  ...
    N_ambiguous  ...
    ENSG00000000003.15  TSPAN6  protein_coding  ...
    ENSGR0000182378.14_PAR_Y ...

Gene symbols come from ``gene_name``. Rows ``N_*`` (alignment summaries) and ``*_PAR_Y`` (the
pseudo-autosomal copies on chromosome Y, which GDC reports as zeros beside the X copy) are dropped.
Several Ensembl ids with one symbol are **summed** (raw values are additive: the symbol's expression
is the total of its loci), and the gene type of the id with the highest total is kept.
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from rnafm.errors import InputError

__all__ = [
    "GdcValue",
    "StarCounts",
    "SampleSheetEntry",
    "read_star_counts",
    "read_sample_sheet",
    "collapse_symbols",
    "GDC_COLUMNS",
]

logger = logging.getLogger(__name__)

GDC_COLUMNS = ("gene_id", "gene_name", "gene_type")


class GdcValue(str, Enum):
    """Value column of a GDC STAR-counts file."""

    TPM = "tpm_unstranded"
    FPKM_UQ = "fpkm_uq_unstranded"
    FPKM = "fpkm_unstranded"
    COUNTS = "unstranded"
    STRANDED_FIRST = "stranded_first"
    STRANDED_SECOND = "stranded_second"


@dataclass
class StarCounts:
    """One STAR-counts file, rows = genes (Ensembl ids without version, summaries dropped)."""

    gene_ids: list[str]  # versionless Ensembl ids
    gene_names: list[str]
    gene_types: list[str]
    values: np.ndarray  # float64 (G,) raw values of the chosen column
    path: Path


@dataclass(frozen=True)
class SampleSheetEntry:
    """One row of a GDC sample sheet."""

    file_name: str
    sample_id: str  # e.g. TCGA-05-4244-01A
    case_id: str  # e.g. TCGA-05-4244
    project: str | None
    sample_type: str | None  # e.g. "Primary Tumor"


def read_star_counts(
    path: str | os.PathLike[str], *, value: GdcValue | str = GdcValue.TPM
) -> StarCounts:
    """Read one GDC augmented STAR-counts TSV.

    Parameters
    ----------
    path
        The ``.tsv`` (optionally ``.gz``) file.
    value
        Column to read (``tpm_unstranded`` by default).

    Raises
    ------
    InputError
        The file is not a STAR-counts TSV (missing ``gene_id``/``gene_name`` columns), the value
        column does not exist, or values are missing or negative.
    """
    import pandas as pd

    p = Path(path)
    col = value.value if isinstance(value, GdcValue) else str(value)
    try:
        with gzip.open(p, "rt") if p.name.endswith(".gz") else p.open() as f:
            first = f.readline()
            skip = 1 if first.startswith("#") else 0
            header = (f.readline() if skip else first).rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"{p}: cannot read as a GDC STAR-counts TSV ({e}).") from e
    missing = [c for c in ("gene_id", "gene_name") if c not in header]
    if missing:
        raise InputError(
            f"{p}: not a GDC STAR-counts TSV (no {missing} column; header is "
            f"{header[:6]}). Expected the 'STAR - Counts' files from the GDC; for a "
            "samples x genes table pass a .csv/.tsv file instead of a folder."
        )
    if col not in header:
        options = [c for c in header if c not in GDC_COLUMNS]
        raise InputError(f"{p}: no value column {col!r}; this file has {options}. Pass --value.")
    text_cols = [c for c in GDC_COLUMNS if c in header]
    try:
        df = pd.read_csv(
            p,
            sep="\t",
            skiprows=skip,
            usecols=[*text_cols, col],
            dtype={c: str for c in text_cols},
            keep_default_na=False,
            na_values={col: [""]},
        )
        ids = df["gene_id"].to_numpy(dtype=str)
        vals_all = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise InputError(f"{p}: cannot read as a GDC STAR-counts TSV ({e}).") from e
    keep = ~(np.char.startswith(ids, "N_") | np.char.endswith(ids, "_PAR_Y"))
    vals = vals_all[keep]
    bad = ~np.isfinite(vals) | (vals < 0)
    if bad.any():
        raise InputError(
            f"{p}: {int(bad.sum())} missing, non-numeric or negative values in {col!r} (e.g. gene "
            f"{ids[keep][int(np.argmax(bad))]}). The file may be truncated; download it again."
        )
    kept = df[keep]
    n = int(keep.sum())
    types = kept["gene_type"].tolist() if "gene_type" in kept.columns else [""] * n
    return StarCounts(
        gene_ids=[g.split(".", 1)[0] for g in ids[keep].tolist()],  # PAR_Y rows are gone
        gene_names=kept["gene_name"].tolist(),
        gene_types=types,
        values=vals,
        path=p,
    )


def collapse_symbols(
    names: list[str], values: np.ndarray, types: list[str] | None = None
) -> tuple[list[str], np.ndarray, list[str] | None, int]:
    """Sum columns that share a symbol.

    Parameters
    ----------
    names
        (G,) symbol of every column (empty names are dropped).
    values
        (n, G) raw values.
    types
        (G,) gene types; for a duplicated symbol the type of its largest column (by total) is kept.

    Returns
    -------
    tuple
        Unique symbols (first-occurrence order), (n, U) summed values, their types, and the
        number of symbols that had more than one column.
    """
    from scipy import sparse

    v = np.asarray(values)  # (n, G)
    names_arr = np.asarray(names, dtype=object)
    ok = np.array([bool(str(x).strip()) and str(x) != "nan" for x in names], dtype=bool)
    uniq, first, inv = np.unique(names_arr[ok], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first-occurrence order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    cols = np.flatnonzero(ok)
    agg = sparse.csr_matrix(
        (np.ones(cols.size), (cols, rank[inv])), shape=(v.shape[1], uniq.size)
    )  # (G, U)
    out = np.asarray(v @ agg, dtype=v.dtype) if v.size else np.zeros((v.shape[0], uniq.size))
    n_dup = int((np.bincount(inv) > 1).sum())
    out_types = None
    if types is not None:
        totals = v[:, cols].sum(axis=0) if v.size else np.zeros(cols.size)  # (G',)
        best: dict[int, int] = {}
        for j, u in enumerate(rank[inv]):
            if u not in best or totals[j] > totals[best[u]]:
                best[int(u)] = j
        tarr = np.asarray(types, dtype=object)[cols]
        out_types = [str(tarr[best[u]]) for u in range(uniq.size)]
    return [str(x) for x in uniq[order]], out, out_types, n_dup


def read_sample_sheet(path: str | os.PathLike[str]) -> dict[str, SampleSheetEntry]:
    """Read a GDC sample sheet (TSV) into ``{file name: entry}``.

    Needs the columns ``File Name``, ``Case ID`` and ``Sample ID`` (``Project ID`` and
    ``Sample Type`` are used when present). A file listed with several different samples keeps the
    first and logs a warning. A file name on two rows is an error when the rows differ (both line
    numbers are named) and a warning when they are identical.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"{p}: sample sheet not found. Download it from the GDC cart ('Sample Sheet')."
        )
    try:
        df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{p}: cannot read the sample sheet ({e}).") from e
    need = ["File Name", "Case ID", "Sample ID"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(
            f"{p}: not a GDC sample sheet (missing columns {missing}; has {list(df.columns)[:8]})."
        )
    out: dict[str, SampleSheetEntry] = {}
    line_of: dict[str, int] = {}
    for line, row in enumerate(df.to_dict("records"), start=2):  # line 1 is the header
        samples = list(dict.fromkeys(s.strip() for s in row["Sample ID"].split(",") if s.strip()))
        if len(samples) > 1:
            logger.warning(
                "%s: %s lists several samples %s; using %s",
                p,
                row["File Name"],
                samples,
                samples[0],
            )
        entry = SampleSheetEntry(
            file_name=row["File Name"].strip(),
            sample_id=samples[0] if samples else "",
            case_id=row["Case ID"].split(",")[0].strip(),
            project=(row.get("Project ID") or "").split(",")[0].strip() or None,
            sample_type=(row.get("Sample Type") or "").split(",")[0].strip() or None,
        )
        first = out.get(entry.file_name)
        if first is not None and first != entry:
            raise InputError(
                f"{p}: file {entry.file_name} is listed on lines {line_of[entry.file_name]} and "
                f"{line} with different samples or cases ({first.sample_id} / {first.case_id} vs "
                f"{entry.sample_id} / {entry.case_id}); remove the wrong row."
            )
        if first is not None:
            logger.warning(
                "%s: file %s is listed twice (lines %d and %d, same sample); using it once",
                p,
                entry.file_name,
                line_of[entry.file_name],
                line,
            )
            continue
        out[entry.file_name] = entry
        line_of[entry.file_name] = line
    return out
