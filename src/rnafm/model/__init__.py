"""The RNA-FM network: pathway-token DiT with fast bucketed gene ops and a loop oracle."""

from rnafm.model.condition import Condition
from rnafm.model.config import (
    MODEL_PRESETS,
    HeadModulation,
    ImageEmbedding,
    Implementation,
    ModelConfig,
    PathwayMask,
    model_preset,
)
from rnafm.model.network import RNAFM, build_model
from rnafm.runtime import Precision, autocast

__all__ = [
    "MODEL_PRESETS",
    "RNAFM",
    "Condition",
    "HeadModulation",
    "ImageEmbedding",
    "Implementation",
    "ModelConfig",
    "PathwayMask",
    "Precision",
    "autocast",
    "build_model",
    "model_preset",
]
