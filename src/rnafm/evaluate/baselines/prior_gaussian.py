"""RNA-FM without the flow: the model's ridge prior as the mean, a calibrated Gaussian around it.

The ablation row ``rnafm_no_flow`` of ``rnafm cv``. It fits exactly the prior an rnafm run
fits (:func:`rnafm.training.prior.fit_prior`: on the size-weighted mean of the cluster means or
the slide's tissue composition, z-scored targets with training statistics, the same seed and
:class:`PriorConfig`), predicts ``mean = prior`` and a per-gene Gaussian whose std is the
cross-fitted residual std (``prior.res_std`` times the normalisation std, log2 units), scaled
by one global split-conformal multiplier from the validation split. Like rnafm it then refits
the ridge on training + validation slides (kernel, codebook, rank and residual scale kept).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnafm._io import write_json
from rnafm.errors import InputError
from rnafm.evaluate.baselines.base import Predictions
from rnafm.metrics import conformal_multiplier, gaussian_multiplier
from rnafm.training.config import PriorConfig
from rnafm.training.prior import RidgePrior, fit_prior, refit_ridge
from rnafm.training.run import Normalisation

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["PriorGaussianConfig", "PriorGaussianRegressor"]

logger = logging.getLogger(__name__)


class PriorGaussianConfig(BaseModel):
    """The ridge prior (as in training) and the level of the calibrated interval."""

    model_config = ConfigDict(extra="forbid")

    prior: PriorConfig = Field(
        default_factory=PriorConfig,
        description="Ridge prior settings, as TrainConfig.prior (its 'kind' is ignored).",
    )
    level: float = Field(0.9, gt=0, lt=1, description="Central interval level (calibrated).")


class PriorGaussianRegressor:
    """Mean = rnafm's ridge prior; std = cross-fitted residual std x a conformal multiplier."""

    def __init__(self, config: PriorGaussianConfig | None = None) -> None:
        self.config = config or PriorGaussianConfig()
        self.norm: Normalisation | None = None
        self.prior: RidgePrior | None = None
        self.scale_: float = 1.0  # std multiplier from the validation split
        self.val_predictions: Predictions | None = None

    @staticmethod
    def _y(data: CohortData) -> np.ndarray:
        if data.expression is None:
            raise InputError("training data have no expression; pass a reference table")
        return np.asarray(data.expression, dtype=np.float64)  # (n, G)

    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Cross-fit the prior on ``train``, calibrate on ``val``, refit on both."""
        c = self.config.prior
        y = self._y(train)
        self.norm = Normalisation.fit(y)
        self.prior, _ = fit_prior(
            train.clusters, train.sizes, self.norm.forward(y), list(train.patient_ids), c,
            seed=int(seed),
        )  # fmt: skip
        self.scale_ = 1.0
        self.val_predictions = None
        q = None
        has_val = val is not None and len(val.slide_ids) > 0 and val.expression is not None
        if has_val:
            pv = self.predict(val)  # the train-only prior: honest validation predictions
            q = conformal_multiplier(self._y(val), pv.mean, pv.std, self.config.level)
            self.scale_ = q / gaussian_multiplier(self.config.level)
            self.val_predictions = self.predict(val)
            if c.refit_with_validation:
                x = self.prior.pool(
                    np.concatenate([train.clusters, val.clusters]),
                    np.concatenate([train.sizes, val.sizes]),
                )  # (n + m, D) or (n + m, C)
                z = self.norm.forward(np.concatenate([y, self._y(val)]))  # (n + m, G)
                self.prior = refit_ridge(self.prior, x, z, c.alphas)
        if out is not None:
            write_json(
                Path(out) / "prior_gaussian.json",
                {
                    **self.prior.describe(),
                    "median_alpha": float(np.median(self.prior.alphas)),
                    "mean_res_std_z": float(np.mean(self.prior.res_std)),
                    "conformal_q": q,
                    "std_scale": self.scale_,
                },
            )

    def predict(self, data: CohortData) -> Predictions:
        """Prior mean, calibrated Gaussian std and central interval (log2(x+1))."""
        if self.prior is None or self.norm is None:
            raise RuntimeError("fit the model before predicting")
        z = self.prior.predict_slides(data.clusters, data.sizes)  # (n, G)
        mean = self.norm.inverse(z)  # (n, G)
        sd = self.scale_ * self.prior.res_std * self.norm.std  # (G,)
        std = np.broadcast_to(sd, mean.shape)  # (n, G)
        half = gaussian_multiplier(self.config.level) * std  # (n, G)
        return Predictions(
            mean=mean.astype(np.float32),
            std=std.astype(np.float32),
            lower=(mean - half).astype(np.float32),
            upper=(mean + half).astype(np.float32),
            level=self.config.level,
        )
