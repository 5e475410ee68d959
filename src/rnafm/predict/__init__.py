"""Prediction: load a run directory, sample draws, write predictions (.h5ad)."""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = ["PredictionArrays", "Predictor", "load_model", "to_anndata", "write_predictions"]

_WHERE = {
    "PredictionArrays": "predictor",
    "Predictor": "predictor",
    "load_model": "predictor",
    "to_anndata": "writer",
    "write_predictions": "writer",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
