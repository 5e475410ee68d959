"""Training: the root TrainConfig, `fit` on cohort data and `train` from files.

``rnafm.train`` is both this package and the public function :func:`rnafm.train.api.train`:
the package is callable, ``rnafm.train(reference, features, out=...)`` runs ``api.train``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = [
    "TrainConfig",
    "OptimConfig",
    "ValidationConfig",
    "PriorConfig",
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
    "Device": "options",
    "PriorKind": "options",
    "Schedule": "options",
    "CalibrationMethod": "options",
    "fit": "loop",
    "train": "api",
    "split_patients": "api",
}


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = _WHERE.get(name, "config")
        return getattr(importlib.import_module(f"rnafm.train.{module}"), name)
    raise AttributeError(f"module 'rnafm.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`rnafm.train.api.train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rnafm.train.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
