"""Training: the root TrainConfig, `fit` on cohort data and `train` from files.

The public function is also ``rnafm.train`` (``rnafm.train(reference, features, out=...)``).
Names are imported lazily; importing this package does no work.
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = [
    "TrainConfig",
    "OptimConfig",
    "ValidationConfig",
    "PriorConfig",
    "TileHeadConfig",
    "CalibrationConfig",
    "Device",
    "PriorKind",
    "Schedule",
    "CalibrationMethod",
    "fit",
    "train",
    "split_patients",
]

_WHERE = {
    "TrainConfig": "config",
    "OptimConfig": "config",
    "ValidationConfig": "config",
    "PriorConfig": "config",
    "TileHeadConfig": "config",
    "CalibrationConfig": "config",
    "Device": "rnafm.runtime",
    "PriorKind": "options",
    "Schedule": "options",
    "CalibrationMethod": "options",
    "fit": "loop",
    "train": "api",
    "split_patients": "rnafm.cohort.splits",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
