"""Generate a synthetic cohort on disk: slides, reference CSV, GDC files and the true latents.

Layout of ``out``::

    slides/<slide_id>.tiff        pyramidal JPEG TIFFs (OpenSlide generic-tiff, with mpp)
    reference.csv                 wsi_file_name, patient_id, project, rna_<SYMBOL>... (raw TPM)
    latent.npz, latent.json       the hidden truth (see SynthCohort.load_latents)
    synth_config.json             the SynthConfig used, with the rnafm version
    gdc/expression/<uuid>/*.tsv   with --gdc: STAR-counts files, plus gdc/gdc_sample_sheet.tsv
"""

from __future__ import annotations

import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import atomic_path, read_json, write_json
from rnafm.synth.biology import (
    GeneModel,
    Patients,
    build_gene_model,
    expression_from_latents,
    load_sets,
    sample_patients,
    subtype_names,
)
from rnafm.synth.config import ADJACENT_LABELS, CellType, Label, Programme, SynthConfig
from rnafm.synth.layout import cell_px, layout_slide
from rnafm.synth.render import make_texture_bank, render_slide
from rnafm.synth.tiff import write_pyramid_tiff

__all__ = ["SynthCohort", "make_cohort", "load_cohort", "PROJECT"]

logger = logging.getLogger(__name__)

PROJECT = "TCGA-SYN"
_SLIDE_CONCENTRATION = 80.0  # Dirichlet concentration of a slide's composition around the patient's


@dataclass
class SynthCohort:
    """Paths and identifiers of a generated synthetic cohort."""

    root: Path
    slides: list[Path]
    slide_ids: list[str]
    slide_patients: list[str]  # patient id of each slide
    patient_ids: list[str]
    genes: list[str]
    reference: Path
    latent: Path
    config: SynthConfig
    gdc_dir: Path | None = None
    sample_sheet: Path | None = None
    gdc_files: list[Path] = field(default_factory=list)

    def load_latents(self) -> dict[str, Any]:
        """The hidden truth as arrays (see ``latent.json`` for the names of columns).

        Keys: ``proportions`` (n_patients, T), ``programmes`` (n_patients, P), ``subtype``
        (n_patients,), ``log2_true`` (n_patients, G) noise-free log2(TPM + 1), ``tpm`` (n_patients,
        G) the observed TPM, ``slide_patient`` (S,) patient index of each slide,
        ``slide_fractions`` (S, n_labels) tissue area shares per :class:`Label`,
        ``slide_sampled_fractions`` (S, n_labels) shares within the sampled region,
        ``adjacent_fraction`` (S,), ``type_log`` (T, G), ``effect`` (P, T, G), ``in_set`` (G,),
        and ``labels`` a dict slide_id -> uint8 label grid (one cell = ``cell_px`` level-0 pixels).
        """
        with np.load(self.latent, allow_pickle=False) as z:
            out: dict[str, Any] = {k: z[k] for k in z.files if not k.startswith("labels__")}
            out["labels"] = {
                k[len("labels__") :]: z[k] for k in z.files if k.startswith("labels__")
            }
        out.update(read_json(self.latent.with_suffix(".json")))
        return out


def _slide_name(patient: str, j: int, rng: np.random.Generator) -> str:
    return f"{patient}-01Z-00-DX{j + 1}.{uuid.UUID(bytes=rng.bytes(16), version=4)}"


def _render_one(
    path: Path, *, config: SynthConfig, comp: np.ndarray, progs: np.ndarray, bank, seed
) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed)
    adjacent = rng.uniform(0.0, config.max_adjacent_fraction)
    lay = layout_slide(
        config.slide_width,
        config.slide_height,
        mpp=config.mpp,
        composition=comp,
        infiltration=float(progs[list(Programme).index(Programme.INFILTRATION)]),
        adjacent_fraction=adjacent,
        rng=rng,
    )
    img = render_slide(
        lay.labels,
        width=config.slide_width,
        height=config.slide_height,
        programmes=progs,
        bank=bank,
        rng=rng,
    )
    write_pyramid_tiff(
        path, img, mpp=config.mpp, tile=config.tile_size, quality=config.jpeg_quality
    )
    return lay.labels, lay.adjacent_fraction


def _write_reference(path: Path, slide_ids, slide_patients, genes, tpm, patient_index) -> None:
    header = ["wsi_file_name", "patient_id", "project"] + [f"rna_{g}" for g in genes]
    lines = [",".join(header)]
    for sid, pid, p in zip(slide_ids, slide_patients, patient_index, strict=True):
        vals = ",".join(f"{v:.4f}" for v in tpm[p])
        lines.append(f"{sid}.tiff,{pid},{PROJECT},{vals}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _plan_slides(
    patients: Patients,
    cfg: SynthConfig,
    name_rng: np.random.Generator,
    comp_rng: np.random.Generator,
) -> tuple[list[str], list[int], np.ndarray]:
    """Slide names, the patient index of each slide and each slide's composition (S, T)."""
    n_slides_of = 1 + (name_rng.random(cfg.n_patients) < cfg.second_slide_fraction)
    slide_ids, owner = [], []
    for p, pid in enumerate(patients.ids):
        for j in range(int(n_slides_of[p])):
            slide_ids.append(_slide_name(pid, j, name_rng))
            owner.append(p)
    alpha = patients.proportions[owner] * _SLIDE_CONCENTRATION + 0.05  # (S, T)
    return slide_ids, owner, np.stack([comp_rng.dirichlet(a) for a in alpha])


def _label_fractions(labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Tissue area share of each label (S, n_labels), overall and within the sampled region."""
    counts = np.stack([np.bincount(lab.ravel(), minlength=len(Label)) for lab in labels])
    frac = counts.astype(np.float64)
    frac[:, Label.BACKGROUND] = 0
    frac /= np.maximum(frac.sum(axis=1, keepdims=True), 1e-12)
    sampled = frac.copy()
    sampled[:, list(ADJACENT_LABELS)] = 0
    sampled /= np.maximum(sampled.sum(axis=1, keepdims=True), 1e-12)
    return frac, sampled


def _save_latents(
    root: Path,
    cfg: SynthConfig,
    genes: GeneModel,
    patients: Patients,
    expr: dict[str, np.ndarray],
    slides: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
) -> Path:
    """Write latent.npz (arrays), latent.json (names) and synth_config.json; return the npz path."""
    from rnafm import __version__

    frac, sampled = _label_fractions(list(labels.values()))
    arrays: dict[str, np.ndarray] = {
        "patient_ids": np.asarray(patients.ids),
        "genes": np.asarray(genes.genes),
        "subtype": patients.subtype,
        "proportions": patients.proportions,
        "programmes": patients.programmes,
        "library": patients.library,
        **{k: expr[k] for k in ("log2_true", "tpm_true", "tpm", "counts")},
        **slides,
        "slide_fractions": frac,
        "slide_sampled_fractions": sampled,
        "type_log": genes.type_log,
        "effect": genes.effect,
        "in_set": genes.in_set,
        "length": genes.length,
        **{f"labels__{sid}": lab for sid, lab in labels.items()},
    }
    latent = root / "latent.npz"
    with atomic_path(latent) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    names = {
        "cell_type_names": [c.value for c in CellType],
        "programme_names": [p.value for p in Programme],
        "visible_programmes": [p.value for p in Programme if p.visible],
        "label_names": [lab.name.lower() for lab in Label],
        "subtype_names": subtype_names(cfg.n_subtypes),
        "cell_px": cell_px(cfg.mpp),
        "mpp": cfg.mpp,
        "marker_sets": genes.marker_sets,
        "programme_sets": genes.programme_sets,
    }
    write_json(latent.with_suffix(".json"), names)
    write_json(root / "synth_config.json", {"rnafm_version": __version__, **cfg.model_dump()})
    return latent


def make_cohort(
    out: str | os.PathLike[str],
    *,
    n_patients: int = 60,
    seed: int = 0,
    config: SynthConfig | None = None,
    **overrides: Any,
) -> SynthCohort:
    """Generate a synthetic cohort in ``out`` (deterministic from ``seed``).

    Parameters
    ----------
    out
        Output folder (created).
    n_patients, seed
        Number of patients and the seed.
    config
        Base configuration; ``n_patients``, ``seed`` and ``overrides`` (any :class:`SynthConfig`
        field, e.g. ``slide_width=2000, gdc=True``) replace its fields.

    Returns
    -------
    SynthCohort
        Paths and identifiers; ``load_latents()`` gives the hidden truth.
    """
    base = (config or SynthConfig()).model_dump()
    base.update(n_patients=n_patients, seed=seed, **overrides)
    cfg = SynthConfig(**base)
    root = Path(out)
    (root / "slides").mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence(cfg.seed)
    s_genes, s_patients, s_expr, s_slides, s_names, s_gdc, s_bank = ss.spawn(7)

    genes = build_gene_model(load_sets(cfg.gene_sets), cfg, np.random.default_rng(s_genes))
    patients = sample_patients(cfg, np.random.default_rng(s_patients))
    expr = expression_from_latents(genes, patients, cfg, np.random.default_rng(s_expr))

    slide_ids, slide_patient_idx, slide_comp = _plan_slides(
        patients, cfg, np.random.default_rng(s_names), np.random.default_rng(s_slides)
    )
    slide_seeds = s_slides.spawn(len(slide_ids))
    bank = make_texture_bank(np.random.default_rng(s_bank), mpp=cfg.mpp)
    paths = [root / "slides" / f"{sid}.tiff" for sid in slide_ids]

    def job(i: int) -> tuple[np.ndarray, float]:
        progs = patients.programmes[slide_patient_idx[i]]
        return _render_one(
            paths[i], config=cfg, comp=slide_comp[i], progs=progs, bank=bank, seed=slide_seeds[i]
        )

    results = _run_jobs(job, len(slide_ids), progress=cfg.progress)
    slide_patients = [patients.ids[p] for p in slide_patient_idx]
    ref_path = root / "reference.csv"
    _write_reference(
        ref_path, slide_ids, slide_patients, genes.genes, expr["tpm"], slide_patient_idx
    )
    slides = {
        "slide_ids": np.asarray(slide_ids),
        "slide_patient": np.asarray(slide_patient_idx, dtype=np.int64),
        "slide_composition": slide_comp,
        "adjacent_fraction": np.asarray([r[1] for r in results]),
    }
    labels = dict(zip(slide_ids, (r[0] for r in results), strict=True))
    latent = _save_latents(root, cfg, genes, patients, expr, slides, labels)

    cohort = SynthCohort(
        root=root,
        slides=paths,
        slide_ids=slide_ids,
        slide_patients=slide_patients,
        patient_ids=list(patients.ids),
        genes=list(genes.genes),
        reference=ref_path,
        latent=latent,
        config=cfg,
    )
    if cfg.gdc:
        from rnafm.synth.gdc import write_gdc_files

        files, sheet = write_gdc_files(
            root / "gdc",
            genes=genes.genes,
            counts=expr["counts"],
            length=genes.length,
            tpm=expr["tpm"],
            patient_ids=patients.ids,
            project=PROJECT,
            rng=np.random.default_rng(s_gdc),
        )
        cohort.gdc_dir, cohort.sample_sheet, cohort.gdc_files = (
            root / "gdc" / "expression",
            sheet,
            files,
        )
    logger.info("synthetic cohort: %d patients, %d slides, %d genes in %s",
                len(patients.ids), len(slide_ids), len(genes.genes), root)  # fmt: skip
    return cohort


def _run_jobs(job, n: int, *, progress: bool) -> list:
    """Run ``job(i)`` for i < n on two threads (numpy and JPEG release the GIL), in order."""
    from rich.progress import Progress

    workers = max(1, min(2, os.cpu_count() or 1))
    with Progress(disable=not progress, transient=True) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task("drawing slides", total=n)
        results = []
        for r in pool.map(job, range(n)):
            results.append(r)
            bar.advance(task)
    return results


def load_cohort(root: str | os.PathLike[str]) -> SynthCohort:
    """Re-open a cohort written by :func:`make_cohort`."""
    from rnafm.errors import InputError

    root = Path(root)
    cfg_path = root / "synth_config.json"
    if not cfg_path.is_file():
        raise InputError(
            f"{cfg_path} not found: {root} is not a synthetic cohort; run `rnafm synth --out {root}`"
        )
    raw = read_json(cfg_path)
    raw.pop("rnafm_version", None)
    cfg = SynthConfig(**raw)
    with np.load(root / "latent.npz", allow_pickle=False) as z:
        slide_ids = [str(s) for s in z["slide_ids"]]
        patient_ids = [str(s) for s in z["patient_ids"]]
        genes = [str(g) for g in z["genes"]]
        sp = z["slide_patient"]
    gdc = root / "gdc"
    return SynthCohort(
        root=root,
        slides=[root / "slides" / f"{s}.tiff" for s in slide_ids],
        slide_ids=slide_ids,
        slide_patients=[patient_ids[i] for i in sp],
        patient_ids=patient_ids,
        genes=genes,
        reference=root / "reference.csv",
        latent=root / "latent.npz",
        config=cfg,
        gdc_dir=gdc / "expression" if gdc.is_dir() else None,
        sample_sheet=gdc / "gdc_sample_sheet.tsv" if gdc.is_dir() else None,
        gdc_files=sorted((gdc / "expression").glob("*/*.tsv")) if gdc.is_dir() else [],
    )
