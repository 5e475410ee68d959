"""Feature-level synthetic cohorts: tile features, bulk expression and per-tile programme truth.

No images are drawn: each slide is a set of tile features (N, D) with level-0 coordinates, written
in the TRIDENT layout, so a cohort of hundreds of slides takes seconds. Designs (:class:`Design`):

- ``mixture``: tiles from latent tissue types; expression from type profiles x Hallmark
  programmes that depend nonlinearly on the slide's proportions (:mod:`.feature_mixture`).
- ``tumour_normal``: ``mixture`` plus adjacent normal tissue on the slide that is not in the RNA.
- ``localized``: tile grids with tumour, stroma, adjacent normal outside the RNA sample, lymphoid
  aggregates driving an interferon-gamma halo, necrosis driving a hypoxic rim and a smooth
  proliferation field in tumour; tile features are a fixed random nonlinear encoder of the tile
  type, its programme activities, a per-slide stain shift and noise (:mod:`.feature_localized`).

Layout of ``root``::

    features/<slide_id>.h5   TRIDENT layout (features, coords; encoder "synthetic-<design>")
    truth/<slide_id>.h5      per-tile truth (rnafm.synth.tile_truth), coords equal the features'
    truth/cohort.npz         per-slide arrays: tile_means, slide_activity, type_fractions, ...
    reference.csv            wsi_file_name, patient_id, site, rna_<GENE>... (raw scale)
    cohort.json              design, config, patients, sites, programmes -> gene sets, ...
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rnafm._io import atomic_path, read_json, write_json
from rnafm.synth.tile_truth import TileTruth, write_tile_truth

__all__ = [
    "Design",
    "FeatureCohortConfig",
    "FeatureCohort",
    "SlideDraw",
    "DesignOutput",
    "make_feature_cohort",
    "load_feature_cohort",
]

logger = logging.getLogger(__name__)


class Design(str, Enum):
    """How the synthetic feature cohort ties tiles to expression."""

    MIXTURE = "mixture"
    LOCALIZED = "localized"
    TUMOUR_NORMAL = "tumour_normal"


class FeatureCohortConfig(BaseModel):
    """Settings of :func:`make_feature_cohort` (saved in ``cohort.json``)."""

    model_config = ConfigDict(extra="forbid")

    design: Design = Field(Design.LOCALIZED, description="Which design to draw.")
    n_slides: int = Field(300, ge=4, le=100_000, description="Number of slides.")
    n_genes: int = Field(2000, ge=20, le=60_000, description="Number of genes.")
    dim: int = Field(256, ge=4, le=8192, description="Tile feature dimension D.")
    seed: int = Field(0, ge=0, description="Seed; the same seed gives the same files.")
    patch_size: int = Field(256, ge=16, description="Tile side in level-0 pixels (coords step).")
    noise: float = Field(0.35, ge=0.0, description="Gene-level log2 expression noise (sd).")
    # mixture / tumour_normal
    n_types: int = Field(6, ge=2, le=64, description="mixture: number of latent tissue types.")
    tiles: tuple[int, int] = Field((100, 600), description="mixture: tiles per slide [lo, hi).")
    max_adjacent_fraction: float = Field(
        0.6, ge=0.0, lt=1.0, description="Largest share of a slide's tissue outside the RNA."
    )
    # localized
    grid_rows: tuple[int, int] = Field((30, 60), description="localized: grid rows [lo, hi].")
    grid_cols: tuple[int, int] = Field((40, 80), description="localized: grid columns [lo, hi].")
    second_slide_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="localized: share of patients with two slides."
    )
    n_sites: int = Field(2, ge=1, le=26, description="localized: number of sites (stain batches).")
    site_shift: float = Field(1.5, ge=0.0, description="localized: sd of a site's stain offset.")
    stain_sd: float = Field(1.2, ge=0.0, description="localized: sd of a slide's stain shift.")
    visibility: float = Field(
        1.0, ge=0.0, description="localized: gain of programme activity in the encoder input."
    )
    tile_noise: float = Field(1.0, ge=0.0, description="localized: sd of tile nuisance inputs.")
    feature_noise: float = Field(0.1, ge=0.0, description="localized: additive feature noise.")
    hidden_width: int = Field(64, ge=4, le=4096, description="localized: encoder hidden width.")
    programme_gene_share: float = Field(
        0.5, ge=0.0, le=1.0, description="localized: share of genes from programme gene sets."
    )
    programme_sd: float = Field(
        0.5, ge=0.0, description="localized: log sd of a patient's programme strengths."
    )
    hidden_sd: float = Field(
        0.5, ge=0.0, description="localized: sd of patient programmes no image shows."
    )
    # heteroscedasticity (both designs)
    state_noise: float = Field(
        0.0,
        ge=0.0,
        description="log2 sd of per-slide, per-gene tissue-state effects no image shows, acting "
        "on each tissue type's own RNA (scaled by a fixed per-type factor): the unpredictable "
        "part of a gene then grows with the share of the types that express it, so error size "
        "depends on the slide's composition. 0: off.",
    )
    read_depth: float | None = Field(
        None,
        gt=0,
        description="Mean sequenced reads per slide: bulk values become Poisson counts at a "
        "per-slide depth (log-normal around this, sd 0.5) rescaled to the slide's total, so "
        "lowly expressed genes are noisier. None: no counting noise.",
    )
    shared_sample_expression: bool = Field(
        False,
        description="Slides of one patient share one expression row (the mean of their "
        "slides' bulk RNA), as in TCGA, where every diagnostic slide of a sample is paired with "
        "the sample's RNA-seq. False: each slide has its own RNA.",
    )

    @field_validator("tiles", "grid_rows", "grid_cols")
    @classmethod
    def _range(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        lo, hi = v
        if lo < 1 or hi < lo or (info.field_name == "tiles" and hi == lo):
            raise ValueError(f"{info.field_name} must be (lo, hi) with 1 <= lo <= hi, got {v}")
        return v


@dataclass
class SlideDraw:
    """One generated slide, before it is written."""

    features: np.ndarray  # float32 (N, D)
    coords: np.ndarray  # int64 (N, 2) level-0 top-left (x, y)
    tile_type: np.ndarray  # int64 (N,)
    activity: np.ndarray  # float32 (N, P) per-tile programme activity >= 0
    sampled: np.ndarray  # bool (N,) inside the RNA-sampled region
    programme_names: list[str]  # (P,) Hallmark names of the activity columns
    type_names: list[str]  # (T,) names of the tile types


@dataclass
class DesignOutput:
    """What a design returns once every slide has been emitted."""

    genes: list[str]
    patient_index: np.ndarray  # int64 (n,) patient of each slide
    sites: list[str]  # (n,) site of each slide
    raw: np.ndarray  # float64 (n, G) raw-scale expression
    programme_names: list[str]  # (P,) Hallmark names of the per-tile programmes
    programme_sets: dict[str, list[str]]  # programme -> gene sets it acts on
    hidden_sets: list[str]  # gene sets driven by patient latents no image shows
    type_names: list[str]
    slide_activity: np.ndarray  # float64 (n, P) mean activity over sampled tiles
    type_fractions: np.ndarray  # float64 (n, T) tile-type shares of the sampled region
    adjacent_fraction: np.ndarray  # float64 (n,) share of tissue outside the RNA sample
    extra: dict[str, Any] = field(default_factory=dict)  # design-specific per-slide arrays


@dataclass
class FeatureCohort:
    """A generated feature-level cohort (see the module docstring for the files)."""

    root: Path
    config: FeatureCohortConfig
    slide_ids: list[str]
    patient_ids: list[str]  # (n,) patient of each slide
    sites: list[str]  # (n,) site of each slide
    genes: list[str]
    log2: np.ndarray  # float32 (n, G) log2(raw + 1) of the written reference
    tile_means: np.ndarray  # float32 (n, D) mean tile feature of each slide
    slide_activity: np.ndarray  # float32 (n, P) mean programme activity over sampled tiles
    type_fractions: np.ndarray  # float32 (n, T)
    programme_names: list[str]
    type_names: list[str]

    @property
    def design(self) -> Design:
        """The design of the cohort."""
        return self.config.design

    @property
    def reference(self) -> Path:
        """The reference CSV (raw values)."""
        return self.root / "reference.csv"

    @property
    def features_dir(self) -> Path:
        """Folder of the feature h5 files."""
        return self.root / "features"

    def feature_path(self, slide_id: str) -> Path:
        """Feature file of ``slide_id``."""
        return self.root / "features" / f"{slide_id}.h5"

    def truth_path(self, slide_id: str) -> Path:
        """Per-tile truth file of ``slide_id`` (read with ``read_tile_truth``)."""
        return self.root / "truth" / f"{slide_id}.h5"

    def oracle_features(self) -> np.ndarray:
        """(n, T + P) per-slide truth a ceiling model may use: type shares and mean activities."""
        return np.hstack([self.type_fractions, self.slide_activity]).astype(np.float32)


def _write_reference(path: Path, slide_ids, patients, sites, genes, raw: np.ndarray) -> None:
    header = ["wsi_file_name", "patient_id", "site"] + [f"rna_{g}" for g in genes]
    fmt = ",".join(["%.6g"] * raw.shape[1])
    lines = [",".join(header)]
    for i, sid in enumerate(slide_ids):
        lines.append(f"{sid}.svs,{patients[i]},{sites[i]}," + fmt % tuple(raw[i]))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _run_design(cfg: FeatureCohortConfig, emit) -> DesignOutput:
    from threadpoolctl import threadpool_limits

    # the matrices are small: one BLAS thread is ~10x faster than several fighting for cores
    with threadpool_limits(1):
        return _run_design_unlimited(cfg, emit)


def _run_design_unlimited(cfg: FeatureCohortConfig, emit) -> DesignOutput:
    if cfg.design is Design.LOCALIZED:
        from rnafm.synth.feature_localized import run_localized

        return run_localized(cfg, emit)
    from rnafm.synth.feature_mixture import run_mixture

    return run_mixture(cfg, emit, adjacent=cfg.design is Design.TUMOUR_NORMAL)


def make_feature_cohort(
    root: str | os.PathLike[str],
    *,
    design: Design | str | None = None,
    n_slides: int | None = None,
    n_genes: int | None = None,
    dim: int | None = None,
    seed: int | None = None,
    config: FeatureCohortConfig | None = None,
    **overrides: Any,
) -> FeatureCohort:
    """Generate a feature-level synthetic cohort in ``root`` (deterministic from ``seed``).

    Parameters
    ----------
    root
        Output folder (created). Files of an earlier synthetic cohort there are replaced, and its
        ``SYN-nnnn`` slides beyond ``n_slides`` removed.
    design, n_slides, n_genes, dim, seed
        The main settings (None: from ``config``, else the :class:`FeatureCohortConfig`
        default: localized, 300 slides, 2000 genes, D = 256, seed 0); ``overrides`` set any
        other field.
    config
        Base configuration; the keyword arguments given replace its fields.

    Returns
    -------
    FeatureCohort
        Identifiers, log2 expression, per-slide tile means and per-slide truth.
    """
    main = {"design": design, "n_slides": n_slides, "n_genes": n_genes, "dim": dim, "seed": seed}
    base = (config.model_dump() if config else {}) | overrides
    base.update({k: v for k, v in main.items() if v is not None})
    cfg = FeatureCohortConfig(**base)
    root = Path(root)
    (root / "features").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(parents=True, exist_ok=True)
    slide_ids = [f"SYN-{i:04d}" for i in range(cfg.n_slides)]
    _remove_stale(root, set(slide_ids))
    draws: dict[int, tuple[np.ndarray, int]] = {}
    attrs = {"encoder": f"synthetic-{cfg.design.value}", "patch_size": cfg.patch_size,
             "patch_size_level0": cfg.patch_size, "mpp": 0.5, "design": cfg.design.value}  # fmt: skip

    def emit(i: int, d: SlideDraw) -> None:
        _write_slide(root, slide_ids[i], d, attrs)
        draws[i] = (d.features.mean(0, dtype=np.float64), len(d.features))

    out = _run_design(cfg, emit)
    if cfg.read_depth is not None:
        out.raw = _count_noise(out.raw, cfg.read_depth, cfg.seed)
    if cfg.shared_sample_expression:
        out.raw = _share_by_patient(out.raw, out.patient_index)
    patients = [f"P{int(p):04d}" for p in out.patient_index]
    _write_reference(root / "reference.csv", slide_ids, patients, out.sites, out.genes, out.raw)
    tile_means = np.stack([draws[i][0] for i in range(cfg.n_slides)]).astype(np.float32)
    cohort = FeatureCohort(
        root=root,
        config=cfg,
        slide_ids=slide_ids,
        patient_ids=patients,
        sites=list(out.sites),
        genes=list(out.genes),
        log2=np.log2(out.raw + 1.0).astype(np.float32),
        tile_means=tile_means,
        slide_activity=out.slide_activity.astype(np.float32),
        type_fractions=out.type_fractions.astype(np.float32),
        programme_names=list(out.programme_names),
        type_names=list(out.type_names),
    )
    _write_meta(cohort, out, [draws[i][1] for i in range(cfg.n_slides)])
    logger.info("synthetic %s cohort: %d slides, %d genes in %s",
                cfg.design.value, cfg.n_slides, len(out.genes), root)  # fmt: skip
    return cohort


def _share_by_patient(raw: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Every slide's row (n, G) replaced by the mean of its patient's rows."""
    _, inv = np.unique(patient, return_inverse=True)
    sums = np.zeros((inv.max() + 1, raw.shape[1]))
    np.add.at(sums, inv, raw)
    return sums[inv] / np.bincount(inv)[inv, None]


def _count_noise(raw: np.ndarray, depth: float, seed: int) -> np.ndarray:
    """Poisson counting noise: (n, G) raw -> counts at a per-slide depth, on raw's scale."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    total = raw.sum(axis=1, keepdims=True)  # (n, 1)
    reads = depth * np.exp(rng.normal(0.0, 0.5, (len(raw), 1)))  # (n, 1)
    counts = rng.poisson(raw / total * reads)  # (n, G)
    return counts / reads * total  # (n, G)


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete ``SYN-nnnn.h5`` files of an earlier, larger cohort in ``root``."""
    for sub in ("features", "truth"):
        for p in (root / sub).glob("SYN-[0-9][0-9][0-9][0-9].h5"):
            if p.stem not in keep:
                p.unlink()


def _write_slide(root: Path, sid: str, d: SlideDraw, attrs: dict) -> None:
    from rnafm.features.io import write_features

    write_features(root / "features" / f"{sid}.h5", d.features, d.coords, attrs)
    truth = TileTruth(
        coords=d.coords,
        activity=d.activity,
        names=list(d.programme_names),
        tile_type=d.tile_type,
        type_names=list(d.type_names),
        sampled=d.sampled,
    )
    write_tile_truth(root / "truth" / f"{sid}.h5", truth, {"slide_id": sid, **attrs})


def _write_meta(cohort: FeatureCohort, out: DesignOutput, n_tiles: list[int]) -> None:
    from rnafm import __version__

    root = cohort.root
    arrays = {
        "slide_ids": np.asarray(cohort.slide_ids),
        "tile_means": cohort.tile_means,
        "slide_activity": cohort.slide_activity,
        "type_fractions": cohort.type_fractions,
        "adjacent_fraction": out.adjacent_fraction,
        "n_tiles": np.asarray(n_tiles, dtype=np.int64),
        **{k: np.asarray(v) for k, v in out.extra.items() if not k.endswith("_names")},
    }
    with atomic_path(root / "truth" / "cohort.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    by_patient: dict[str, list[str]] = {}
    for sid, pid in zip(cohort.slide_ids, cohort.patient_ids, strict=True):
        by_patient.setdefault(pid, []).append(sid)
    meta = {
        "rnafm_version": __version__,
        "design": cohort.design.value,
        "seed": cohort.config.seed,
        "config": cohort.config.model_dump(mode="json"),
        "slides": [
            {"slide_id": s, "patient_id": p, "site": site, "n_tiles": n}
            for s, p, site, n in zip(
                cohort.slide_ids, cohort.patient_ids, cohort.sites, n_tiles, strict=True
            )
        ],  # fmt: skip
        "patients": sorted(by_patient),
        "sites": sorted(set(cohort.sites)),
        "two_slide_patients": {p: s for p, s in by_patient.items() if len(s) > 1},
        "programmes": out.programme_sets,
        "programme_names": out.programme_names,
        "hidden_sets": out.hidden_sets,
        "type_names": out.type_names,
        **{k: v for k, v in out.extra.items() if k.endswith("_names")},
    }
    write_json(root / "cohort.json", meta)


def load_feature_cohort(root: str | os.PathLike[str]) -> FeatureCohort:
    """Re-open a cohort written by :func:`make_feature_cohort`.

    Raises
    ------
    InputError
        ``root`` holds no ``cohort.json`` / ``truth/cohort.npz``.
    """
    from rnafm.cohort.reference import load_reference
    from rnafm.errors import InputError

    root = Path(root)
    meta_path, npz = root / "cohort.json", root / "truth" / "cohort.npz"
    if not meta_path.is_file() or not npz.is_file():
        raise InputError(
            f"{root}: not a synthetic feature cohort (no cohort.json or truth/cohort.npz); "
            "generate one with rnafm.synth.features.make_feature_cohort."
        )
    meta = read_json(meta_path)
    ref = load_reference(root / "reference.csv")
    with np.load(npz, allow_pickle=False) as z:
        arrs = {k: z[k] for k in z.files}
    return FeatureCohort(
        root=root,
        config=FeatureCohortConfig(**meta["config"]),
        slide_ids=[str(s) for s in arrs["slide_ids"]],
        patient_ids=[s["patient_id"] for s in meta["slides"]],
        sites=[s["site"] for s in meta["slides"]],
        genes=list(ref.genes),
        log2=ref.values,
        tile_means=arrs["tile_means"],
        slide_activity=arrs["slide_activity"],
        type_fractions=arrs["type_fractions"],
        programme_names=list(meta["programme_names"]),
        type_names=list(meta["type_names"]),
    )
