"""The hidden biology of the synthetic cohort: patients, cell-type profiles and bulk expression.

Model (all on log2 scale unless said otherwise)::

    L[p, t, g] = base[g] + dev[t, g] + marker[t, g] + sum_j prog[p, j] * effect[j, t, g]
    w[p, t]    = prop[p, t] * rna[t] / sum_t prop[p, t] * rna[t]       # RNA share of each cell type
    mix[p, g]  = sum_t w[p, t] * 2 ** L[p, t, g]                       # bulk = linear mixture
    tpm[p, g]  = mix[p, g] / sum_g mix[p, g] * total                  # compositional, like TPM
    counts     ~ Poisson(Gamma(1 / phi, lambda * phi)),  lambda = tpm * length / 1e3 * depth * lib[p]

The noise-free ``log2(tpm + 1)`` is saved as the oracle expression.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from rnafm.synth.config import CellType, Programme, SynthConfig

__all__ = [
    "GeneModel",
    "Patients",
    "build_gene_model",
    "sample_patients",
    "expression_from_latents",
]

logger = logging.getLogger(__name__)

N_TYPES = len(CellType)
N_PROGRAMMES = len(Programme)

# Sets whose genes are high in one cell type (MSigDB Hallmark names without the HALLMARK_ prefix).
_MARKER_SETS: dict[CellType, tuple[str, ...]] = {
    CellType.TUMOUR: ("E2F_TARGETS", "MYC_TARGETS_V2", "DNA_REPAIR", "GLYCOLYSIS", "MTORC1_SIGNALING",
                      "UNFOLDED_PROTEIN_RESPONSE", "SPERMATOGENESIS"),
    CellType.LYMPHOCYTE: ("ALLOGRAFT_REJECTION", "IL2_STAT5_SIGNALING", "INFLAMMATORY_RESPONSE",
                          "IL6_JAK_STAT3_SIGNALING", "COMPLEMENT"),
    CellType.STROMA: ("EPITHELIAL_MESENCHYMAL_TRANSITION", "ANGIOGENESIS", "MYOGENESIS", "COAGULATION",
                      "UV_RESPONSE_DN", "HEDGEHOG_SIGNALING"),
    CellType.NECROSIS: ("HYPOXIA", "APOPTOSIS", "TNFA_SIGNALING_VIA_NFKB", "P53_PATHWAY",
                        "REACTIVE_OXYGEN_SPECIES_PATHWAY", "UV_RESPONSE_UP"),
    CellType.NORMAL_EPITHELIUM: ("APICAL_JUNCTION", "APICAL_SURFACE", "XENOBIOTIC_METABOLISM",
                                 "BILE_ACID_METABOLISM", "PEROXISOME", "PANCREAS_BETA_CELLS"),
}  # fmt: skip
_MARKER_GAIN = 3.0

# Programme -> (sets, cell types it acts in, log2 change per unit of the programme).
_PROGRAMME_SETS: dict[Programme, tuple[tuple[str, ...], tuple[CellType, ...], float]] = {
    Programme.PROLIFERATION: (("G2M_CHECKPOINT", "MITOTIC_SPINDLE", "MYC_TARGETS_V1"),
                              (CellType.TUMOUR,), 1.2),
    Programme.INFILTRATION: (("INTERFERON_GAMMA_RESPONSE", "INTERFERON_ALPHA_RESPONSE",
                              "ALLOGRAFT_REJECTION", "IL6_JAK_STAT3_SIGNALING", "COMPLEMENT",
                              "INFLAMMATORY_RESPONSE", "KRAS_SIGNALING_UP"),
                             (CellType.TUMOUR, CellType.LYMPHOCYTE), 3.0),
    Programme.STROMAL_ACTIVATION: (("TGF_BETA_SIGNALING", "WNT_BETA_CATENIN_SIGNALING", "NOTCH_SIGNALING"),
                                   (CellType.STROMA,), 1.5),
    Programme.HORMONE: (("ESTROGEN_RESPONSE_EARLY", "ESTROGEN_RESPONSE_LATE", "ANDROGEN_RESPONSE"),
                        (CellType.TUMOUR,), 1.0),
    Programme.METABOLIC: (("OXIDATIVE_PHOSPHORYLATION", "FATTY_ACID_METABOLISM", "CHOLESTEROL_HOMEOSTASIS"),
                          tuple(CellType), 0.6),
}  # fmt: skip

# Relative RNA per cell of each type (necrotic debris carries little intact RNA).
_RNA_CONTENT = np.array([1.3, 0.6, 0.8, 0.25, 1.0])

# Per subtype: Dirichlet concentration of (tumour, lymphocyte, stroma, necrosis, normal epithelium),
# mean of proliferation, Beta(a, b) of infiltration, mean of stromal activation.
_SUBTYPES = (
    ("immune_hot", (3.0, 3.0, 3.0, 0.5, 0.8), -0.4, (1.5, 0.8), -0.2),
    ("mesenchymal", (2.5, 1.5, 5.0, 0.8, 0.8), -0.2, (0.7, 1.2), 0.8),
    ("proliferative", (4.5, 1.5, 2.0, 1.5, 0.6), 0.8, (0.8, 1.0), -0.4),
)

# Real human gene symbols that are in no Hallmark set (zinc-finger and olfactory-receptor genes);
# filtered against the loaded collection, so a custom collection that holds one simply drops it.
_UNASSIGNED = tuple(
    [f"ZNF{i}" for i in (10, 100, 101, 107, 117, 12, 121, 124, 131, 132, 133, 134, 135, 136, 138, 14,
                         140, 141, 142, 143, 146, 148, 154, 155, 157, 16, 160, 165, 169, 17, 174, 175,
                         177, 18, 180, 181, 182, 184, 185, 189, 19, 195, 197, 2, 20, 200, 202, 205)]
    + ["OR1A1", "OR1A2", "OR2A4", "OR2B6", "OR2C1", "OR2F1", "OR2J3", "OR2W1", "OR3A1", "OR3A2",
       "OR4D1", "OR4K1", "OR5A1", "OR6A2", "OR7A5", "OR7C1", "OR7D2", "OR10A2", "OR10H1", "OR51E2",
       "OR52A1", "OR56A1"]
)  # fmt: skip


def _canon(name: str) -> str:
    up = name.strip().upper()
    return up[len("HALLMARK_") :] if up.startswith("HALLMARK_") else up


@dataclass
class GeneModel:
    """Genes, their set memberships and the per-cell-type expression profiles."""

    genes: list[str]
    in_set: np.ndarray  # bool (G,): the gene belongs to at least one set of the collection
    type_log: np.ndarray  # float64 (T, G) log2 expression of each cell type without programmes
    effect: np.ndarray  # float64 (P, T, G) log2 change per unit of each programme
    length: np.ndarray  # float64 (G,) gene length in bases
    rna_content: np.ndarray  # float64 (T,)
    marker_sets: dict[str, list[str]]  # cell type -> set names used as its markers
    programme_sets: dict[str, list[str]]  # programme -> set names it acts on


@dataclass
class Patients:
    """Per-patient hidden variables."""

    ids: list[str]
    subtype: np.ndarray  # int64 (n,)
    proportions: np.ndarray  # float64 (n, T) cell-type proportions of the RNA sample
    programmes: np.ndarray  # float64 (n, P) programme activities (infiltration in [0, 1])
    library: np.ndarray  # float64 (n,) library-size factor


def subtype_names(n_subtypes: int) -> list[str]:
    """Names of the first ``n_subtypes`` subtypes."""
    return [s[0] for s in _SUBTYPES[:n_subtypes]]


def _resolve_roles(
    sets: dict[str, list[str]], wanted: dict[str, tuple[str, ...]], *, per_role: int = 3
) -> dict[str, list[str]]:
    """Map each role to set names of the collection: the wanted names present, else unused sets."""
    by_canon = {_canon(k): k for k in sorted(sets)}
    used: set[str] = set()
    out: dict[str, list[str]] = {}
    for role, names in wanted.items():
        found = [by_canon[n] for n in names if n in by_canon and by_canon[n] not in used]
        out[role] = found
        used.update(found)
    spare = [k for k in sorted(sets, key=_canon) if k not in used]
    for role in wanted:
        if not out[role] and spare:  # a custom collection: fall back to unused sets
            out[role], spare = spare[:per_role], spare[per_role:]
    return out


def load_sets(name: str) -> dict[str, list[str]]:
    """The gene-set collection ``name`` via :func:`rnafm.pathways.load_gene_sets`."""
    from rnafm.pathways import load_gene_sets

    return {k: list(v) for k, v in load_gene_sets(name).items()}


def build_gene_model(
    sets: dict[str, list[str]], config: SynthConfig, rng: np.random.Generator
) -> GeneModel:
    """Choose the genes and draw the cell-type profiles and programme effects."""
    union = sorted({g for members in sets.values() for g in members})
    if config.n_genes is not None and config.n_genes < len(union):
        keep = np.sort(rng.choice(len(union), size=config.n_genes, replace=False))
        union = [union[i] for i in keep]
    in_union = set(union)
    all_set_genes = {g for members in sets.values() for g in members}
    extra = [g for g in _UNASSIGNED if g not in all_set_genes][: config.n_unassigned_genes]
    genes = union + extra
    n_genes = len(genes)
    index = {g: i for i, g in enumerate(genes)}
    in_set = np.array([g in in_union for g in genes])

    base = np.clip(rng.normal(3.5, 1.6, n_genes), -1.5, 9.0)  # (G,)
    type_log = base[None, :] + rng.normal(0.0, 0.3, (N_TYPES, n_genes))  # (T, G)
    roles = _resolve_roles(sets, {t.value: names for t, names in _MARKER_SETS.items()})
    for t, ct in enumerate(CellType):
        gain = np.zeros(n_genes)
        for set_name in roles[ct.value]:
            idx = [index[g] for g in sets[set_name] if g in index]
            gain[idx] = np.maximum(gain[idx], _MARKER_GAIN * rng.uniform(0.5, 1.5, len(idx)))
        type_log[t] += gain

    effect = np.zeros((N_PROGRAMMES, N_TYPES, n_genes))
    wanted = {p.value: spec[0] for p, spec in _PROGRAMME_SETS.items()}
    prog_roles = _resolve_roles(sets, wanted)
    for j, prog in enumerate(Programme):
        _, types, scale = _PROGRAMME_SETS[prog]
        gain = np.zeros(n_genes)
        for set_name in prog_roles[prog.value]:
            idx = [index[g] for g in sets[set_name] if g in index]
            gain[idx] = np.maximum(gain[idx], scale * rng.uniform(0.4, 1.3, len(idx)))
        for ct in types:
            effect[j, list(CellType).index(ct)] = gain
    length = np.exp(rng.normal(np.log(2500.0), 0.6, n_genes)).round()
    logger.debug("gene model: %d genes (%d in no set)", n_genes, len(extra))
    return GeneModel(
        genes=genes,
        in_set=in_set,
        type_log=type_log,
        effect=effect,
        length=length,
        rna_content=_RNA_CONTENT.copy(),
        marker_sets=roles,
        programme_sets=prog_roles,
    )


def sample_patients(config: SynthConfig, rng: np.random.Generator) -> Patients:
    """Draw subtypes, cell-type proportions and programme activities for every patient."""
    n = config.n_patients
    subtype = rng.integers(0, config.n_subtypes, n)
    props = np.empty((n, N_TYPES))
    progs = np.empty((n, N_PROGRAMMES))
    for i in range(n):
        _, alpha, prolif_mu, infil_ab, strom_mu = _SUBTYPES[subtype[i]]
        props[i] = rng.dirichlet(np.asarray(alpha) * 1.2)
        progs[i, 0] = rng.normal(prolif_mu, 0.8)
        progs[i, 1] = rng.beta(*infil_ab)
        progs[i, 2] = rng.normal(strom_mu, 0.8)
        progs[i, 3] = rng.normal(0.0, 1.0)
        progs[i, 4] = rng.normal(0.0, 1.0)
    props = np.maximum(props, 1e-3)
    props /= props.sum(axis=1, keepdims=True)
    ids = [f"TCGA-SY-{i + 1:04d}" for i in range(n)]
    library = rng.uniform(0.6, 1.4, n)
    return Patients(ids=ids, subtype=subtype, proportions=props, programmes=progs, library=library)


def expression_from_latents(
    genes: GeneModel, patients: Patients, config: SynthConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Bulk expression of every patient: noise-free TPM, counts and TPM from the counts.

    Returns
    -------
    dict with ``tpm_true`` (n, G) noise-free TPM, ``log2_true`` (n, G) its log2(x+1),
    ``counts`` (n, G) int64 read counts and ``tpm`` (n, G) TPM computed from the counts.
    """
    level = genes.type_log[None] + np.einsum(
        "np,ptg->ntg", patients.programmes, genes.effect
    )  # (n, T, G)
    w = patients.proportions * genes.rna_content[None, :]  # (n, T)
    w /= w.sum(axis=1, keepdims=True)
    mix = np.einsum("nt,ntg->ng", w, np.exp2(level))  # (n, G)
    total = float(np.mean(mix.sum(axis=1)))
    tpm_true = mix / mix.sum(axis=1, keepdims=True) * total  # (n, G)
    lam = (
        tpm_true * genes.length[None, :] / 1e3 * config.depth * patients.library[:, None]
    )  # (n, G)
    if config.dispersion > 0:
        shape = 1.0 / config.dispersion
        lam = rng.gamma(shape, lam / shape)
    counts = rng.poisson(lam).astype(np.int64)  # (n, G)
    rate = counts / genes.length[None, :]  # (n, G)
    tpm = rate / np.maximum(rate.sum(axis=1, keepdims=True), 1e-12) * total
    return {
        "tpm_true": tpm_true,
        "log2_true": np.log2(tpm_true + 1.0),
        "counts": counts,
        "tpm": tpm,
    }
