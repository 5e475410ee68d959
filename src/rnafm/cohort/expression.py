"""Expression inputs for `rnafm cohort`: GDC STAR-counts files, samples x genes tables, .h5ad.

Every reader returns an :class:`ExpressionMatrix` (one row per input profile, gene symbols as
columns where they can be known, values on the scale of the input).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnafm.cohort.gdc import GdcValue, SampleSheetEntry, collapse_symbols, read_star_counts
from rnafm.errors import InputError

__all__ = [
    "ExpressionMatrix",
    "load_expression",
    "read_gdc_files",
    "read_table",
    "read_h5ad",
    "read_gene_map",
]

logger = logging.getLogger(__name__)

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?(_PAR_Y)?$")
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")


@dataclass
class ExpressionMatrix:
    """Expression profiles as read from the user's files."""

    samples: list[str]  # sample names (TCGA sample barcode when known, else row or file name)
    genes: list[str]  # gene symbols (Ensembl ids without version when no symbol is known)
    values: np.ndarray  # float64 (n, G) on the input's scale
    gene_types: list[str] | None  # (G,) e.g. protein_coding; None when unknown
    sources: list[str]  # (n,) file (and row) each profile came from
    projects: list[str | None] | None = None  # (n,) project (GDC sample sheet) when known
    is_raw: bool | None = None  # True for GDC files (always raw); None: decide later
    n_duplicate_symbols: int = 0  # symbols that had several ids and were summed


def _is_ensembl(names: list[str]) -> bool:
    sample = [str(n) for n in names[:200]]
    return bool(sample) and sum(bool(_ENSEMBL.match(n)) for n in sample) > 0.5 * len(sample)


def _strip(gene_id: str) -> str:
    return str(gene_id).split(".")[0] if _ENSEMBL.match(str(gene_id)) else str(gene_id)


def read_gene_map(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Ensembl id -> symbol and symbol -> gene type from a GDC STAR-counts TSV or a 2-3 column table.

    A table needs columns ``gene_id`` and ``gene_name`` (optionally ``gene_type``).
    """
    import pandas as pd

    p = Path(path)
    try:
        sc = read_star_counts(p, value=GdcValue.COUNTS)
        ids, names, types = sc.gene_ids, sc.gene_names, sc.gene_types
    except InputError:
        try:
            df = pd.read_csv(p, sep=None, engine="python", dtype=str)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise InputError(f"{p}: cannot read the gene map ({e}).") from e
        if not {"gene_id", "gene_name"} <= set(df.columns):
            raise InputError(
                f"{p}: a gene map needs columns gene_id and gene_name (or pass a GDC STAR-counts TSV)."
            ) from None
        ids = [_strip(x) for x in df["gene_id"]]
        names = df["gene_name"].astype(str).tolist()
        types = df["gene_type"].astype(str).tolist() if "gene_type" in df else [""] * len(ids)
    id2sym = dict(zip(ids, names, strict=True))
    sym2type = {n: t for n, t in zip(names, types, strict=True) if t}
    return id2sym, sym2type


def _symbolise(
    genes: list[str],
    values: np.ndarray,
    types: list[str] | None,
    gene_map: Path | None,
    source: str,
) -> tuple[list[str], np.ndarray, list[str] | None, int]:
    """Map Ensembl ids to symbols (when a map is given), then sum duplicated symbols."""
    if _is_ensembl(genes):
        ids = [_strip(g) for g in genes]
        if gene_map is not None:
            id2sym, sym2type = read_gene_map(gene_map)
            unknown = sum(i not in id2sym for i in ids)
            if unknown:
                logger.warning(
                    "%s: %d of %d gene ids not in the gene map; dropped", source, unknown, len(ids)
                )
            genes = [id2sym.get(i, "") for i in ids]
            if types is None and sym2type:
                types = [sym2type.get(g, "") for g in genes]
        else:
            logger.warning(
                "%s: genes are Ensembl ids; keeping them as ids (gene sets use symbols). Pass "
                "--gene-map (e.g. any GDC STAR-counts TSV) to convert them.",
                source,
            )
            genes = ids
    elif gene_map is not None and types is None:
        _, sym2type = read_gene_map(gene_map)
        types = [sym2type.get(g, "") for g in genes]
    return collapse_symbols(genes, values, types)


def read_gdc_files(
    paths: list[Path],
    *,
    value: GdcValue | str = GdcValue.TPM,
    sample_sheet: dict[str, SampleSheetEntry] | None = None,
) -> ExpressionMatrix:
    """Read GDC STAR-counts files into one matrix (files with another gene list are reindexed).

    The sample of each file is taken from the sample sheet (by file name) when given, else from a
    TCGA barcode in the file or folder name, else the file name itself.
    """
    from rich.progress import Progress

    from rnafm.cohort.tcga import parse_barcode

    if not paths:
        raise InputError("no GDC STAR-counts file to read.")
    rows: list[np.ndarray] = []
    samples: list[str] = []
    projects: list[str | None] = []
    ref = None
    with Progress(transient=True) as progress:
        task = progress.add_task("reading expression files", total=len(paths))
        for p in paths:
            sc = read_star_counts(p, value=value)
            if ref is None:
                ref = sc
                vals = sc.values
            elif sc.gene_ids == ref.gene_ids:
                vals = sc.values
            else:  # another annotation: align on the first file's ids (missing -> refuse)
                pos = {g: i for i, g in enumerate(sc.gene_ids)}
                missing = [g for g in ref.gene_ids if g not in pos]
                if len(missing) > 0.01 * len(ref.gene_ids):
                    raise InputError(
                        f"{p}: gene list differs from {ref.path.name} ({len(missing)} ids missing). "
                        "Use files of one GDC data release (same gene model)."
                    )
                vals = np.array([sc.values[pos[g]] if g in pos else 0.0 for g in ref.gene_ids])
            entry = sample_sheet.get(p.name) if sample_sheet else None
            if entry is not None:
                samples.append(entry.sample_id)
                projects.append(entry.project)
            else:
                bc = parse_barcode(p.name) or parse_barcode(p.parent.name)
                samples.append(
                    bc.sample if bc is not None and bc.sample else (bc.patient if bc else p.name)
                )
                projects.append(None)
            rows.append(vals)
            progress.advance(task)
    values = np.stack(rows)  # (n, G)
    genes, values, types, n_dup = collapse_symbols(ref.gene_names, values, ref.gene_types)  # type: ignore[union-attr]
    logger.info(
        "%d GDC files, %d genes (%d duplicated symbols summed)", len(paths), len(genes), n_dup
    )
    return ExpressionMatrix(
        samples=samples,
        genes=genes,
        values=values,
        gene_types=types,
        sources=[str(p) for p in paths],
        projects=projects if any(projects) else None,
        is_raw=True,
        n_duplicate_symbols=n_dup,
    )


def read_table(path: str | os.PathLike[str], *, gene_map: Path | None = None) -> ExpressionMatrix:
    """Read a samples x genes CSV/TSV (first column: sample names; genes: symbols or Ensembl ids).

    A genes x samples table (column names are TCGA barcodes, row names are not) is transposed.
    """
    import pandas as pd

    from rnafm.cohort.tcga import parse_barcode

    p = Path(path)
    sep = "," if ".csv" in p.name.lower() else "\t"
    try:
        df = pd.read_csv(p, sep=sep, index_col=0)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{p}: cannot read the expression table ({e}).") from e
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputError(
            f"{p}: empty table, or wrong separator (expected {'comma' if sep == ',' else 'tab'})."
        )
    if df.index.name == "gene_id" and "gene_name" in df.columns:
        raise InputError(
            f"{p}: this looks like a GDC STAR-counts file; pass the folder of such files (or the "
            "file in a folder) rather than a table."
        )
    cols_bc = np.mean([parse_barcode(str(c)) is not None for c in df.columns[:200]])
    rows_bc = np.mean([parse_barcode(str(r)) is not None for r in df.index[:200]])
    if cols_bc > 0.5 and rows_bc < 0.5:
        logger.info("%s: sample barcodes are columns; reading it as genes x samples", p)
        df = df.T
    df.index = df.index.astype(str)
    try:
        values = df.apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float64)  # (n, G)
    except (ValueError, TypeError) as e:
        raise InputError(
            f"{p}: non-numeric expression values ({e}). Expected samples as rows (first column the "
            "sample name) and one numeric column per gene."
        ) from e
    _check_finite(values, str(p))
    genes, values, types, n_dup = _symbolise(
        [str(c) for c in df.columns], values, None, gene_map, str(p)
    )
    return ExpressionMatrix(
        samples=df.index.tolist(),
        genes=genes,
        values=values,
        gene_types=types,
        sources=[f"{p}:{s}" for s in df.index],
        n_duplicate_symbols=n_dup,
    )


def read_h5ad(
    path: str | os.PathLike[str], *, layer: str | None = None, gene_map: Path | None = None
) -> ExpressionMatrix:
    """Read an .h5ad (obs = samples, var = genes; ``layer`` instead of ``X`` when given).

    Symbols come from ``var_names`` or, when those are Ensembl ids, from a ``var`` column named
    ``gene_name``, ``gene_symbol``, ``symbol`` or ``feature_name``; gene types from ``gene_type``
    or ``gene_biotype``; projects from ``obs['project']`` when present.
    """
    import anndata

    p = Path(path)
    try:
        ad = anndata.read_h5ad(p)
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{p}: cannot read the .h5ad file ({e}).") from e
    if layer is not None and layer not in ad.layers:
        raise InputError(f"{p}: no layer {layer!r} (has {list(ad.layers)}; or use X).")
    x = ad.layers[layer] if layer is not None else ad.X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    values = np.asarray(x, dtype=np.float64)  # (n, G)
    _check_finite(values, str(p))
    genes = [str(g) for g in ad.var_names]
    if _is_ensembl(genes):
        for c in ("gene_name", "gene_symbol", "symbol", "feature_name"):
            if c in ad.var.columns:
                genes = ad.var[c].astype(str).tolist()
                break
    types = None
    for c in ("gene_type", "gene_biotype"):
        if c in ad.var.columns:
            types = ad.var[c].astype(str).tolist()
            break
    genes, values, types, n_dup = _symbolise(genes, values, types, gene_map, str(p))
    projects = ad.obs["project"].astype(str).tolist() if "project" in ad.obs.columns else None
    return ExpressionMatrix(
        samples=[str(s) for s in ad.obs_names],
        genes=genes,
        values=values,
        gene_types=types,
        sources=[f"{p}:{s}" for s in ad.obs_names],
        projects=projects,
        n_duplicate_symbols=n_dup,
    )


def _check_finite(values: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"{source}: {int(bad.sum())} missing or non-finite values. Fill or drop them."
        )
    if (values < 0).any():
        raise InputError(
            f"{source}: negative expression values. Expected raw (TPM, FPKM, counts) or log2(x+1)."
        )


def _gdc_files(folder: Path) -> list[Path]:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name.lower().endswith((".tsv", ".tsv.gz"))
        and not p.name.startswith(".")
        and "sample_sheet" not in p.name.lower()
        and "annotations" not in p.name.lower()
    )
    return files


def load_expression(
    path: str | os.PathLike[str],
    *,
    value: GdcValue | str = GdcValue.TPM,
    sample_sheet: dict[str, SampleSheetEntry] | None = None,
    gene_map: Path | None = None,
    layer: str | None = None,
) -> ExpressionMatrix:
    """Read expression from a folder of GDC STAR-counts TSVs, one such TSV, a table or an .h5ad."""
    p = Path(path)
    if p.is_dir():
        files = _gdc_files(p)
        if not files:
            raise InputError(
                f"{p}: no .tsv files found. Pass the folder of GDC 'STAR - Counts' downloads, a "
                "samples x genes .csv/.tsv, or an .h5ad."
            )
        return read_gdc_files(files, value=value, sample_sheet=sample_sheet)
    if not p.is_file():
        raise InputError(f"{p}: expression file or folder not found.")
    low = p.name.lower()
    if low.endswith(".h5ad"):
        return read_h5ad(p, layer=layer, gene_map=gene_map)
    if low.endswith(_TABLE_SUFFIXES):
        if low.endswith((".tsv", ".tsv.gz")) and _looks_like_star(p):
            return read_gdc_files([p], value=value, sample_sheet=sample_sheet)
        return read_table(p, gene_map=gene_map)
    raise InputError(f"{p}: unknown expression format; expected a folder, .tsv, .csv or .h5ad.")


def _looks_like_star(p: Path) -> bool:
    import gzip

    with gzip.open(p, "rt") if p.name.lower().endswith(".gz") else p.open() as f:
        head = [f.readline() for _ in range(2)]
    return any(line.startswith("gene_id\t") for line in head)
