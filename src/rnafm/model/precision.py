"""Numeric precision of the network: float32, or bfloat16 autocast (CPU with AVX512-BF16/AMX, CUDA)."""

from __future__ import annotations

import contextlib
from enum import Enum

import torch

__all__ = ["Precision", "autocast"]


class Precision(str, Enum):
    """Matmul precision. Weights, optimizer state and the ODE state stay float32 either way."""

    FP32 = "fp32"
    BF16 = "bf16"  # torch.autocast: matmuls and attention in bfloat16, reductions in float32


def autocast(
    device: torch.device | str, precision: Precision | str
) -> contextlib.AbstractContextManager:
    """Context manager running the model at ``precision`` on ``device``.

    Wrap the forward pass (and the sampler, which calls it); the loss and the optimizer step
    may stay inside. Velocities come back in float32: the heads accumulate in float32.
    """
    if Precision(precision) is Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
