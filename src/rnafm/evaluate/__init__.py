"""Honest evaluation: patient-level CV, baselines, metrics, significance and calibration.

Public names are imported lazily (no work at ``import rnafm.evaluate``).
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = [
    "CVConfig",
    "Fold",
    "ModelName",
    "build_regressor",
    "cross_validate",
    "evaluate_predictions",
    "load_folds",
    "make_folds",
    "read_predictions",
    "save_folds",
]

_WHERE = {
    "CVConfig": "cv",
    "cross_validate": "cv",
    "evaluate_predictions": "evaluation",
    "Fold": "rnafm.cohort.splits",
    "load_folds": "rnafm.cohort.splits",
    "make_folds": "rnafm.cohort.splits",
    "save_folds": "rnafm.cohort.splits",
    "ModelName": "baselines",
    "build_regressor": "baselines",
    "read_predictions": "predictions_io",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
