"""The regressor interface every model of the evaluation harness implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["Predictions", "Regressor", "pooled_features"]


@dataclass
class Predictions:
    """Predictions of one model on n slides (same fields as ``rnafm.predict.PredictionArrays``).

    Models without uncertainty leave ``std``, ``lower`` and ``upper`` as None.
    """

    mean: np.ndarray  # float32 (n, G) log2(x+1)
    std: np.ndarray | None = None  # float32 (n, G)
    lower: np.ndarray | None = None  # float32 (n, G) central interval at `level`
    upper: np.ndarray | None = None  # float32 (n, G)
    draws: np.ndarray | None = None  # float32 (n, S, G)
    level: float | None = None


@runtime_checkable
class Regressor(Protocol):
    """A model the harness can fit on one fold and use to predict another."""

    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Fit on ``train``; ``val`` (patients disjoint from train) is for early stopping."""

    def predict(self, data: CohortData) -> Predictions:
        """Predict expression (log2(x+1)) for every slide of ``data``."""


def pooled_features(clusters: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    """Slide-level features (n, D): cluster means weighted by cluster size (the mean over all
    tiles); plain mean over clusters when a slide has no sizes."""
    clusters = np.asarray(clusters, dtype=np.float64)  # (n, K, D)
    if sizes is None:
        return clusters.mean(1)
    w = np.asarray(sizes, dtype=np.float64)  # (n, K)
    tot = w.sum(1, keepdims=True)  # (n, 1)
    w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 1.0 / clusters.shape[1])  # (n, K)
    return np.einsum("nk,nkd->nd", w, clusters)  # (n, D)
