"""Registry of the models ``rnafm cv --model NAME`` trains on identical folds and features.

``build_regressor(name, config)`` returns an object with ``fit(train, val, *, seed, out)`` and
``predict(data) -> Predictions``. Builders are looked up lazily so that, e.g., the ridge baseline
never imports torch and the flow model is only imported when asked for.
"""

from __future__ import annotations

import importlib
from enum import Enum
from typing import Any

from rnafm.evaluate.baselines.base import Predictions, Regressor, pooled_features

__all__ = ["ModelName", "Predictions", "Regressor", "build_regressor", "pooled_features"]


class ModelName(str, Enum):
    """Models of the evaluation harness."""

    MEAN = "mean"
    RIDGE = "ridge"
    HE2RNA = "he2rna"
    TRNASFORMER = "trnasformer"
    SEQUOIA = "sequoia"
    RNAFM = "rnafm"


# name -> (module, class, config class or None, architecture argument or None)
_REGISTRY: dict[ModelName, tuple[str, str, str | None, str | None]] = {
    ModelName.MEAN: ("simple", "MeanRegressor", None, None),
    ModelName.RIDGE: ("simple", "RidgeRegressor", "RidgeConfig", None),
    ModelName.HE2RNA: ("torch_models", "TorchRegressor", "NetConfig", "he2rna"),
    ModelName.TRNASFORMER: ("torch_models", "TorchRegressor", "NetConfig", "trnasformer"),
    ModelName.SEQUOIA: ("torch_models", "TorchRegressor", "NetConfig", "sequoia"),
    ModelName.RNAFM: ("flow", "FlowRegressor", "FlowConfig", None),
}


def config_class(name: ModelName | str) -> type | None:
    """The pydantic config class of a registered model (None when it has no options)."""
    module, _, cfg, _ = _REGISTRY[ModelName(name)]
    mod = importlib.import_module(f"rnafm.evaluate.baselines.{module}")
    return getattr(mod, cfg) if cfg else None


def build_regressor(name: ModelName | str, config: dict[str, Any] | None = None) -> Regressor:
    """A fresh, unfitted model of the registry.

    Parameters
    ----------
    name
        A :class:`ModelName` value.
    config
        Options validated by the model's config class (e.g. ``{"max_epochs": 20}``).
    """
    name = ModelName(name)
    module, cls_name, cfg_name, arch = _REGISTRY[name]
    mod = importlib.import_module(f"rnafm.evaluate.baselines.{module}")
    cls = getattr(mod, cls_name)
    args: list[Any] = [arch] if arch else []
    if cfg_name:
        args.append(getattr(mod, cfg_name)(**(config or {})))
    elif config:
        raise ValueError(f"model {name.value!r} takes no options, got {sorted(config)}")
    return cls(*args)
