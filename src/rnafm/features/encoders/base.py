"""Encoder names and what an encoder builder returns (light module: no torch)."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple

__all__ = ["EncoderName", "EncoderBundle"]


class EncoderName(str, Enum):
    """Registered encoders (``timm:<name>`` takes any timm model name as well)."""

    BUILTIN = "builtin"
    UNI = "uni"
    RESNET50 = "resnet50"
    TIMM = "timm"


class EncoderBundle(NamedTuple):
    """What an encoder builder returns."""

    model: Any  # torch.nn.Module: transform batch -> (B, D)
    transform: Callable[[Any], Any]  # uint8 (H, W, 3) ndarray -> tensor
    precision: Any  # torch.dtype for CUDA autocast
    encoder_id: str
