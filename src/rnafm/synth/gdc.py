"""GDC-style "STAR - Counts" files (augmented gene counts) and a GDC sample sheet.

Each patient gets ``<out>/<file uuid>/<file uuid>.rna_seq.augmented_star_gene_counts.tsv``, as the
GDC client lays out downloads: a ``# gene-model: GENCODE v36`` comment line, the header
``gene_id gene_name gene_type unstranded stranded_first stranded_second tpm_unstranded
fpkm_unstranded fpkm_uq_unstranded``, four ``N_*`` summary rows, then one row per versioned
Ensembl-like gene id (plus ``_PAR_Y`` rows of zeros for pseudo-autosomal genes, and a few
lncRNAs in no gene set).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np

from rnafm._io import atomic_path

__all__ = ["GDC_COLUMNS", "write_gdc_files", "gene_ids"]

GDC_COLUMNS = (
    "gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
    "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded",
)  # fmt: skip
_SHEET_COLUMNS = (
    "File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID", "Sample ID",
    "Sample Type",
)  # fmt: skip
_LNCRNA = ("MALAT1", "NEAT1", "XIST", "H19", "MEG3", "PVT1")
_PAR_GENES = ("CD99", "CSF2RA", "IL3RA", "IL9R", "SLC25A6", "P2RY8", "VAMP7", "SPRY3", "CRLF2")


def gene_ids(symbols: list[str]) -> list[str]:
    """Stable versioned Ensembl-like ids (``ENSG00000xxxxxx.v``) for gene symbols."""
    used: set[int] = set()
    out = []
    for sym in symbols:
        h = int(hashlib.md5(sym.encode()).hexdigest()[:8], 16)  # noqa: S324 - not security
        num = 100_000 + h % 900_000
        while num in used:
            num += 1
        used.add(num)
        out.append(f"ENSG00000{num:06d}.{1 + h % 19}")
    return out


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def write_gdc_files(
    out: Path,
    *,
    genes: list[str],
    counts: np.ndarray,
    length: np.ndarray,
    tpm: np.ndarray,
    patient_ids: list[str],
    project: str,
    rng: np.random.Generator,
) -> tuple[list[Path], Path]:
    """Write one STAR-counts TSV per patient and a sample sheet; returns (files, sample sheet).

    ``counts`` (n, G) int64 and ``tpm`` (n, G) are the values of ``genes``; lncRNA decoys get
    independent small counts.
    """
    out = Path(out)
    ids = gene_ids(list(genes) + [g for g in _LNCRNA if g not in genes])
    extra = [g for g in _LNCRNA if g not in genes]
    par = [i for i, g in enumerate(genes) if g in _PAR_GENES]
    files: list[Path] = []
    sheet_rows = ["\t".join(_SHEET_COLUMNS)]
    for p, patient in enumerate(patient_ids):
        file_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        name = f"{file_id}.rna_seq.augmented_star_gene_counts.tsv"
        path = out / "expression" / file_id / name
        extra_counts = rng.poisson(200.0, len(extra))
        extra_len = np.full(len(extra), 5000.0)
        all_counts = np.concatenate([counts[p], extra_counts]).astype(np.int64)
        all_len = np.concatenate([length, extra_len])
        total = max(int(all_counts.sum()), 1)
        pc = counts[p]
        uq = max(float(np.percentile(pc[pc > 0], 75)) if (pc > 0).any() else 1.0, 1.0)
        fpkm = all_counts * 1e9 / (all_len * total)
        fpkm_uq = all_counts * 1e9 / (all_len * uq)
        extra_tpm = extra_counts / extra_len * (tpm[p].sum() / max((pc / length).sum(), 1e-12))
        all_tpm = np.concatenate([tpm[p], extra_tpm])
        second = rng.binomial(all_counts, 0.97)
        first = all_counts - second + rng.binomial(all_counts, 0.01)
        n_unmapped, n_multi = int(total * 0.05), int(total * 0.08)
        lines = [
            "# gene-model: GENCODE v36",
            "\t".join(GDC_COLUMNS),
            f"N_unmapped\t\t\t{n_unmapped}\t{n_unmapped}\t{n_unmapped}\t\t\t",
            f"N_multimapping\t\t\t{n_multi}\t{n_multi}\t{n_multi}\t\t\t",
            f"N_noFeature\t\t\t{int(total * 0.04)}\t{int(total * 0.6)}\t{int(total * 0.05)}\t\t\t",
            f"N_ambiguous\t\t\t{int(total * 0.03)}\t{int(total * 0.01)}\t{int(total * 0.012)}\t\t\t",
        ]
        symbols = list(genes) + extra
        for g, sym in enumerate(symbols):
            gtype = "lncRNA" if g >= len(genes) else "protein_coding"
            lines.append(
                f"{ids[g]}\t{sym}\t{gtype}\t{all_counts[g]}\t{first[g]}\t{second[g]}\t"
                f"{_fmt(all_tpm[g])}\t{_fmt(fpkm[g])}\t{_fmt(fpkm_uq[g])}"
            )
            if g in par:
                lines.append(
                    f"{ids[g]}_PAR_Y\t{sym}\tprotein_coding\t0\t0\t0\t0.0000\t0.0000\t0.0000"
                )
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        files.append(path)
        sheet_rows.append(
            "\t".join(
                [
                    file_id,
                    name,
                    "Transcriptome Profiling",
                    "Gene Expression Quantification",
                    project,
                    patient,
                    f"{patient}-01A",
                    "Primary Tumor",
                ]
            )  # fmt: skip
        )
    sheet = out / "gdc_sample_sheet.tsv"
    with atomic_path(sheet) as tmp:
        tmp.write_text("\n".join(sheet_rows) + "\n")
    return files, sheet
