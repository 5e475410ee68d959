"""`rnafm cohort`: match expression profiles to slides and write the reference CSV plus a summary.

Matching (TCGA barcodes): a slide ``TCGA-05-4244-01Z-00-DX1.<uuid>`` belongs to patient
``TCGA-05-4244`` (first 12 characters) and sample type ``01`` (characters 14-15). Slides whose
sample type is not allowed (default: only ``01``, primary tumour; ``11`` normal is excluded unless
asked) are reported and left out. A slide gets the expression of its patient's sample of the same
type; every slide of one patient and type shares it. Several expression profiles of one sample
(vials, aliquots, re-runs) are averaged on the raw scale and reported. Non-TCGA names match when a
sample name equals the slide id.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rnafm.cohort.expression import ExpressionMatrix, load_expression
from rnafm.cohort.gdc import GdcValue, read_sample_sheet
from rnafm.cohort.reference import (
    SLIDE_EXTENSIONS,
    ExpressionScale,
    Reference,
    resolve_scale,
    slide_id_from_name,
    write_reference,
)
from rnafm.cohort.tcga import SAMPLE_TYPES, parse_barcode
from rnafm.errors import InputError

__all__ = ["CohortConfig", "CohortResult", "build_cohort", "list_slides", "summary_path"]

logger = logging.getLogger(__name__)


class CohortConfig(BaseModel):
    """How expression files become a reference table."""

    model_config = ConfigDict(extra="forbid")

    value: GdcValue = Field(GdcValue.TPM, description="Value column of GDC STAR-counts files.")
    sample_types: list[str] = Field(
        default_factory=lambda: ["01"],
        description="TCGA sample types kept (characters 14-15), e.g. 01 primary tumour, 11 normal.",
    )
    gene_types: list[str] | None = Field(
        None,
        description="Gene types kept (e.g. protein_coding); None: protein_coding when types are "
        "known, else all; ['all'] keeps all.",
    )
    min_mean: float = Field(
        1.0, ge=0.0, description="Minimum mean raw value over the matched samples (e.g. TPM)."
    )
    top_variable: int | None = Field(
        None, ge=1, description="Keep only the N genes most variable on log2(x+1) (None: all)."
    )
    expression_scale: ExpressionScale = Field(
        ExpressionScale.AUTO, description="Scale of table/.h5ad inputs (GDC files are raw)."
    )


@dataclass
class CohortResult:
    """The reference built by :func:`build_cohort` and the summary written beside it."""

    reference: Reference
    summary: dict[str, Any] = field(default_factory=dict)


def summary_path(out: str | os.PathLike[str]) -> Path:
    """``reference.csv`` -> ``reference.summary.json``."""
    p = Path(out)
    return p.with_name(p.name.rsplit(".", 1)[0] + ".summary.json")


def list_slides(slides: str | os.PathLike[str] | list[str]) -> list[str]:
    """Slide ids from a folder of slide (or feature) files, a list file, or a list of names.

    A list file holds one name per line, or is a CSV/TSV with a ``wsi_file_name``, ``slide_id``,
    ``slide`` or ``File Name`` column (a GDC sample sheet of slides works).
    """
    import pandas as pd

    if isinstance(slides, list):
        return _unique_slides(slides, "the slide list")
    p = Path(slides)
    if p.is_dir():
        names = [
            f.name
            for f in sorted(p.rglob("*"))
            if f.is_file()
            and f.name.lower().endswith(SLIDE_EXTENSIONS)
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        ]
    elif p.is_file():
        text = p.read_text()
        first = text.splitlines()[0] if text.strip() else ""
        sep = "\t" if "\t" in first else ","
        cols = [c.strip() for c in first.split(sep)]
        col = next(
            (c for c in ("wsi_file_name", "slide_id", "slide", "File Name") if c in cols), None
        )
        if col is not None:
            names = pd.read_csv(p, sep=sep, dtype=str)[col].dropna().tolist()
        else:
            names = [
                ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")
            ]
    else:
        raise InputError(f"{p}: slide folder or list not found.")
    if not names:
        raise InputError(
            f"{p}: no slide names found (slide extensions: {', '.join(SLIDE_EXTENSIONS[:5])}...)."
        )
    return _unique_slides(names, str(p))


def _unique_slides(names: list[str], where: str) -> list[str]:
    """Slide ids of ``names`` in order, each once; repeated ids are named in a warning (e.g.
    ``a.svs`` and ``a.tif``, or one slide in two folders)."""
    ids = [slide_id_from_name(n) for n in names]
    seen: dict[str, str] = {}
    repeats: list[str] = []
    for name, sid in zip(names, ids, strict=True):
        if sid in seen:
            repeats.append(f"{name} (same slide id as {seen[sid]})")
        else:
            seen[sid] = name
    if repeats:
        logger.warning(
            "%s: %d slide name(s) repeat a slide id and are used once: %s%s",
            where,
            len(repeats),
            "; ".join(repeats[:5]),
            " ..." if len(repeats) > 5 else "",
        )
    return list(seen)


def _sample_key(name: str) -> tuple[str, str | None] | str:
    bc = parse_barcode(name)
    if bc is None:
        return slide_id_from_name(name)
    return (bc.patient, bc.sample_type)


def _group_samples(
    mat: ExpressionMatrix, allowed: list[str]
) -> tuple[dict[Any, list[int]], list[dict[str, str]]]:
    """Group profiles by sample key; drop (and report) profiles of excluded sample types."""
    groups: dict[Any, list[int]] = defaultdict(list)
    excluded = []
    for i, name in enumerate(mat.samples):
        key = _sample_key(name)
        if isinstance(key, tuple) and key[1] is not None and key[1] not in allowed:
            kind = SAMPLE_TYPES.get(key[1], "unknown")
            excluded.append(
                {"sample": name, "reason": f"sample type {key[1]} ({kind}) not in {allowed}"}
            )
            continue
        groups[key].append(i)
    return groups, excluded


def _match(
    slides: list[str], groups: dict[Any, list[int]], allowed: list[str]
) -> tuple[list[tuple[str, str, Any]], list[dict[str, str]]]:
    matched, unmatched = [], []
    for sid in slides:
        bc = parse_barcode(sid)
        if bc is None:
            if sid in groups:
                matched.append((sid, sid, sid))
            else:
                unmatched.append(
                    {
                        "slide": sid,
                        "reason": "no TCGA barcode and no expression sample of that name",
                    }
                )
            continue
        if bc.sample_type is not None and bc.sample_type not in allowed:
            kind = SAMPLE_TYPES.get(bc.sample_type, "unknown")
            unmatched.append(
                {
                    "slide": sid,
                    "reason": f"sample type {bc.sample_type} ({kind}) excluded; pass --sample-type "
                    f"{bc.sample_type} to include it",
                }
            )
            continue
        types = [bc.sample_type] if bc.sample_type is not None else allowed
        key = next(((bc.patient, t) for t in types if (bc.patient, t) in groups), None)
        if key is None and (bc.patient, None) in groups:
            key = (bc.patient, None)
        if key is None:
            want = f"{bc.patient}-{types[0]}" if len(types) == 1 else bc.patient
            unmatched.append({"slide": sid, "reason": f"no expression for sample {want}"})
        else:
            matched.append((sid, bc.patient, key))
    return matched, unmatched


def _key_name(key: Any) -> str:
    if isinstance(key, tuple):
        return key[0] if key[1] is None else f"{key[0]}-{key[1]}"
    return str(key)


def _filter_genes(
    raw: np.ndarray, genes: list[str], types: list[str] | None, config: CohortConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Bool mask over genes and a report of each filter step. ``raw``: (n_samples, G)."""
    keep = np.ones(len(genes), dtype=bool)
    report: dict[str, Any] = {"input": len(genes)}
    wanted = config.gene_types
    if wanted is None:
        wanted = ["protein_coding"] if types is not None and any(types) else ["all"]
    if [w.lower() for w in wanted] != ["all"]:
        if types is None or not any(types):
            raise InputError(
                f"--genes {','.join(wanted)}: the expression input has no gene types. Pass --genes all, "
                "or --gene-map with a GDC STAR-counts TSV to supply them."
            )
        keep &= np.isin(np.asarray(types, dtype=object), wanted)
        report["after_gene_type"] = int(keep.sum())
    report["gene_types"] = wanted
    keep &= raw.mean(axis=0) >= config.min_mean
    report["min_mean"] = config.min_mean
    report["after_min_mean"] = int(keep.sum())
    if config.top_variable is not None and keep.sum() > config.top_variable:
        var = np.log2(raw + 1.0).var(axis=0)  # (G,)
        var[~keep] = -np.inf
        top = np.argsort(-var, kind="stable")[: config.top_variable]
        keep = np.zeros_like(keep)
        keep[top] = True
        report["top_variable"] = config.top_variable
    report["final"] = int(keep.sum())
    if not keep.any():
        raise InputError(
            f"no gene passes the filters ({report}). Lower --min-mean or widen --genes."
        )
    return keep, report


def build_cohort(
    expression: str | os.PathLike[str],
    slides: str | os.PathLike[str] | list[str],
    *,
    out: str | os.PathLike[str] | None = None,
    sample_sheet: str | os.PathLike[str] | None = None,
    gene_map: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    config: CohortConfig | None = None,
    **overrides: Any,
) -> CohortResult:
    """Match expression to slides and build a reference (written to ``out`` with raw values).

    Parameters
    ----------
    expression
        A folder of GDC STAR-counts TSVs (searched recursively), one such TSV, a samples x genes
        CSV/TSV, or an .h5ad.
    slides
        A folder of slides (or feature files), a list file, or a list of slide names.
    out
        Reference CSV to write (raw values); the summary goes to ``<out stem>.summary.json``.
    sample_sheet
        GDC sample sheet mapping expression file names to sample and case ids.
    gene_map
        Ensembl id -> symbol (and gene type) map for tables/.h5ad with Ensembl ids: a GDC
        STAR-counts TSV or a table with ``gene_id``, ``gene_name`` [, ``gene_type``].
    layer
        .h5ad layer to read instead of ``X``.
    config, **overrides
        :class:`CohortConfig` and/or its fields as keywords.

    Raises
    ------
    InputError
        Unreadable or wrong-format inputs, a value column that does not exist, no slide matched,
        ambiguous or mixed expression scales, no gene left after filtering.
    """
    from rnafm._io import write_json

    try:
        cfg = CohortConfig.model_validate({**(config or CohortConfig()).model_dump(), **overrides})
    except ValidationError as e:
        raise InputError(f"invalid cohort option(s): {e}") from e
    sheet = read_sample_sheet(sample_sheet) if sample_sheet is not None else None
    mat = load_expression(
        expression,
        value=cfg.value,
        sample_sheet=sheet,
        gene_map=Path(gene_map) if gene_map is not None else None,
        layer=layer,
    )
    slide_ids = list_slides(slides)
    m = _match_slides(mat, slide_ids, cfg)
    raw_groups, scale = _raw_profiles(mat, m, cfg, expression)  # (S, G) raw counts per sample
    keep, gene_report = _filter_genes(raw_groups, mat.genes, mat.gene_types, cfg)
    gene_report["duplicate_symbols_summed"] = mat.n_duplicate_symbols
    ref = _reference(mat, m, raw_groups, keep, out)
    inputs = {
        "expression": str(expression),
        "slides": str(slides) if not isinstance(slides, list) else f"{len(slides)} names",
        "sample_sheet": None if sample_sheet is None else str(sample_sheet),
        "config": cfg.model_dump(mode="json"),
    }
    summary = _summary(inputs, mat, m, ref, scale, gene_report, n_slides=len(slide_ids))
    logger.info(
        "%d of %d slides matched (%d patients), %d genes",
        len(m.matched),
        len(slide_ids),
        summary["n_patients"],
        len(ref.genes),
    )
    if out is not None:
        write_reference(out, ref, raw=True)
        write_json(summary_path(out), summary)
    return CohortResult(reference=ref, summary=summary)


@dataclass
class _Matching:
    """Slides matched to expression samples."""

    matched: list[tuple[str, str, Any]]  # (slide id, patient id, sample key)
    unmatched: list[str]  # slides without expression
    groups: dict[Any, list[int]]  # sample key -> expression profile rows
    excluded: Any  # samples left out by sample type
    used_keys: list[Any]  # sample keys of the matched slides, first-seen order
    averaged: dict[str, list[str]]  # sample -> its profiles' sources, when several


def _match_slides(mat: ExpressionMatrix, slide_ids: list[str], cfg: CohortConfig) -> _Matching:
    """Group profiles by sample and match the slides to them; at least one slide must match."""
    groups, excluded = _group_samples(mat, cfg.sample_types)
    matched, unmatched = _match(slide_ids, groups, cfg.sample_types)
    if not matched:
        raise InputError(
            f"no slide matched any expression sample ({len(slide_ids)} slides, e.g. {slide_ids[:2]}; "
            f"{len(mat.samples)} expression profiles, e.g. {mat.samples[:2]}). TCGA slides match by "
            "patient and sample type; for GDC downloads pass --sample-sheet (file names carry no barcode)."
        )
    used_keys = list(dict.fromkeys(k for _, _, k in matched))
    averaged = {
        _key_name(k): [mat.sources[i] for i in groups[k]] for k in used_keys if len(groups[k]) > 1
    }
    return _Matching(matched, unmatched, groups, excluded, used_keys, averaged)


def _raw_profiles(
    mat: ExpressionMatrix, m: _Matching, cfg: CohortConfig, expression
) -> tuple[np.ndarray, ExpressionScale]:
    """Raw-count profile of every used sample (profiles of one sample averaged) and the scale."""
    raw_groups = np.stack([mat.values[m.groups[k]].mean(axis=0) for k in m.used_keys])  # (S, G)
    for name, srcs in m.averaged.items():
        logger.warning("sample %s has %d expression profiles; averaged", name, len(srcs))
    if mat.is_raw:
        return raw_groups, ExpressionScale.RAW
    scale = resolve_scale(raw_groups, cfg.expression_scale, source=str(expression))
    if scale is ExpressionScale.LOG2:
        raw_groups = np.maximum(np.exp2(raw_groups) - 1.0, 0.0)  # (S, G)
    return raw_groups, scale


def _reference(mat: ExpressionMatrix, m: _Matching, raw_groups, keep, out) -> Reference:
    """The reference of the matched slides: log2(x+1) of the kept genes."""
    genes = [g for g, k in zip(mat.genes, keep, strict=True) if k]
    pos = {k: i for i, k in enumerate(m.used_keys)}
    rows = np.array([pos[k] for _, _, k in m.matched], dtype=np.int64)
    values = np.log2(raw_groups[:, keep][rows] + 1.0).astype(np.float32)  # (n_slides, G)
    projects = None
    if mat.projects is not None:
        proj = {
            k: next((mat.projects[i] for i in m.groups[k] if mat.projects[i]), "")
            for k in m.used_keys
        }
        projects = [proj[k] or "" for _, _, k in m.matched]
    return Reference(
        slide_ids=[s for s, _, _ in m.matched],
        patient_ids=[p for _, p, _ in m.matched],
        projects=projects,
        genes=genes,
        values=values,
        source=Path(out) if out is not None else None,
    )


def _summary(
    inputs: dict[str, Any],
    mat: ExpressionMatrix,
    m: _Matching,
    ref: Reference,
    scale: ExpressionScale,
    gene_report: dict[str, Any],
    *,
    n_slides: int,
) -> dict[str, Any]:
    """Contents of ``<out stem>.summary.json``."""
    from rnafm import __version__

    matched_keys = set(m.used_keys)
    return {
        "rnafm_version": __version__,
        "inputs": inputs,
        "expression_scale": scale.value,
        "n_slides": n_slides,
        "n_slides_matched": len(m.matched),
        "n_patients": len(set(ref.patient_ids)),
        "n_expression_profiles": len(mat.samples),
        "n_samples_used": len(m.used_keys),
        "genes": gene_report,
        "slides_without_expression": m.unmatched,
        "expression_without_slides": sorted(
            _key_name(k) for k in m.groups if k not in matched_keys
        ),
        "excluded_samples": m.excluded,
        "averaged_samples": m.averaged,
    }
