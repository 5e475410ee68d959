"""Validation during training: multi-draw PCC for model selection, blend choice, calibration."""

from __future__ import annotations

import numpy as np

from rnafm.flow.draws import draw_samples, summarise
from rnafm.metrics import conformal_multiplier, coverage, gaussian_multiplier, mean_pcc
from rnafm.training.config import CalibrationMethod, TrainConfig
from rnafm.training.targets import Targets

__all__ = ["Validator", "uncalibrated"]


def uncalibrated(config: TrainConfig, note: str) -> dict:
    """calibration.json content without a validation split: Gaussian interval, no blend."""
    z = gaussian_multiplier(config.calibration.level)
    return {
        "level": config.calibration.level,
        "method": CalibrationMethod.NONE.value,
        "gaussian_multiplier": z,
        "multiplier": z,
        "blend": 1.0,
        "note": note,
    }


class Validator:
    """Scores an (EMA) model on the validation split.

    The selection metric is the mean per-gene PCC of the mean of several draws (antithetic
    pairs), not of one noisy draw. With a ridge prior the flow's mean correction is also
    shrunk by a factor ``blend`` in ``validation.blends``; the best blend's PCC is the metric.
    """

    def __init__(self, val, y_val: np.ndarray, targets: Targets, config: TrainConfig, device):
        self.val = val
        self.y = y_val  # (n, G) log2(x+1)
        self.targets = targets
        self.config = config
        self.device = device
        self.prior_z = targets.prior_z(val.clusters, val.sizes)  # (n, G) or None
        v = config.validation
        self.blends = tuple(v.blends) if self.prior_z is not None else (1.0,)
        update = {} if v.steps is None else {"steps": v.steps}
        self.sampler = config.sampler.model_copy(update=update)
        self.prior_pcc = (
            None if self.prior_z is None else mean_pcc(targets.norm.inverse(self.prior_z), y_val)
        )

    def _draws(self, model, *, draws: int, sampler, seed: int) -> np.ndarray:
        return draw_samples(
            model,
            self.val.clusters,
            self.val.sizes,
            draws=draws,
            sampler=sampler,
            seed=seed,
            device=self.device,
            antithetic=self.config.antithetic,
        )  # (n, S, G)

    def _by_blend(self, x: np.ndarray) -> dict[float, float]:
        """Mean per-gene PCC of the predictive mean for every blend."""
        out = {}
        for b in self.blends:
            log2 = self.targets.transform.to_log2(x, self.prior_z, blend=b)  # (n, S, G)
            out[b] = mean_pcc(log2.mean(axis=1), self.y)
        return out

    def score(self, model) -> dict:
        """Selection metric of ``model``: best-blend PCC with the validation sampler.

        Blend 0 (the prior alone) does not depend on the weights, so it is left out of the
        selection metric; it stays a candidate when the final blend is chosen (calibrate).
        """
        x = self._draws(
            model, draws=self.config.validation.draws, sampler=self.sampler, seed=self.config.seed
        )
        by = self._by_blend(x)
        candidates = [b for b in by if b > 0] or list(by)
        best = max(candidates, key=lambda b: (by[b], b))
        return {"val_pcc": by[best], "val_blend": best, "val_pcc_flow": by[max(self.blends)]}

    def calibrate(self, model) -> dict:
        """Blend and conformal interval multiplier from draws of the run's own sampler."""
        cal = self.config.calibration
        x = self._draws(model, draws=cal.draws, sampler=self.config.sampler, seed=self.config.seed)
        by = self._by_blend(x)
        blend = max(by, key=lambda b: (by[b], b))
        log2 = self.targets.transform.to_log2(x, self.prior_z, blend=blend)  # (n, S, G)
        z = gaussian_multiplier(cal.level)
        s = summarise(log2, level=cal.level)
        mean, std = s["mean"], s["std"]  # (n, G) each
        q = z
        if cal.method is CalibrationMethod.GLOBAL:
            q = conformal_multiplier(self.y, mean, std, cal.level)
        return {
            "level": cal.level,
            "method": cal.method.value,
            "gaussian_multiplier": z,
            "multiplier": q,
            "blend": blend,
            "pcc_by_blend": {str(k): v for k, v in by.items()},
            "draws": cal.draws,
            "n_slides": len(self.val.slide_ids),
            "pcc_mean": by[blend],
            "prior_pcc": self.prior_pcc,
            "coverage_raw": coverage(self.y, mean - z * std, mean + z * std),
            "coverage_calibrated": coverage(self.y, mean - q * std, mean + q * std),
        }
