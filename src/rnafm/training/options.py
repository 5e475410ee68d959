"""String options of training (light module: no torch, used by the CLI to build its choices)."""

from __future__ import annotations

from enum import Enum

from rnafm.runtime import Device

__all__ = ["Device", "Schedule", "PriorKind", "CalibrationMethod"]


class Schedule(str, Enum):
    """Learning-rate schedule after the linear warm-up."""

    COSINE = "cosine"  # cosine decay to ``min_lr_ratio * lr`` at the last planned step
    CONSTANT = "constant"


class PriorKind(str, Enum):
    """What the flow models: the expression itself or the residual of a ridge prior."""

    NONE = "none"  # flow models z-scored expression directly (as the paper)
    RIDGE = "ridge"  # ridge on mean-pooled features first; flow models its (cross-fitted) residual


class CalibrationMethod(str, Enum):
    """How the predictive interval is calibrated on the validation split."""

    NONE = "none"  # mean +- z * std (Gaussian quantile), no calibration
    GLOBAL = "global"  # one conformal multiplier of std for all genes
