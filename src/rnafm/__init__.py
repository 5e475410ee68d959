"""rnafm: predict bulk RNA-seq from H&E whole-slide images with pathway-aware flow matching.

The public API is imported lazily: ``import rnafm`` loads no heavy library.

>>> import rnafm
>>> rnafm.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "train",
    "fit",
    "load_model",
    "Predictor",
    "PredictionArrays",
    "TrainConfig",
]

_WHERE = {
    "fit": "rnafm.train.loop",
    "TrainConfig": "rnafm.train.config",
    "load_model": "rnafm.predict.predictor",
    "Predictor": "rnafm.predict.predictor",
    "PredictionArrays": "rnafm.predict.predictor",
}


def __getattr__(name: str) -> Any:
    if name == "train":  # the callable rnafm.train package (see its docstring)
        return importlib.import_module("rnafm.train")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'rnafm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
