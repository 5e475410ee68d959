"""The regressor interface every model of the evaluation harness implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["Predictions", "Regressor", "model_label", "pooled_features", "with_validation"]

# rows of the ablation study: how tables name these registry models
_LABELS = {"prior_gaussian": "rnafm_no_flow"}


def model_label(name: str) -> str:
    """Table label of a registry model: ``prior_gaussian (rnafm_no_flow)``, else the name."""
    label = _LABELS.get(str(name))
    return f"{name} ({label})" if label else str(name)


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
        """Fit on ``train``; ``val`` (patients disjoint from train) is for early stopping.

        A model whose final fit also uses the validation patients (as rnafm refits its prior
        on training + validation slides) sets ``val_predictions``: its predictions on ``val``
        from before it saw them, which ``rnafm cv`` then uses for gene ranking and conformal
        calibration instead of ``predict(val)``.
        """

    def predict(self, data: CohortData) -> Predictions:
        """Predict expression (log2(x+1)) for every slide of ``data``."""


def pooled_features(clusters: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    """Slide-level features (n, D): cluster means weighted by cluster size (the mean over all
    tiles); plain mean over clusters when a slide has no sizes
    (:func:`rnafm.cohort.dataset.mean_tile_features`)."""
    from rnafm.cohort.dataset import mean_tile_features

    return mean_tile_features(clusters, sizes)


def with_validation(train: CohortData, val: CohortData | None) -> CohortData | None:
    """Training and validation slides in one ``CohortData`` (None without validation
    slides with expression): the patients rnafm's final model sees."""
    from rnafm.cohort.dataset import CohortData

    if val is None or len(val.slide_ids) == 0 or val.expression is None:
        return None
    if list(val.genes or []) != list(train.genes or []):
        raise ValueError("training and validation data have different genes")
    both = (train.projects is not None) and (val.projects is not None)
    samples = None  # the reference's sample ids, "" for slides without one
    if train.samples is not None or val.samples is not None:
        samples = [s for p in (train, val) for s in (p.samples or [""] * len(p))]
    return CohortData(
        slide_ids=[*train.slide_ids, *val.slide_ids],
        patient_ids=[*train.patient_ids, *val.patient_ids],
        projects=[*train.projects, *val.projects] if both else None,
        clusters=np.concatenate([train.clusters, val.clusters]),  # (n + m, K, D)
        sizes=np.concatenate([train.sizes, val.sizes]),  # (n + m, K)
        genes=train.genes,
        expression=np.concatenate([train.expression, val.expression]),  # (n + m, G)
        cluster_config=train.cluster_config,
        feature_attrs=train.feature_attrs,
        samples=samples,
    )
