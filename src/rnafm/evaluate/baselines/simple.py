"""Baselines without a network: the training mean and ridge regression on mean-pooled features."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnafm._io import write_json
from rnafm.errors import InputError
from rnafm.evaluate.baselines.base import Predictions, pooled_features, with_validation

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["MeanRegressor", "RidgeConfig", "RidgeRegressor", "ridge_path"]

logger = logging.getLogger(__name__)


def _targets(data: CohortData) -> np.ndarray:
    if data.expression is None:
        raise InputError("training data have no expression; pass a reference table")
    return np.asarray(data.expression, dtype=np.float64)


class MeanRegressor:
    """Predicts the training mean of every gene; its std is the training std (a Gaussian
    predictive distribution, the calibration reference every model should beat)."""

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.val_predictions: Predictions | None = None

    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Store the per-gene mean and standard deviation of the training and validation
        slides (the patients rnafm's final model sees); ``val_predictions`` come from the
        training slides alone."""
        self._fit_on(_targets(train))
        both = with_validation(train, val)
        self.val_predictions = None
        if both is not None:
            self.val_predictions = self.predict(val)
            self._fit_on(_targets(both))

    def _fit_on(self, y: np.ndarray) -> None:
        self.mean_ = y.mean(0)
        self.std_ = y.std(0, ddof=1) if len(y) > 1 else np.zeros(y.shape[1])

    def predict(self, data: CohortData) -> Predictions:
        """Training mean for every slide."""
        n = len(data.slide_ids)
        mean = np.broadcast_to(self.mean_, (n, len(self.mean_))).astype(np.float32)
        std = np.broadcast_to(self.std_, mean.shape).astype(np.float32)
        return Predictions(mean=mean.copy(), std=std.copy())


class RidgeConfig(BaseModel):
    """Ridge regression on mean-pooled features."""

    model_config = ConfigDict(extra="forbid")

    alphas: list[float] = Field(
        default_factory=lambda: [float(a) for a in np.logspace(-1, 5, 13)],
        description="Candidate penalties (on z-scored features and targets).",
    )
    inner_folds: int = Field(5, ge=2, description="Patient-level inner CV folds choosing alpha.")


def ridge_path(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas: np.ndarray
) -> np.ndarray:
    """Ridge predictions for every alpha at once via the SVD of centred training features.

    Returns (A, n_test, G). Inputs are assumed centred by the caller's training means.
    """
    u, s, vt = np.linalg.svd(x_train, full_matrices=False)  # (n, r), (r,), (r, D)
    uty = u.T @ y_train  # (r, G)
    proj = x_test @ vt.T  # (n_test, r)
    shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (A, r)
    return np.einsum("tr,ar,rg->atg", proj, shrink, uty)  # (A, n_test, G)


class RidgeRegressor:
    """Ridge on size-weighted mean-pooled cluster features; one alpha for all genes chosen by
    patient-grouped inner CV on the training fold; z-scored features and targets."""

    def __init__(self, config: RidgeConfig | None = None) -> None:
        self.config = config or RidgeConfig()
        self.val_predictions: Predictions | None = None

    def _x(self, data: CohortData) -> np.ndarray:
        return pooled_features(data.clusters, data.sizes)

    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Choose alpha by inner CV over the patients and fit; with ``val``, first on the
        training slides alone (their ``val_predictions`` stay honest), then again on training
        + validation slides (the patients rnafm's final model sees)."""
        errors = self._fit_on(train, seed)
        both = with_validation(train, val)
        self.val_predictions = None
        if both is not None:
            self.val_predictions = self.predict(val)
            errors = self._fit_on(both, seed)
        if out is not None:
            write_json(
                Path(out) / "ridge.json",
                {
                    "alpha": self.alpha_,
                    "inner_mse": errors.tolist(),
                    "n_slides": len(self._x_train),
                },
            )

    def _fit_on(self, train: CohortData, seed: int) -> np.ndarray:
        """Choose alpha by patient-grouped inner CV on ``train`` and keep it; inner errors."""
        x, y = self._x(train), _targets(train)
        self.x_mu, self.x_sd = x.mean(0), np.maximum(x.std(0), 1e-8)
        self.y_mu, self.y_sd = y.mean(0), np.maximum(y.std(0), 1e-8)
        xz, yz = (x - self.x_mu) / self.x_sd, (y - self.y_mu) / self.y_sd
        alphas = np.asarray(self.config.alphas, dtype=np.float64)
        pids = np.asarray(train.patient_ids)
        patients = np.unique(pids)
        n_inner = min(self.config.inner_folds, len(patients))
        errors = np.zeros(len(alphas))
        if n_inner >= 2:
            perm = np.random.default_rng(seed).permutation(len(patients))
            group_of = dict(zip(patients[perm], np.arange(len(patients)) % n_inner, strict=True))
            g = np.asarray([group_of[p] for p in pids])
            for k in range(n_inner):
                tr, te = g != k, g == k
                mu = xz[tr].mean(0)
                ymu = yz[tr].mean(0)
                pred = ridge_path(xz[tr] - mu, yz[tr] - ymu, xz[te] - mu, alphas) + ymu
                errors += ((pred - yz[te][None]) ** 2).sum((1, 2))
        self.alpha_ = float(alphas[int(np.argmin(errors))])
        logger.debug("ridge alpha %.3g", self.alpha_)
        self._x_train, self._y_train = xz, yz
        return errors

    def predict(self, data: CohortData) -> Predictions:
        """Predictions on the log2(x+1) scale."""
        xz = (self._x(data) - self.x_mu) / self.x_sd
        mu = self._x_train.mean(0)
        ymu = self._y_train.mean(0)
        pred = ridge_path(
            self._x_train - mu, self._y_train - ymu, xz - mu, np.asarray([self.alpha_])
        )[0]
        return Predictions(mean=((pred + ymu) * self.y_sd + self.y_mu).astype(np.float32))
