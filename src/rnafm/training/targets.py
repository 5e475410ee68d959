"""Training targets: gene alignment, z-scoring and the optional ridge prior."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnafm.errors import InputError
from rnafm.training.config import PriorKind, TrainConfig
from rnafm.training.prior import RidgePrior, cross_fit_ridge, pool_clusters
from rnafm.training.run import NORMALISATION, PRIOR, Normalisation

__all__ = ["OutputTransform", "Targets", "aligned_expression", "prepare_targets", "load_targets"]

logger = logging.getLogger(__name__)


@dataclass
class OutputTransform:
    """Map model space (flow output) to z-scores and log2(x+1).

    ``z = prior + res_scale * x`` and ``log2 = mean + std * z``; without a prior, ``prior`` is
    zero and ``res_scale`` one.
    """

    mean: np.ndarray  # float64 (G,) normalisation mean
    std: np.ndarray  # float64 (G,) normalisation std
    res_scale: np.ndarray  # float64 (G,)

    def to_log2(
        self, x: np.ndarray, prior_z: np.ndarray | None, *, blend: float = 1.0
    ) -> np.ndarray:
        """Model-space draws (n, S, G) and prior z (n, G) -> log2(x+1) draws (n, S, G).

        With a prior, ``blend`` shrinks the flow's mean correction towards the prior (chosen
        on validation): draws become ``prior + scale (blend mean_x + (x - mean_x))``, so their
        spread is unchanged and their mean is ``prior + blend scale mean_x``.
        """
        if prior_z is not None and blend != 1.0:
            mean_x = x.mean(axis=1, keepdims=True)  # (n, 1, G)
            x = x + (blend - 1.0) * mean_x  # (n, S, G)
        z = x * self.res_scale  # (n, S, G)
        if prior_z is not None:
            z = z + prior_z[:, None, :]  # (n, S, G)
        return z * self.std + self.mean  # (n, S, G)


def aligned_expression(data, genes: list[str], what: str) -> np.ndarray:
    """Expression (n, G) of ``data`` in ``genes`` order; InputError when genes are missing."""
    if data.expression is None or data.genes is None:
        raise InputError(f"the {what} data have no expression values; pass a reference table.")
    index = {g: i for i, g in enumerate(data.genes)}
    missing = [g for g in genes if g not in index]
    if missing:
        raise InputError(
            f"the {what} data lack {len(missing)} model genes (e.g. {missing[:5]}); "
            "use a reference with the genes the model was trained on."
        )
    y = np.asarray(data.expression, dtype=np.float64)[:, [index[g] for g in genes]]  # (n, G)
    if not np.isfinite(y).all():
        raise InputError(f"the {what} expression holds NaN or infinite values; clean them first.")
    return y


@dataclass
class Targets:
    """How log2(x+1) expression maps to the flow's training space and back."""

    norm: Normalisation
    prior: RidgePrior | None

    @property
    def transform(self) -> OutputTransform:
        """Model space -> log2(x+1)."""
        scale = self.prior.res_std if self.prior is not None else np.ones_like(self.norm.mean)
        return OutputTransform(mean=self.norm.mean, std=self.norm.std, res_scale=scale)

    def prior_z(self, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
        """Prior z-scores (n, G) of slides, or None without a prior."""
        if self.prior is None:
            return None
        return self.prior.predict(pool_clusters(clusters, sizes))  # (n, G)

    def prior_log2(self, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
        """Prior prediction on the log2(x+1) scale (n, G), or None."""
        z = self.prior_z(clusters, sizes)
        return None if z is None else self.norm.inverse(z)

    def save(self, run_dir: Path) -> None:
        """Write normalisation.npz (and prior.npz)."""
        self.norm.save(Path(run_dir) / NORMALISATION)
        if self.prior is not None:
            self.prior.save(Path(run_dir) / PRIOR)
        else:  # a stale prior from an earlier run in this folder must not be picked up
            (Path(run_dir) / PRIOR).unlink(missing_ok=True)


def prepare_targets(train, y: np.ndarray, config: TrainConfig) -> tuple[Targets, np.ndarray]:
    """Fit normalisation (and prior) on training data; return them and the flow targets (n, G).

    With a ridge prior the target is the cross-fitted residual divided by its per-gene std, so
    training residuals have the scale of residuals at prediction time.
    """
    norm = Normalisation.fit(y)
    z = norm.forward(y)  # (n, G)
    if config.prior.kind is PriorKind.NONE:
        return Targets(norm=norm, prior=None), z.astype(np.float32)
    pooled = pool_clusters(train.clusters, train.sizes)  # (n, D)
    prior, oof = cross_fit_ridge(
        pooled,
        z,
        list(train.patient_ids),
        rel_alphas=config.prior.alphas,
        folds=config.prior.folds,
        seed=config.seed,
        ranks=config.prior.ranks,
        rbf_widths=config.prior.rbf_widths,
    )
    target = (z - oof) / prior.res_std  # (n, G)
    logger.info(
        "ridge prior: median alpha %.3g, mean out-of-fold residual std %.3f",
        float(np.median(prior.alphas)),
        float(prior.res_std.mean()),
    )
    return Targets(norm=norm, prior=prior), target.astype(np.float32)


def load_targets(run_dir: Path) -> Targets:
    """Read normalisation.npz (and prior.npz when present)."""
    run_dir = Path(run_dir)
    prior = RidgePrior.load(run_dir / PRIOR) if (run_dir / PRIOR).is_file() else None
    return Targets(norm=Normalisation.load(run_dir / NORMALISATION), prior=prior)
