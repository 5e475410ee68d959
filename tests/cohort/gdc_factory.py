"""Builders of small but byte-faithful GDC downloads (STAR-counts TSVs, sample sheets)."""

from __future__ import annotations

import uuid
from pathlib import Path

HEADER = (
    "gene_id\tgene_name\tgene_type\tunstranded\tstranded_first\tstranded_second\t"
    "tpm_unstranded\tfpkm_unstranded\tfpkm_uq_unstranded"
)
SUMMARY = [
    "N_unmapped\t\t\t3141264\t3141264\t3141264\t\t\t",
    "N_multimapping\t\t\t5327442\t5327442\t5327442\t\t\t",
    "N_noFeature\t\t\t2211733\t24474466\t24627383\t\t\t",
    "N_ambiguous\t\t\t4207153\t1230683\t1245044\t\t\t",
]
# (gene_id, gene_name, gene_type): a duplicated symbol (PINX1 twice), a PAR_Y copy, a lncRNA
GENES = [
    ("ENSG00000000003.15", "TSPAN6", "protein_coding"),
    ("ENSG00000000005.6", "TNMD", "protein_coding"),
    ("ENSG00000002586.20", "CD99", "protein_coding"),
    ("ENSG00000002586.20_PAR_Y", "CD99", "protein_coding"),
    ("ENSG00000254093.9", "PINX1", "protein_coding"),
    ("ENSG00000258724.1", "PINX1", "protein_coding"),
    ("ENSG00000230417.11", "LINC00856", "lncRNA"),
    ("ENSG00000141510.18", "TP53", "protein_coding"),
]


def star_text(tpm: list[float]) -> str:
    """File content with the given TPM per GENES row (PAR_Y rows are zeros, as at the GDC)."""
    lines = ["# gene-model: GENCODE v36", HEADER, *SUMMARY]
    for (gid, name, gtype), t in zip(GENES, tpm, strict=True):
        if gid.endswith("_PAR_Y"):
            t = 0.0
        counts = int(round(t * 37))
        fpkm = t * 0.31
        lines.append(
            f"{gid}\t{name}\t{gtype}\t{counts}\t{counts // 2}\t{counts - counts // 2}\t"
            f"{t:.4f}\t{fpkm:.4f}\t{fpkm * 1.7:.4f}"
        )
    return "\n".join(lines) + "\n"


def write_gdc(root: Path, files: dict[str, list[float]]) -> dict[str, str]:
    """Write one ``<uuid>/<uuid>.rna_seq.augmented_star_gene_counts.tsv`` per sample id.

    ``files`` maps a label ``"<sample id>#<n>"`` to TPMs; returns file name -> sample id.
    """
    out = {}
    for label, tpm in files.items():
        sample = label.split("#")[0]
        fid = str(uuid.uuid5(uuid.NAMESPACE_URL, label))
        name = f"{fid}.rna_seq.augmented_star_gene_counts.tsv"
        (root / fid).mkdir(parents=True)
        (root / fid / name).write_text(star_text(tpm))
        out[name] = sample
    return out


def write_sample_sheet(path: Path, files: dict[str, str], project: str = "TCGA-LUAD") -> None:
    """A GDC sample sheet for the files written by :func:`write_gdc`."""
    lines = [
        "File ID\tFile Name\tData Category\tData Type\tProject ID\tCase ID\tSample ID\tSample Type"
    ]
    kinds = {"01": "Primary Tumor", "11": "Solid Tissue Normal"}
    for name, sample in files.items():
        lines.append(
            f"{name.split('.')[0]}\t{name}\tTranscriptome Profiling\tGene Expression Quantification\t"
            f"{project}\t{sample[:12]}\t{sample}\t{kinds[sample[13:15]]}"
        )
    path.write_text("\n".join(lines) + "\n")
