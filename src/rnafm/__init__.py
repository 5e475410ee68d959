"""rnafm: predict bulk RNA-seq from H&E whole-slide images with pathway-aware flow matching.

The public API is imported lazily: ``import rnafm`` loads no heavy library.
``rnafm.train`` is the function :func:`rnafm.training.api.train` (the training stage is the
package :mod:`rnafm.training`).

>>> import rnafm
>>> rnafm.__version__
'0.1.0'
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "train",
    "fit",
    "load_model",
    "Predictor",
    "PredictionArrays",
    "TrainConfig",
    "make_maps",
]

_WHERE = {
    "train": "rnafm.training.api",
    "fit": "rnafm.training.loop",
    "TrainConfig": "rnafm.training.config",
    "load_model": "rnafm.maps.model",  # a Predictor with .maps()
    "Predictor": "rnafm.predict.predictor",
    "PredictionArrays": "rnafm.predict.predictor",
    "make_maps": "rnafm.maps.api",
}


__getattr__ = lazy_exports(__name__, _WHERE)[0]


def __dir__() -> list[str]:
    return sorted(__all__)
