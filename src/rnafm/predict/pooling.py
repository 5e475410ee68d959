"""Pooled predictions for slides that share one RNA sample (:mod:`rnafm.cohort.samples`).

The slides of a sample predict one target, so each of them gets the mean of their predictions;
its spread is each slide's spread (root mean square over the sample's slides) times
``sqrt((1 + (k - 1) rho) / k)``, the error of a mean of k predictions whose errors correlate at
``rho``. Intervals keep their half-widths' ratio to the spread; draws are recentred on the pooled
mean with the pooled spread, gene by gene.

Evaluation counts such a sample once (:func:`sample_rows`): its slides repeat one prediction of
one truth, and counting each would weigh the sample by its number of slides and overstate the
evidence of a correlation test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from rnafm.cohort.samples import SharedExpression, groups_of

__all__ = ["pool_predictions", "sample_rows"]

P = TypeVar("P")


def pool_predictions(pred: P, keys: Sequence[str], shared: SharedExpression) -> P:
    """``pred`` (fields ``mean``, ``std``, ``lower``, ``upper``, ``draws`` as in
    :class:`rnafm.predict.PredictionArrays`) with the slides of each key pooled; a copy."""
    mean = np.array(pred.mean, dtype=np.float32, copy=True)  # (n, G)
    out = {"mean": mean}
    for k in ("std", "lower", "upper", "draws"):
        v = getattr(pred, k, None)
        out[k] = None if v is None else np.array(v, dtype=np.float32, copy=True)
    for g in groups_of(keys):
        f = float(np.sqrt(shared.variance_factor(len(g))))
        m = pred.mean[g].mean(axis=0)  # (G,)
        mean[g] = m
        if out["std"] is not None:
            std = f * np.sqrt(np.mean(np.square(pred.std[g], dtype=np.float64), axis=0))  # (G,)
            out["std"][g] = std
        for k, sign in (("lower", -1.0), ("upper", 1.0)):
            if out[k] is not None:
                half = np.sqrt(np.mean(np.square(getattr(pred, k)[g] - pred.mean[g]), axis=0))
                out[k][g] = m + sign * f * half
        if out["draws"] is not None:
            dev = (pred.draws[g] - pred.mean[g][:, None]).sum(axis=0)  # (S, G)
            sd = dev.std(axis=0, ddof=1 if len(dev) > 1 else 0)  # (G,)
            target = (
                out["std"][g[0]]
                if out["std"] is not None
                else f * np.sqrt(np.mean(pred.draws[g].var(axis=1, ddof=1), axis=0))
            )
            scale = np.divide(target, sd, out=np.zeros_like(sd), where=sd > 0)
            out["draws"][g] = m + dev * scale
    return dataclasses.replace(pred, **out)


def sample_rows(keys: Sequence[str], *arrays: np.ndarray, atol: float = 1e-5) -> np.ndarray:
    """Rows to evaluate, one per unit: the first slide of each sample whose slides carry
    identical rows (within ``atol``) in every array (e.g. the pooled prediction and the
    shared truth), every slide of any other sample. Sorted indices."""
    drop: set[int] = set()
    for g in groups_of(keys):
        if all(np.allclose(a[g], a[g[0]], rtol=0.0, atol=atol, equal_nan=True) for a in arrays):
            drop.update(int(i) for i in g[1:])
    return np.asarray([i for i in range(len(keys)) if i not in drop], dtype=np.int64)
