"""``rnafm cv``: patient-level cross-validation of any registered model on identical folds.

Layout of ``out``::

    folds.json                      the folds (reusable with --folds-file)
    <model>/fold_<i>/               the fold's model (a run directory for rnafm), its history
    <model>/fold_<i>/fold.npz       test-fold predictions, validation correlations (resume cache)
    <model>/fold_<i>/fold_key.txt   the fold, options and inputs a training checkpoint there is of
    <model>/oof_predictions.h5ad    out-of-fold predictions for every slide (obs['fold'])
    <model>/oof_draws.h5            posterior draws, when the model has them
    <model>/metrics.json, per_gene.csv[, per_pathway.csv]
    summary.json, summary.csv       one row per model
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rnafm._io import atomic_path, write_json
from rnafm.cohort.dataset import slide_sites
from rnafm.cohort.samples import sample_keys_of, shared_expression_of
from rnafm.cohort.splits import (
    Fold,
    HoldOut,
    Stratify,
    ValidationHoldOut,
    check_folds,
    fold_indices,
    folds_digest,
    make_folds,
    save_folds,
)
from rnafm.errors import InputError
from rnafm.evaluate.baselines import ModelName, build_regressor
from rnafm.evaluate.baselines.base import model_label
from rnafm.evaluate.calibration import LEVELS
from rnafm.evaluate.evaluation import evaluate_predictions
from rnafm.evaluate.predictions_io import PredictionFile, write_predictions
from rnafm.metrics import conformal_quantiles, pearson
from rnafm.predict.writer import write_draws

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["CVConfig", "CVResult", "cross_validate"]

logger = logging.getLogger(__name__)

_MAX_DRAWS_BYTES = 1 << 30


class CVConfig(BaseModel):
    """Cross-validation protocol."""

    model_config = ConfigDict(extra="forbid")

    n_folds: int = Field(5, ge=2, description="Number of patient-level folds.")
    val_fraction: float = Field(
        0.15,
        ge=0.0,
        lt=1.0,
        description="Fraction of each training fold's patients held out "
        "for early stopping, gene ranking and conformal calibration.",
    )
    stratify: Stratify = Field(Stratify.NONE, description="Stratify folds by this column.")
    hold_out: HoldOut = Field(
        HoldOut.PATIENT,
        description="What a test fold holds out whole: patients, or tissue source sites (the "
        "reference's 'site' column, else the site field of TCGA barcodes).",
    )
    val_hold_out: ValidationHoldOut = Field(
        ValidationHoldOut.AUTO,
        description="What each training fold's validation split holds out whole: auto (as "
        "the test folds: with hold_out=site whole sites where the training fold spans three "
        "sites or more and some add up to about val_fraction, else patients), patient or site.",
    )
    seed: int = Field(0, ge=0, description="Seed of the folds and of model training.")
    per_slide: bool = Field(
        False,
        description="Score every slide's own prediction, also where a training fold's slides "
        "of one sample share one expression profile (by default the slides of a test sample "
        "then get the mean of their predictions, for every model alike, and each such sample "
        "counts once in the metrics).",
    )
    random_baseline: bool = Field(
        True,
        description="Also predict with a random-init model of the same architecture "
        "(SEQUOIA's well-predicted test), for neural models.",
    )


@dataclass
class CVResult:
    """What ``cross_validate`` wrote."""

    out: Path
    folds: list[Fold]
    predictions: dict[str, Path]
    metrics: dict[str, dict]


def _plain(options: Mapping[str, Any] | BaseModel | None) -> Any:
    """Model options as plain JSON data (a config object as its dump)."""
    if isinstance(options, BaseModel):
        return options.model_dump(mode="json")
    return options or {}


def _fold_key(fold: Fold, model: str, options: Any, seed: int) -> str:
    text = json.dumps([fold.to_dict(), model, _plain(options), seed], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _run_fold(
    name: str,
    data: CohortData,
    fold: Fold,
    i: int,
    *,
    options,
    seed: int,
    fold_dir: Path,
    random_baseline: bool,
) -> dict[str, np.ndarray]:
    """Fit one model on one fold; return test predictions and validation statistics."""
    tr, va, te = fold_indices(fold, data.patient_ids)
    if len(tr) == 0 or len(te) == 0:
        raise InputError(f"fold {i} has no training or no test slides in this cohort")
    train, test = data.subset(tr), data.subset(te)
    val = data.subset(va) if len(va) else None
    reg = build_regressor(name, options)
    reg.fit(train, val, seed=seed + i, out=fold_dir)
    p = reg.predict(test)
    res: dict[str, np.ndarray] = {"test_idx": te, "mean": np.asarray(p.mean)}
    for k in ("std", "lower", "upper", "draws"):
        if getattr(p, k, None) is not None:
            res[k] = np.asarray(getattr(p, k))
    if getattr(p, "level", None) is not None:
        res["level"] = np.asarray(p.level)
    n_genes = res["mean"].shape[1]
    res["val_pearson"] = np.full(n_genes, np.nan)
    res["conformal_q"] = np.full(len(LEVELS), np.nan)
    if val is not None and val.expression is not None:
        # a model refitted on train + val keeps its earlier, honest validation predictions
        pv = getattr(reg, "val_predictions", None) or reg.predict(val)
        res["val_pearson"] = pearson(val.expression, pv.mean)[0]
        if getattr(pv, "std", None) is not None:
            res["conformal_q"] = conformal_quantiles(val.expression, pv.mean, pv.std, LEVELS)
    if random_baseline and hasattr(reg, "random_twin"):
        twin = reg.random_twin()
        twin.fit(train, None, seed=seed + i, out=None)
        res["random_mean"] = np.asarray(twin.predict(test).mean)
    return res


def _assemble(
    name: str,
    data: CohortData,
    folds: list[Fold],
    parts: list[dict],
    out: Path,
    seed: int,
    extra: dict[str, Any],
) -> PredictionFile:
    n = len(data.slide_ids)
    fold_of = np.full(n, -1)
    arrays: dict[str, np.ndarray] = {}
    for i, part in enumerate(parts):
        idx = part["test_idx"]
        fold_of[idx] = i
        for k in ("mean", "std", "lower", "upper", "random_mean", "draws"):
            if k in part:
                if k not in arrays:
                    arrays[k] = np.full((n, *part[k].shape[1:]), np.nan, dtype=np.float32)
                arrays[k][idx] = part[k]
    keep = np.flatnonzero(fold_of >= 0)
    if len(keep) < n:
        logger.warning("%d slide(s) are in no test fold and get no prediction", n - len(keep))
    arrays = {k: v[keep] for k, v in arrays.items()}
    level = next((float(p["level"]) for p in parts if "level" in p), None)
    info: dict[str, Any] = {
        "model": name,
        "protocol": "patient-level cross-validation",
        "n_folds": len(folds),
        "seed": seed,
        "interval_level": level,
        "folds_digest": folds_digest(folds),
        **extra,
    }
    slide_ids = [data.slide_ids[i] for i in keep]
    draws = arrays.pop("draws", None)
    if draws is not None:
        if draws.nbytes <= _MAX_DRAWS_BYTES:
            write_draws(out / "oof_draws.h5", slide_ids, list(data.genes), draws)
            info["draws_file"] = "oof_draws.h5"
            info["n_draws"] = int(draws.shape[1])
        else:
            logger.warning(
                "draws (%.1f GB) not saved; CRPS uses the Gaussian std", draws.nbytes / 1e9
            )
    pf = PredictionFile(
        observed=np.asarray(data.expression, dtype=np.float32)[keep],
        slide_ids=slide_ids,
        genes=list(data.genes),
        patient_ids=[data.patient_ids[i] for i in keep],
        samples=sample_keys_of(data, keep),
        folds=fold_of[keep],
        info=info,
        cv={
            "val_pearson": np.stack([p["val_pearson"] for p in parts]),
            "conformal_q": np.stack([p["conformal_q"] for p in parts]),
            "conformal_levels": np.asarray(LEVELS),
        },
        **{k: v for k, v in arrays.items()},
    )
    write_predictions(out / "oof_predictions.h5ad", pf)
    pf.path = out / "oof_predictions.h5ad"
    return pf


def cross_validate(
    data: CohortData,
    *,
    out: str | os.PathLike[str],
    models: Sequence[ModelName | str] = (ModelName.RIDGE,),
    config: CVConfig | None = None,
    folds: list[Fold] | None = None,
    model_options: Mapping[str, Mapping[str, Any] | BaseModel] | None = None,
    gene_sets: str | Mapping[str, Sequence[str]] | None = None,
    reference_path: str | os.PathLike[str] | None = None,
) -> CVResult:
    """Cross-validate models on patient-level folds; write out-of-fold predictions and metrics.

    Parameters
    ----------
    data
        The cohort with expression (``CohortData``).
    out
        Output folder (layout in the module docstring). Finished folds are reused when the
        fold, the model options, the seed and the input data (cluster features, expression,
        slides, k-means settings: :meth:`CohortData.fingerprint`) are unchanged; otherwise
        they are recomputed with a warning naming what changed.
    models
        Registry names (:class:`ModelName`).
    config
        Folds and protocol; ignored for the folds themselves when ``folds`` is given.
    folds
        Predefined folds (e.g. from :func:`rnafm.evaluate.load_folds`).
    model_options
        Per-model config objects (e.g. ``{"rnafm": FlowConfig(train=TrainConfig(...))}``) or
        options validated by the model's config class (``{"sequoia": {"max_epochs": 20}}``).
    gene_sets
        Gene sets for pathway-level metrics.
    reference_path
        The reference CSV ``data`` came from; recorded so ``rnafm report`` finds the truth.
    """
    from rich.progress import Progress

    config = config or CVConfig()
    if data.expression is None:
        raise InputError("cross-validation needs expression; pass --reference")
    out = Path(out)
    pids = list(map(str, data.patient_ids))
    if folds is None:
        strata = None
        if config.stratify is Stratify.PROJECT:
            if data.projects is None:
                raise InputError("--stratify project needs a 'project' column in the reference")
            strata = data.projects
        # auto: the validation split mirrors the test folds (nested cross-validation), so
        # patient folds validate on patients and site folds on sites where the sites allow
        val_hold_out = config.val_hold_out
        if val_hold_out is ValidationHoldOut.AUTO and config.hold_out is HoldOut.PATIENT:
            val_hold_out = ValidationHoldOut.PATIENT
        sites = None
        if config.hold_out is HoldOut.SITE or val_hold_out is ValidationHoldOut.SITE:
            sites = slide_sites(data)  # an error naming the fix when a slide has none
        folds = make_folds(
            pids,
            n_folds=config.n_folds,
            val_fraction=config.val_fraction,
            strata=strata,
            groups=sites if config.hold_out is HoldOut.SITE else None,
            seed=config.seed,
            sites=sites,
            val_hold_out=val_hold_out,
        )
    else:
        check_folds(folds, sorted(set(pids)), require_all=False)
        if config.hold_out is HoldOut.SITE or config.val_hold_out is ValidationHoldOut.SITE:
            logger.warning("folds given: they are used as they are (holding out sites not applied)")
    save_folds(
        out / "folds.json",
        folds,
        seed=config.seed,
        stratify=config.stratify.value,
        hold_out=config.hold_out.value,
        val_hold_out=config.val_hold_out.value,
    )
    names = [ModelName(m).value for m in models]
    if ModelName.RNAFM.value in names and ModelName.PRIOR_GAUSSIAN.value not in names:
        names.append(ModelName.PRIOR_GAUSSIAN.value)  # the ablation row: rnafm without its flow
    result = CVResult(out=out, folds=folds, predictions={}, metrics={})
    inputs = data.fingerprint()  # cached folds are reused only on the same input data
    shared = [None if config.per_slide else _fold_shared(data, fold) for fold in folds]
    with Progress(transient=True) as progress:
        task = progress.add_task("cross-validation", total=len(names) * len(folds))
        for name in names:
            options = (model_options or {}).get(name)
            parts = []
            for i, fold in enumerate(folds):
                progress.update(task, description=f"{name} fold {i + 1}/{len(folds)}")
                fold_dir = out / name / f"fold_{i}"
                part = _cached_fold(name, data, fold, i, options, config, fold_dir, inputs)
                parts.append(_pooled(part, data, shared[i]))
                progress.advance(task)
            info = {
                "reference": str(Path(reference_path).resolve()) if reference_path else None,
                "gene_sets": gene_sets if isinstance(gene_sets, str) else None,
                "options": json.dumps(_plain(options), default=str),
                "pooled_samples": json.dumps([None if s is None else s.to_dict() for s in shared]),
            }
            pf = _assemble(name, data, folds, parts, out / name, config.seed, info)
            ev = evaluate_predictions(
                pf, data, out=out / name, gene_sets=gene_sets, per_slide=config.per_slide
            )
            result.predictions[name] = pf.path
            result.metrics[name] = ev.summary
    _write_summary(out, result.metrics)
    return result


def _fold_shared(data: CohortData, fold: Fold):
    """The fold's :class:`rnafm.cohort.samples.SharedExpression` from the slides its models
    train on (training and validation patients), or None."""

    tr, va, _ = fold_indices(fold, data.patient_ids)
    return shared_expression_of(data.subset(np.concatenate([tr, va]).astype(np.int64)))


def _pooled(part: dict, data: CohortData, shared) -> dict:
    """A fold's test predictions with the slides of one sample pooled
    (:func:`rnafm.predict.pooling.pool_predictions`) when its training slides of one sample
    shared their expression; unchanged otherwise."""
    from rnafm.evaluate.baselines.base import Predictions
    from rnafm.predict.pooling import pool_predictions

    if shared is None:
        return part
    idx = part["test_idx"]
    keys = sample_keys_of(data, idx)
    fields = {k: part.get(k) for k in ("std", "lower", "upper", "draws")}
    p = pool_predictions(Predictions(mean=part["mean"], **fields), keys, shared)
    out = dict(part)
    for k in ("mean", "std", "lower", "upper", "draws"):
        if getattr(p, k) is not None:
            out[k] = getattr(p, k)
    if "random_mean" in part:
        out["random_mean"] = pool_predictions(
            Predictions(mean=part["random_mean"]), keys, shared
        ).mean
    return out


def _stale_inputs(z: Any, inputs: Mapping[str, str]) -> list[str]:
    """Kinds of input (features, expression, ...) that differ from those of a cached fold."""
    if "inputs" not in z.files:
        return ["unknown (the cache predates input fingerprints)"]
    old = json.loads(str(z["inputs"]))
    return [k for k in sorted(set(old) | set(inputs)) if old.get(k) != inputs.get(k)]


def _cached_fold(
    name, data, fold, i, options, config: CVConfig, fold_dir: Path, inputs: Mapping[str, str]
) -> dict:
    """The fold's results from ``fold.npz`` when its fold, model, options, seed and input data
    are unchanged; otherwise the fold is (re)computed (a stale fold gets a warning)."""
    key = _fold_key(fold, name, options, config.seed) + str(config.random_baseline)
    cache = fold_dir / "fold.npz"
    if cache.is_file():
        with np.load(cache) as z:
            changed = _stale_inputs(z, inputs)
            same_key = str(z["key"]) == key
            if same_key and not changed:
                logger.info("%s fold %d: reusing %s", name, i, cache)
                return {k: z[k] for k in z.files if k not in ("key", "inputs")}
        if same_key:
            logger.warning(
                "%s fold %d: the cached results in %s were computed on other input data "
                "(changed: %s); recomputing the fold",
                name,
                i,
                cache,
                ", ".join(changed),
            )
    _forget_other_checkpoint(fold_dir, key + json.dumps(dict(inputs), sort_keys=True))
    res = _run_fold(
        name,
        data,
        fold,
        i,
        options=options,
        seed=config.seed,
        fold_dir=fold_dir,
        random_baseline=config.random_baseline,
    )
    fold_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp, tmp.open("wb") as f:
        np.savez(f, key=np.asarray(key), inputs=np.asarray(json.dumps(dict(inputs))), **res)
    return res


def _forget_other_checkpoint(fold_dir: Path, started: str) -> None:
    """Delete a training checkpoint left in ``fold_dir`` by a run of another fold definition,
    model options or input data (never resume on other data: a rerun trains afresh instead of
    refusing the checkpoint); one of the same fold is kept, so the fold resumes. ``started`` (the fold's
    key and inputs) is written to ``fold_key.txt`` for the next run."""
    mark = fold_dir / "fold_key.txt"
    ckpt = fold_dir / "checkpoint.pt"
    if ckpt.is_file() and (not mark.is_file() or mark.read_text() != started):
        logger.info("%s: the checkpoint belongs to another fold or input; training afresh", ckpt)
        ckpt.unlink()
    fold_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(mark) as tmp:
        tmp.write_text(started)


def _write_summary(out: Path, metrics: Mapping[str, dict]) -> None:
    rows = []
    for name, m in metrics.items():
        g = m["genes"]
        row = {
            "model": name,
            "label": model_label(name),  # prior_gaussian (rnafm_no_flow): the no-flow ablation
            "mean_pearson_r": g["mean_pearson_r"],  # pooled over the folds' test slides
            # the mean over folds of each fold's own mean r: what one trained model scores on
            # its test set (the pooled r also scores the folds' offsets against each other)
            "mean_pearson_r_per_fold": (m.get("per_fold") or {}).get("mean_pearson_r_mean"),
            "mean_pearson_r_per_fold_sd": (m.get("per_fold") or {}).get("mean_pearson_r_sd"),
            "mean_rmse": g["mean_rmse"],
            "n_evaluated": m.get("n_evaluated"),  # test rows: a pooled sample's slides once
            "n_r_above_0.4": g["n_r_above_0.4"],
            "n_well_predicted": g.get("n_well_predicted"),
        }
        for rank, vals in g["top_k_pearson_r"].items():
            for k, v in vals.items():
                row[f"{k}_{rank}"] = v
        u = m.get("uncertainty")
        stored = (u or {}).get("stored_interval") or {}
        stored_90 = (
            stored.get("coverage") if abs(float(stored.get("level") or 0) - 0.9) < 1e-6 else None
        )
        # the interval the model writes (calibrated on validation) when it writes a 90% one
        row["coverage_90"] = (
            stored_90 if stored_90 is not None else (u["coverage"].get("0.9") if u else None)
        )
        row["coverage_90_uncalibrated"] = u["coverage"].get("0.9") if u else None
        row["crps"] = u["crps"] if u else None
        ranking = (u or {}).get("std_abs_error_spearman") or {}
        row["std_abs_error_spearman"] = ranking.get("pooled")
        row["std_abs_error_spearman_slides"] = ranking.get("per_slide")  # which slides to trust
        rows.append(row)
    write_json(out / "summary.json", {"models": rows})
    with atomic_path(out / "summary.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
