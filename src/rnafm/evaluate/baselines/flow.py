"""The RNA-FM flow model in the evaluation harness (wraps ``rnafm.fit`` / ``rnafm.load_model``).

Imported only when the ``rnafm`` model is requested, so the rest of the harness works without
the training stage.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rnafm.cohort.splits import ValidationHoldOut
from rnafm.evaluate.baselines.base import Predictions
from rnafm.training.config import TrainConfig, apply_overrides

if TYPE_CHECKING:
    from rnafm.cohort.dataset import CohortData

__all__ = ["FlowConfig", "FlowRegressor"]

logger = logging.getLogger(__name__)


class FlowConfig(BaseModel):
    """How the flow model is trained and sampled inside cross-validation."""

    model_config = ConfigDict(extra="forbid")

    draws: int = Field(16, ge=2, description="Posterior draws per slide at prediction.")
    keep_draws: bool = Field(True, description="Keep the draws (CRPS from draws, saved files).")
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Training config of every fold; a dict is read as overrides of the default "
        "TrainConfig, e.g. {'optim.epochs': 20, 'gene_sets': 'hallmark'} (keys as "
        "rnafm.training.config.apply_overrides).",
    )
    fixed_seed: bool = Field(
        False,
        description="Train every fold with train.seed; by default each fold gets the CV seed "
        "(set when the overrides name a seed).",
    )

    @model_validator(mode="before")
    @classmethod
    def _train_overrides(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            overrides = data["train"]
            data = {
                **data,
                "train": apply_overrides(TrainConfig(), overrides, keep_none=True),
                "fixed_seed": data.get("fixed_seed", "seed" in overrides),
            }
        return data


class FlowRegressor:
    """RNA-FM: pathway-token flow matching; predictive mean, std and interval from draws."""

    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = config or FlowConfig()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.predictor = None

    def fit(
        self, train: CohortData, val: CohortData | None, *, seed: int, out: Path | None
    ) -> None:
        """Select pathway tokens on the training genes and train a run directory in ``out``."""
        import rnafm
        from rnafm.pathways import load_gene_sets, select_tokens

        config = self.config.train
        if config.validation.hold_out is ValidationHoldOut.SITE:
            logger.warning(
                "validation.hold_out=site is not applied inside cross-validation: each fold's "
                "validation patients come from its folds (folds.json; `rnafm cv "
                "--val-hold-out site` holds out whole sites there)"
            )
        if not self.config.fixed_seed:
            config = config.model_copy(update={"seed": int(seed)})
        tokens = select_tokens(train.genes, load_gene_sets(config.gene_sets), config.tokens)
        if out is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="rnafm-cv-")
            out = Path(self._tmp.name)
        run = rnafm.fit(train, val=val, tokens=tokens, config=config, out=Path(out))
        self.predictor = rnafm.load_model(run)
        self.seed = int(seed)
        self.genes = list(train.genes)

    def predict(self, data: CohortData) -> Predictions:
        """Predictive mean, std, interval (and draws), genes in the training order."""
        p = self.predictor.predict_data(
            data, draws=self.config.draws, seed=self.seed, keep_draws=self.config.keep_draws
        )
        col = {g: j for j, g in enumerate(self.predictor.genes)}
        idx = np.asarray([col.get(g, -1) for g in self.genes])
        if (idx < 0).any():
            logger.warning("%d gene(s) are not model outputs and get NaN", int((idx < 0).sum()))

        def take(a):
            if a is None:
                return None
            a = np.asarray(a, dtype=np.float32)
            out = a[..., np.maximum(idx, 0)]
            out[..., idx < 0] = np.nan
            return out

        return Predictions(
            mean=take(p.mean),
            std=take(p.std),
            lower=take(p.lower),
            upper=take(p.upper),
            draws=take(p.draws),
            level=p.level,
        )
