"""Where and at what precision code runs: the one ``Device`` and ``Precision`` of every stage.

This module sits below all stages (slides, features, model, train, predict, ...): each of them
takes its device and precision options from here. ``torch`` is imported only when a device is
resolved or an autocast context is made, so the enums are cheap to import (the CLI builds its
choices from them).
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["Device", "Precision", "resolve_device", "autocast"]


class Device(str, Enum):
    """Where to run; ``auto`` picks CUDA when a GPU is visible, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(str, Enum):
    """Matmul precision under autocast.

    Weights, optimizer state and the ODE state stay float32 whatever the choice. ``auto`` means
    bfloat16 on CUDA and float32 on the CPU (feature extraction reads it as "the encoder's
    preference").
    """

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"  # torch.autocast: matmuls and attention in bfloat16, reductions in float32


def resolve_device(device: Device | str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU raises InputError."""
    import torch

    from rnafm.errors import InputError

    name = getattr(device, "value", device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is visible; use auto or cpu.")
    return torch.device(name)


def autocast(
    device: torch.device | str, precision: Precision | str = Precision.AUTO
) -> contextlib.AbstractContextManager:
    """Context manager running a forward pass at ``precision`` on ``device``.

    ``fp32`` runs nothing; ``bf16``/``fp16`` autocast on any device; ``auto`` autocasts to
    bfloat16 on CUDA and does nothing on the CPU. Wrap the forward pass (and the sampler, which
    calls it); the loss and the optimizer step may stay inside.
    """
    import torch

    kind = torch.device(device).type
    chosen = Precision(precision)
    if chosen is Precision.FP32 or (chosen is Precision.AUTO and kind != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.float16 if chosen is Precision.FP16 else torch.bfloat16
    return torch.autocast(device_type=kind, dtype=dtype)
