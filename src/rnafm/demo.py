"""The end-to-end demo (`rnafm demo`): the whole method on a built-in synthetic cohort, offline.

synth -> preprocess (tiling + builtin encoder) -> cohort (reference CSV, or the GDC files through
``rnafm cohort``) -> patient-level cross-validation of RNA-FM and the baselines (out-of-fold
predictions with uncertainty, metrics) -> report.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rnafm._io import write_json

__all__ = ["DemoSize", "DemoConfig", "DemoResult", "demo_config", "run_demo", "summarise"]

logger = logging.getLogger(__name__)


class DemoSize(str, Enum):
    """Preset sizes of the demo."""

    QUICK = "quick"  # the test suite: under 2 minutes on 2 CPU cores
    DEFAULT = "default"  # `make demo`: under 10 minutes on 2 CPU cores


class DemoConfig(BaseModel):
    """Sizes and settings of one demo run."""

    model_config = ConfigDict(extra="forbid")

    n_patients: int = Field(..., ge=10, description="Patients of the synthetic cohort.")
    slide_width: int = Field(..., ge=512, description="Level-0 slide width in pixels.")
    slide_height: int = Field(..., ge=512, description="Level-0 slide height in pixels.")
    n_genes: int | None = Field(..., ge=20, description="Genes (a seeded subset of Hallmark).")
    mpp: float = Field(
        ..., gt=0, description="Microns per pixel the slides are drawn and tiled at."
    )
    patch_size: int = Field(..., ge=32, description="Tile side in pixels at ``mpp``.")
    n_clusters: int = Field(..., ge=2, description="K-means clusters per slide.")
    n_folds: int = Field(5, ge=2, description="Patient-level cross-validation folds.")
    models: list[str] = Field(
        default_factory=lambda: ["rnafm", "ridge", "attention_mil", "mean"],
        description="Models cross-validated (rnafm brings its no-flow ablation, prior_gaussian).",
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the RNA-FM TrainConfig for the demo."
    )
    draws: int = Field(16, ge=2, description="Posterior draws per slide.")
    gdc: bool = Field(
        True, description="Write GDC STAR-counts files and build the cohort from them."
    )
    seed: int = Field(0, ge=0, description="Seed of the cohort, folds and models.")


def demo_config(size: DemoSize | str = DemoSize.DEFAULT, **overrides: Any) -> DemoConfig:
    """The preset ``size`` with ``overrides`` applied."""
    size = DemoSize(size)
    if size is DemoSize.QUICK:
        base: dict[str, Any] = dict(
            n_patients=60, slide_width=1280, slide_height=1024, mpp=1.0, n_genes=300, patch_size=128,
            n_clusters=64, n_folds=3, draws=8, gdc=True,
            train={"optim.epochs": 110, "optim.max_minutes": None, "model.hidden": 64, "model.depth": 2,
                   "sampler.steps": 10, "validation.draws": 4, "calibration.draws": 8},
        )  # fmt: skip
    else:
        base = dict(
            n_patients=100, slide_width=3072, slide_height=2304, mpp=0.5, n_genes=1000, patch_size=256,
            n_clusters=100, n_folds=5, draws=16, gdc=True,
            train={"optim.epochs": 30, "optim.max_minutes": None, "model.hidden": 64, "model.depth": 2,
                   "sampler.steps": 10, "validation.draws": 4},
        )  # fmt: skip
    base.update({k: v for k, v in overrides.items() if v is not None})
    return DemoConfig(**base)


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out: Path
    cohort: Any  # SynthCohort
    features: Path
    reference: Path
    cv_dir: Path
    summary: dict[
        str, dict[str, Any]
    ]  # model -> metrics (mean_pearson, top100_pearson, rmse, coverage_90)
    report: Path | None
    seconds: dict[str, float] = field(default_factory=dict)


def _top100(metrics: dict[str, Any], ranking: str) -> float | None:
    top = (metrics["genes"].get("top_k_pearson_r") or {}).get(f"ranked_by_{ranking}") or {}
    return top.get("top_100")


def _row(metrics: dict[str, Any], ranking: str) -> dict[str, Any]:
    """Table row of one model; top-100 genes ranked by ``ranking`` ("validation" or "test").

    Coverage is that of the 90% interval the model writes in its predictions when it writes one,
    else that of its Gaussian (std) or draws interval.
    """
    g = metrics["genes"]
    u = metrics.get("uncertainty") or {}
    stored = u.get("stored_interval") or {}
    if stored.get("coverage") is not None and abs(float(stored.get("level", 0)) - 0.9) < 1e-6:
        coverage = stored["coverage"]
    else:
        coverage = (u.get("coverage") or {}).get("0.9")
    return {
        "mean_pearson": g["mean_pearson_r"],
        "top100_pearson": _top100(metrics, ranking),
        "top_rank": ranking,
        "rmse": g["mean_rmse"],
        "coverage_90": coverage,
        "n_evaluated": metrics.get("n_evaluated"),  # rows scored: a pooled sample once
    }


def summarise(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per model; top-100 genes ranked on validation data when every model has that
    ranking (the honest one), else on the test data for all (what papers report)."""
    models = [m for m in metrics.values() if m.get("genes")]
    honest = bool(models) and all(_top100(m, "validation") is not None for m in models)
    ranking = "validation" if honest else "test"
    return {name: _row(m, ranking) for name, m in metrics.items()}


def run_demo(
    out: str | os.PathLike[str] = "demo_out",
    *,
    n_slides: int | None = None,
    quick: bool = False,
    seed: int = 0,
    config: DemoConfig | None = None,
    max_minutes: float | None = None,
) -> DemoResult:
    """Run the end-to-end demo in ``out`` and return its summary.

    Parameters
    ----------
    out
        Output folder: ``cohort/`` (slides, reference, latents), ``preprocess/`` (tiles,
        features), ``cv/`` (folds, out-of-fold predictions, metrics), ``report.html``.
    n_slides
        Approximate number of slides (patients are chosen to give about this many); default by size.
    quick
        The small preset the test suite runs (under 2 minutes on 2 CPU cores).
    seed
        Seed of everything.
    config
        A full :class:`DemoConfig` (overrides ``quick``/``n_slides``).
    max_minutes
        A wall-clock budget of each RNA-FM training (``optim.max_minutes``). By default the
        demo trains a fixed number of epochs, so its results do not depend on the machine's load.
    """
    from rnafm.synth.cohort import make_cohort

    cfg = config or demo_config(DemoSize.QUICK if quick else DemoSize.DEFAULT, seed=seed)
    if config is None and n_slides is not None:
        cfg = cfg.model_copy(update={"n_patients": max(10, round(n_slides / 1.2))})
    if max_minutes is not None:
        cfg = cfg.model_copy(update={"train": {**cfg.train, "optim.max_minutes": max_minutes}})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo_config.json", cfg.model_dump(mode="json"))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    cohort = make_cohort(
        out / "cohort", n_patients=cfg.n_patients, seed=cfg.seed, slide_width=cfg.slide_width,
        slide_height=cfg.slide_height, mpp=cfg.mpp, n_genes=cfg.n_genes, gdc=cfg.gdc,
    )  # fmt: skip
    seconds["synth"] = time.perf_counter() - t0

    t = time.perf_counter()
    features = _preprocess(cohort, out / "preprocess", cfg)
    seconds["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    reference = _reference(cohort, out, cfg)
    from rnafm.cohort import load_cohort_data, load_reference
    from rnafm.cohort.reference import ExpressionScale
    from rnafm.features.clusters import ClusterConfig

    clusters = ClusterConfig(k=cfg.n_clusters, seed=cfg.seed)
    ref = load_reference(reference, scale=ExpressionScale.RAW)
    data = load_cohort_data(features, reference=ref, cluster_config=clusters)
    seconds["cohort"] = time.perf_counter() - t

    t = time.perf_counter()
    from rnafm.evaluate import CVConfig, cross_validate

    options: dict[str, Any] = {}
    if "rnafm" in cfg.models:
        options["rnafm"] = _flow_config(cfg, clusters)
    cv = cross_validate(
        data, out=out / "cv", models=cfg.models,
        config=CVConfig(n_folds=cfg.n_folds, seed=cfg.seed, random_baseline=False),
        model_options=options, gene_sets="hallmark", reference_path=reference,
    )  # fmt: skip
    seconds["cross_validation"] = time.perf_counter() - t

    t = time.perf_counter()
    report = _report(out, cv)
    seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    summary = summarise(cv.metrics)
    write_json(out / "demo_summary.json", {"models": summary, "seconds": seconds})
    return DemoResult(
        out=out, cohort=cohort, features=features, reference=reference, cv_dir=out / "cv",
        summary=summary, report=report, seconds=seconds,
    )  # fmt: skip


def _flow_config(cfg: DemoConfig, clusters: Any) -> Any:
    """The RNA-FM model of the demo's cross-validation: its TrainConfig and the clusters used."""
    from rnafm.evaluate.baselines.flow import FlowConfig
    from rnafm.training.config import TrainConfig, apply_overrides

    train = apply_overrides(TrainConfig(), cfg.train, keep_none=True)  # max_minutes None: no budget
    train = train.model_copy(update={"clusters": clusters})
    return FlowConfig(draws=cfg.draws, train=train, fixed_seed="seed" in cfg.train)


def _preprocess(cohort: Any, out: Path, cfg: DemoConfig) -> Path:
    from rnafm.features.extract import ExtractConfig
    from rnafm.features.preprocess import PreprocessConfig, preprocess
    from rnafm.slides.config import TilingConfig

    pcfg = PreprocessConfig(
        tiling=TilingConfig(patch_size=cfg.patch_size, mpp=cfg.mpp),
        extraction=ExtractConfig(encoder="builtin", device="cpu"),
    )
    report = preprocess([str(p) for p in cohort.slides], out, pcfg)
    if not report.ok:
        logger.warning("preprocessing: %s", report.summary())
    return report.features


def _reference(cohort: Any, out: Path, cfg: DemoConfig) -> Path:
    """The reference CSV: built from the GDC files by ``rnafm cohort`` when written, else the synth one."""
    if cfg.gdc and cohort.gdc_dir is not None:
        from rnafm.cohort import build_cohort

        path = out / "reference_from_gdc.csv"
        build_cohort(
            cohort.gdc_dir,
            [str(p) for p in cohort.slides],
            out=path,
            sample_sheet=cohort.sample_sheet,
            min_mean=0.0,
        )
        return path
    return cohort.reference


def _report(out: Path, cv: Any) -> Path | None:
    try:
        from rnafm.report import make_report
    except ImportError:
        logger.info("rnafm.report is not available; no report written")
        return None
    return Path(make_report([cv.out], out=out / "report.html"))
