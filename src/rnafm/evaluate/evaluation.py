"""``rnafm evaluate``: every metric of a prediction file against a reference table.

Writes ``metrics.json`` (summaries, uncertainty, pathway level) and ``per_gene.csv`` (one row per
gene) and, with gene sets, ``per_pathway.csv``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rnafm import __version__
from rnafm._io import atomic_path, write_json
from rnafm.errors import InputError
from rnafm.evaluate.calibration import (
    LEVELS,
    crps_gaussian,
    gaussian_interval,
    reliability_curve,
    uncertainty_metrics,
)
from rnafm.evaluate.predictions_io import PredictionFile, read_predictions
from rnafm.metrics import (
    TOP_K,
    conformal_quantiles,
    coverage,
    gene_metrics,
    pearson,
    summarize_genes,
    top_k_summary,
    well_predicted,
)
from rnafm.predict.writer import read_draws

__all__ = ["Evaluation", "evaluate_predictions", "load_truth", "pathway_matrix"]

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything ``evaluate_predictions`` computed, aligned on common slides and genes."""

    summary: dict[str, Any]  # what metrics.json holds
    genes: pd.DataFrame  # per-gene table
    pathways: pd.DataFrame | None
    y: np.ndarray  # (n, G) truth
    pred: PredictionFile  # aligned predictions
    pathway_y: np.ndarray | None = None  # (n, P)
    pathway_pred: np.ndarray | None = None  # (n, P)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Truth:
    slide_ids: list[str]
    genes: list[str]
    values: np.ndarray


def load_truth(reference: Any) -> _Truth:
    """Truth from a reference CSV path, a ``Reference`` or a ``CohortData`` (duck-typed)."""
    if isinstance(reference, str | os.PathLike):
        from rnafm.cohort.reference import load_reference

        reference = load_reference(reference)
    values = getattr(reference, "values", None)
    if values is None or callable(values):
        values = getattr(reference, "expression", None)
    if values is None:
        raise InputError("the reference has no expression values to evaluate against")
    return _Truth(
        list(map(str, reference.slide_ids)),
        list(map(str, reference.genes)),
        np.asarray(values, dtype=np.float64),
    )


def _align(pred: PredictionFile, truth: _Truth) -> tuple[PredictionFile, np.ndarray]:
    """Restrict predictions and truth to common slides (prediction order) and genes."""
    t_row = {s: i for i, s in enumerate(truth.slide_ids)}
    t_col = {g: j for j, g in enumerate(truth.genes)}
    rows = [i for i, s in enumerate(pred.slide_ids) if s in t_row]
    cols = [j for j, g in enumerate(pred.genes) if g in t_col]
    if not rows or not cols:
        raise InputError(
            f"{pred.path or 'predictions'}: no slides or genes in common with the reference; "
            "check that both come from the same cohort"
        )
    if len(rows) < len(pred.slide_ids) or len(cols) < len(pred.genes):
        logger.warning(
            "evaluating %d/%d slides and %d/%d genes present in the reference",
            len(rows),
            len(pred.slide_ids),
            len(cols),
            len(pred.genes),
        )
    aligned = _take(pred, np.asarray(rows), np.asarray(cols))
    y = truth.values[[t_row[s] for s in aligned.slide_ids]][:, [t_col[g] for g in aligned.genes]]
    return aligned, y


def _take(pred: PredictionFile, r: np.ndarray, c: np.ndarray | None = None) -> PredictionFile:
    """``pred`` restricted to rows ``r`` and columns ``c`` (all genes when None)."""
    c = np.arange(len(pred.genes)) if c is None else c
    sub = lambda a: None if a is None else np.asarray(a)[r][:, c]  # noqa: E731
    pick = lambda ids: None if ids is None else [ids[i] for i in r]  # noqa: E731
    return PredictionFile(
        slide_ids=pick(pred.slide_ids),
        genes=[pred.genes[j] for j in c],
        mean=sub(pred.mean),
        std=sub(pred.std),
        lower=sub(pred.lower),
        upper=sub(pred.upper),
        random_mean=sub(pred.random_mean),
        observed=sub(pred.observed),
        patient_ids=pick(pred.patient_ids),
        folds=pred.folds[r] if pred.folds is not None else None,
        samples=pick(pred.samples),
        info=pred.info,
        path=pred.path,
        cv=None
        if pred.cv is None
        else {
            k: (np.asarray(v, dtype=np.float64)[:, c] if k == "val_pearson" else v)
            for k, v in pred.cv.items()
        },
    )


def _per_sample(
    pred: PredictionFile, y: np.ndarray, draws: np.ndarray | None
) -> tuple[PredictionFile, np.ndarray, np.ndarray | None, int]:
    """Count once each sample whose slides carry one pooled prediction of one truth
    (:func:`rnafm.predict.pooling.sample_rows`); returns the rows kept and how many samples
    were counted once."""
    from rnafm.cohort.samples import groups_of, sample_keys
    from rnafm.predict.pooling import sample_rows

    keys = pred.samples or sample_keys(pred.slide_ids, pred.patient_ids or pred.slide_ids)
    rows = sample_rows(keys, pred.mean, y)
    if len(rows) == len(keys):
        return pred, y, draws, 0
    kept = set(rows.tolist())
    once = sum(int(g[0]) in kept and int(g[1]) not in kept for g in groups_of(keys))
    logger.info(
        "%d sample(s) whose slides share one pooled prediction of one profile counted once "
        "(%d rows from %d slides; --per-slide counts every slide)",
        once,
        len(rows),
        len(keys),
    )
    return _take(pred, rows), y[rows], None if draws is None else draws[rows], once


def pathway_matrix(
    genes: Sequence[str], gene_sets: Mapping[str, Sequence[str]], *, min_size: int = 5
) -> tuple[list[str], np.ndarray]:
    """Averaging matrix (G, P): column p holds 1/|members| on the members of gene set p that are
    among ``genes``; sets with fewer than ``min_size`` members present are left out."""
    index = {g: i for i, g in enumerate(genes)}
    names, cols = [], []
    for name, members in gene_sets.items():
        idx = sorted({index[g] for g in members if g in index})
        if len(idx) >= min_size:
            col = np.zeros(len(genes))
            col[idx] = 1.0 / len(idx)
            names.append(str(name))
            cols.append(col)
    return names, (np.stack(cols, 1) if cols else np.zeros((len(genes), 0)))


def _gene_sets(gene_sets: Any) -> Mapping[str, Sequence[str]] | None:
    if gene_sets is None or isinstance(gene_sets, Mapping):
        return gene_sets
    from rnafm.pathways import load_gene_sets

    return load_gene_sets(gene_sets)


def _draws_for(pred: PredictionFile, draws: Any) -> np.ndarray | None:
    """Draws aligned to ``pred`` from an array, a path, or uns['rnafm']['draws_file']."""
    if draws is None and pred.info.get("draws_file") and pred.path is not None:
        draws = pred.path.parent / str(pred.info["draws_file"])
        if not Path(draws).is_file():
            logger.warning("%s: draws file %s not found; using the Gaussian std", pred.path, draws)
            return None
    if draws is None or isinstance(draws, np.ndarray):
        return draws
    arr, slides, genes = read_draws(draws)
    si, gi = {s: i for i, s in enumerate(slides)}, {g: j for j, g in enumerate(genes)}
    try:
        return arr[[si[s] for s in pred.slide_ids]][:, :, [gi[g] for g in pred.genes]]
    except KeyError as e:
        raise InputError(f"{draws}: draws lack slide or gene {e}") from e


def _per_fold(pred: PredictionFile, y: np.ndarray, ks: Sequence[int]) -> dict | None:
    """Per-fold means and the honest top-k (genes ranked on each fold's validation split)."""
    if pred.folds is None:
        return None
    val_r = None
    if pred.cv and "val_pearson" in pred.cv:
        val_r = np.asarray(pred.cv["val_pearson"], dtype=np.float64)
    rows, honest = [], []
    for f in np.unique(pred.folds):
        m = pred.folds == f
        r, _ = pearson(y[m], pred.mean[m])
        rows.append(
            {
                "fold": int(f),
                "n_slides": int(m.sum()),
                "mean_pearson_r": float(np.nanmean(r)) if np.isfinite(r).any() else None,
                "n_r_above_0.4": int(np.nansum(r > 0.4)),
            }
        )
        if val_r is not None and f < len(val_r):
            honest.append(top_k_summary(r, val_r[f], ks))
    means = [row["mean_pearson_r"] for row in rows if row["mean_pearson_r"] is not None]
    out: dict[str, Any] = {
        "folds": rows,
        "mean_pearson_r_mean": float(np.mean(means)) if means else None,
        "mean_pearson_r_sd": float(np.std(means, ddof=1)) if len(means) > 1 else None,
    }
    if honest:
        out["top_k_pearson_r_ranked_by_validation"] = {
            k: (float(np.mean(v)) if None not in (v := [h[k] for h in honest]) else None)
            for k in honest[0]
        }
    return out


def _conformal_q(pred: PredictionFile, val: Evaluation | None, levels) -> np.ndarray | None:
    """Per-slide conformal multipliers (n, L) from the CV folds or a validation file."""
    if pred.std is None:
        return None
    if pred.cv and "conformal_q" in pred.cv and pred.folds is not None:
        q = np.asarray(pred.cv["conformal_q"], dtype=np.float64)  # (F, L)
        if q.shape[1] == len(levels) and np.isfinite(q).all():
            return q[pred.folds]
    if val is not None and val.pred.std is not None:
        q = conformal_quantiles(val.y, val.pred.mean, val.pred.std, levels)
        return np.broadcast_to(q, (len(pred.slide_ids), len(levels)))
    return None


def _model_calibrated(pred: PredictionFile, y: np.ndarray, levels) -> dict | None:
    """Coverage of the model's own (calibrated) intervals at every level.

    A stored interval mean -/+ q std at level l implies the Gaussian scale c = q / z_l of the std;
    the intervals at other levels are mean -/+ z c std (as ``rnafm predict --level``).
    """
    if pred.std is None:
        return None
    z = stats.norm.ppf(0.5 + pred.level / 2)
    ok = pred.std > 1e-12
    if not ok.any():
        return None
    c = float(np.median(((pred.upper - pred.lower) / 2)[ok] / (z * pred.std[ok])))
    if not np.isfinite(c) or c <= 0:
        return None
    std = pred.std * c
    return {
        "std_scale": c,
        "coverage": {
            f"{lv:g}": coverage(y, *gaussian_interval(pred.mean, std, lv)) for lv in levels
        },
        "crps_gaussian": float(np.mean(crps_gaussian(y, pred.mean, std))),
        "reliability": reliability_curve(y, mean=pred.mean, std=std),
    }


def evaluate_predictions(
    predictions: str | os.PathLike[str] | PredictionFile,
    reference: Any = None,
    *,
    out: str | os.PathLike[str] | None = None,
    val_predictions: str | os.PathLike[str] | PredictionFile | None = None,
    random_predictions: str | os.PathLike[str] | PredictionFile | None = None,
    draws: str | os.PathLike[str] | np.ndarray | None = None,
    gene_sets: str | Mapping[str, Sequence[str]] | None = None,
    levels: Sequence[float] = LEVELS,
    ks: Sequence[int] = TOP_K,
    per_slide: bool = False,
) -> Evaluation:
    """Evaluate predictions against the reference; write metrics.json and per_gene.csv to ``out``.

    Parameters
    ----------
    predictions
        A predictions .h5ad (``rnafm predict`` or ``rnafm cv``) or a :class:`PredictionFile`.
    reference
        Reference CSV path, ``Reference`` or ``CohortData`` holding the true expression;
        None uses the ``observed`` layer that ``rnafm cv`` stores in its files.
    val_predictions
        Predictions on a validation split (other patients): ranks genes for the honest top-k
        and calibrates conformal intervals. CV files carry this information themselves.
    random_predictions
        Predictions of a randomly initialised model of the same architecture (SEQUOIA's
        well-predicted test); CV files carry them as the ``random_mean`` layer.
    draws
        Posterior draws (n, S, G) or the path of a draws h5 file, for CRPS and intervals.
    gene_sets
        Collection name, .gmt path or mapping for pathway-level metrics (default: the
        collection recorded in the predictions, if any).
    per_slide
        Count every slide. By default a sample whose slides carry one pooled prediction of one
        truth (``rnafm predict`` and ``rnafm cv`` pool the slides of a sample that share its
        RNA) counts once, so a sample with two slides does not weigh twice in the metrics and
        their p-values; ``n_evaluated`` and ``samples_counted_once`` in the summary say so.
    """
    pred = predictions if isinstance(predictions, PredictionFile) else read_predictions(predictions)
    truth = _truth_for(pred, reference)
    pred, y = _align(pred, truth)
    d = _draws_for(pred, draws)
    n_slides, once = len(pred.slide_ids), 0
    if not per_slide:
        pred, y, d, once = _per_sample(pred, y, d)
    val = None
    if val_predictions is not None:
        val = evaluate_predictions(
            val_predictions,
            truth if reference is not None else None,
            ks=ks,
            levels=levels,
            per_slide=per_slide,
        )
    table = gene_metrics(y, pred.mean, pred.genes)
    random_mean = _random_mean(pred, random_predictions)
    if random_mean is not None:
        wp = well_predicted(y, pred.mean, random_mean)
        wp.index = table.index
        table = table.join(wp)
    val_r = _validation_r(pred, val, table.index)
    if val_r is not None:
        table["val_pearson_r"] = val_r
    summary: dict[str, Any] = {
        "rnafm_version": __version__,
        "predictions": str(pred.path) if pred.path else None,
        "model": pred.info.get("model"),
        "n_slides": n_slides,
        "n_evaluated": len(pred.slide_ids),  # rows scored: slides, a pooled sample's once
        "samples_counted_once": once,
        "n_patients": len(set(pred.patient_ids)) if pred.patient_ids else None,
        "genes": summarize_genes(table, val_r=val_r, ks=ks),
        "top_k_note": "ranked_by_test picks the genes on the test data itself (as most papers); "
        "ranked_by_validation picks them on a validation split (honest).",
    }
    summary["per_fold"] = _per_fold(pred, y, ks)
    summary["uncertainty"] = _uncertainty(pred, y, d, val, levels)
    ev = Evaluation(summary=summary, genes=table, pathways=None, y=y, pred=pred)
    _pathway_level(ev, _gene_sets(gene_sets or pred.info.get("gene_sets")), d, levels, ks)
    if out is not None:
        _write(ev, Path(out))
    return ev


def _truth_for(pred: PredictionFile, reference: Any) -> _Truth:
    """The true expression: ``reference``, or the ``observed`` layer of a CV file."""
    if reference is not None:
        return load_truth(reference)
    if pred.observed is None:
        raise InputError(
            f"{pred.path or 'predictions'}: no true expression in the file; pass --reference"
        )
    return _Truth(pred.slide_ids, pred.genes, np.asarray(pred.observed, dtype=np.float64))


def _random_mean(pred: PredictionFile, random_predictions: Any) -> np.ndarray | None:
    """Random-model predictions (n, G) aligned to ``pred``: the given file, else the CV layer."""
    if random_predictions is None:
        return pred.random_mean
    rp = (
        random_predictions
        if isinstance(random_predictions, PredictionFile)
        else read_predictions(random_predictions)
    )
    ri, gi = ({k: i for i, k in enumerate(ids)} for ids in (rp.slide_ids, rp.genes))
    try:
        return rp.mean[[ri[s] for s in pred.slide_ids]][:, [gi[g] for g in pred.genes]]
    except KeyError as e:
        raise InputError(f"{rp.path}: random-model predictions lack slide or gene {e}") from e


def _validation_r(pred: PredictionFile, val: Evaluation | None, genes) -> np.ndarray | None:
    """Per-gene validation Pearson r (G,): from ``val``, else the CV folds' mean; None if neither."""
    if val is not None:
        return val.genes["pearson_r"].reindex(genes).to_numpy()
    if pred.cv and "val_pearson" in pred.cv:
        with warnings.catch_warnings():  # genes constant in every fold: all-NaN columns
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.asarray(pred.cv["val_pearson"], dtype=np.float64), 0)
    return None


def _uncertainty(pred: PredictionFile, y, draws, val: Evaluation | None, levels) -> dict | None:
    """Uncertainty metrics, plus the stored interval's coverage and the model's calibration."""
    out = uncertainty_metrics(
        y,
        mean=pred.mean,
        std=pred.std,
        draws=draws,
        levels=levels,
        conformal_q=_conformal_q(pred, val, levels),
    )
    if out is not None and pred.lower is not None and pred.level:
        out["stored_interval"] = {
            "level": pred.level,
            "coverage": coverage(y, pred.lower, pred.upper),
        }
        out["model_calibrated"] = _model_calibrated(pred, y, levels)
    return out


def _pathway_level(ev: Evaluation, sets, draws, levels, ks) -> None:
    if not sets:
        ev.summary["pathways"] = None
        return
    names, m = pathway_matrix(ev.pred.genes, sets)
    if not names:
        logger.warning("no gene set has 5 or more of the evaluated genes; no pathway metrics")
        ev.summary["pathways"] = None
        return
    py, pm = ev.y @ m, ev.pred.mean @ m  # (n, P)
    table = gene_metrics(py, pm, names)
    table.index.name = "pathway"
    table["n_genes"] = (m > 0).sum(0)
    pdraws = np.einsum("nsg,gp->nsp", draws, m) if draws is not None else None
    ev.summary["pathways"] = {
        "n_pathways": len(names),
        **summarize_genes(table, ks=tuple(k for k in ks if k <= len(names)) or (len(names),)),
        "uncertainty": uncertainty_metrics(py, mean=pm, draws=pdraws, levels=levels)
        if pdraws is not None
        else None,
    }
    ev.pathways, ev.pathway_y, ev.pathway_pred = table, py, pm


def _write(ev: Evaluation, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", ev.summary)
    with atomic_path(out / "per_gene.csv") as tmp:
        ev.genes.to_csv(tmp, float_format="%.6g")
    if ev.pathways is not None:
        with atomic_path(out / "per_pathway.csv") as tmp:
            ev.pathways.to_csv(tmp, float_format="%.6g")
    logger.info("wrote %s", out / "metrics.json")
