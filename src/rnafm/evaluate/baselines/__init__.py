"""Registry of the models ``rnafm cv --model NAME`` trains on identical folds and features.

``build_regressor(name, config)`` returns an object with ``fit(train, val, *, seed, out)`` and
``predict(data) -> Predictions``. The registry maps each :class:`ModelName` to its class, its
pydantic config class and, for the neural baselines, the architecture it is built with.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel

from rnafm.evaluate.baselines.attention_mil import AttentionMILRegressor, MILConfig
from rnafm.evaluate.baselines.base import Predictions, Regressor, pooled_features
from rnafm.evaluate.baselines.flow import FlowConfig, FlowRegressor
from rnafm.evaluate.baselines.prior_gaussian import PriorGaussianConfig, PriorGaussianRegressor
from rnafm.evaluate.baselines.simple import MeanRegressor, RidgeConfig, RidgeRegressor
from rnafm.evaluate.baselines.torch_models import Architecture, NetConfig, TorchRegressor

__all__ = ["ModelName", "Predictions", "Regressor", "build_regressor", "pooled_features"]


class ModelName(str, Enum):
    """Models of the evaluation harness."""

    MEAN = "mean"
    RIDGE = "ridge"
    HE2RNA = "he2rna"
    TRNASFORMER = "trnasformer"
    SEQUOIA = "sequoia"
    ATTENTION_MIL = "attention_mil"
    PRIOR_GAUSSIAN = "prior_gaussian"  # rnafm without the flow (ablation row rnafm_no_flow)
    RNAFM = "rnafm"


@dataclass(frozen=True)
class _Entry:
    cls: type
    config: type[BaseModel] | None = None  # None: the model takes no options
    arch: Architecture | None = None  # first constructor argument of the neural baselines


_REGISTRY: dict[ModelName, _Entry] = {
    ModelName.MEAN: _Entry(MeanRegressor),
    ModelName.RIDGE: _Entry(RidgeRegressor, RidgeConfig),
    ModelName.HE2RNA: _Entry(TorchRegressor, NetConfig, Architecture.HE2RNA),
    ModelName.TRNASFORMER: _Entry(TorchRegressor, NetConfig, Architecture.TRNASFORMER),
    ModelName.SEQUOIA: _Entry(TorchRegressor, NetConfig, Architecture.SEQUOIA),
    ModelName.ATTENTION_MIL: _Entry(AttentionMILRegressor, MILConfig),
    ModelName.PRIOR_GAUSSIAN: _Entry(PriorGaussianRegressor, PriorGaussianConfig),
    ModelName.RNAFM: _Entry(FlowRegressor, FlowConfig),
}


def config_class(name: ModelName | str) -> type[BaseModel] | None:
    """The pydantic config class of a registered model (None when it has no options)."""
    return _REGISTRY[ModelName(name)].config


def build_regressor(
    name: ModelName | str, config: BaseModel | dict[str, Any] | None = None
) -> Regressor:
    """A fresh, unfitted model of the registry.

    Parameters
    ----------
    name
        A :class:`ModelName` value.
    config
        The model's config (e.g. a :class:`NetConfig`), or options validated by its config
        class (e.g. ``{"max_epochs": 20}``).
    """
    name = ModelName(name)
    entry = _REGISTRY[name]
    args: list[Any] = [entry.arch] if entry.arch else []
    if entry.config is not None and isinstance(config, entry.config):
        args.append(config)
    elif isinstance(config, BaseModel):
        raise ValueError(f"model {name.value!r} takes a {entry.config}, got {type(config)}")
    elif entry.config is not None:
        args.append(entry.config(**(config or {})))
    elif config:
        raise ValueError(f"model {name.value!r} takes no options, got {sorted(config)}")
    return entry.cls(*args)
