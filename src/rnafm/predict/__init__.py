"""Prediction: load a run directory, sample draws, write predictions (.h5ad)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PredictionArrays", "Predictor", "load_model", "to_anndata", "write_predictions"]

_WHERE = {
    "PredictionArrays": "predictor",
    "Predictor": "predictor",
    "load_model": "predictor",
    "to_anndata": "writer",
    "write_predictions": "writer",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"rnafm.predict.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rnafm.predict' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
