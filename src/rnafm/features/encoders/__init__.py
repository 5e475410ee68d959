"""Patch encoder registry.

Each builder is registered with :func:`register_encoder` in its own module and returns an
:class:`EncoderBundle` ``(model, transform, precision, encoder_id)``:

- ``model``: a ``torch.nn.Module`` mapping a batch from ``transform`` to float features ``(B, D)``;
- ``transform``: per tile, uint8 ``(H, W, 3)`` numpy array -> tensor (runs in DataLoader workers);
- ``precision``: the dtype to autocast to on CUDA (``torch.float32`` means no autocast);
- ``encoder_id``: name plus a short digest of the weights (provenance; changes with the weights).

Names: ``builtin`` (weight-free morphology descriptor), ``uni``, ``resnet50`` and
``timm:<model name>``. Weights always come from a local file or folder; nothing is downloaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "EncoderName",
    "EncoderBundle",
    "register_encoder",
    "build_encoder",
    "list_encoders",
    "parse_encoder",
    "encoder_dirname",
]


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


Builder = Callable[..., EncoderBundle]
_REGISTRY: dict[str, Builder] = {}
_MODULES = ("rnafm.features.encoders.builtin", "rnafm.features.encoders.torch_encoders")


def register_encoder(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder ``f(*, weights, arch) -> EncoderBundle`` under ``name``."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_registry() -> dict[str, Builder]:
    for mod in _MODULES:
        importlib.import_module(mod)
    return _REGISTRY


def list_encoders() -> list[str]:
    """Registered encoder names (``timm`` stands for ``timm:<name>``)."""
    return sorted(_load_registry())


def parse_encoder(spec: str) -> tuple[str, str | None]:
    """Split ``'timm:vit_small_patch16_224'`` into ``('timm', 'vit_small_patch16_224')``.

    Raises
    ------
    InputError
        Unknown encoder name, or ``timm`` without a model name.
    """
    from rnafm.errors import InputError

    name, _, arch = spec.partition(":")
    names = [e.value for e in EncoderName]
    if name not in names:
        raise InputError(
            f"unknown encoder {spec!r}; choose one of builtin, uni, resnet50, timm:<name>"
        )
    if name == EncoderName.TIMM.value and not arch:
        raise InputError("give the timm model name as timm:<name>, e.g. timm:vit_small_patch16_224")
    if name != EncoderName.TIMM.value and arch:
        raise InputError(f"encoder {name!r} takes no ':<name>' suffix (got {spec!r})")
    return name, arch or None


def encoder_dirname(spec: str) -> str:
    """Folder name for an encoder's features: ``timm:resnet18`` -> ``timm-resnet18``."""
    return spec.replace(":", "-").replace("/", "-")


def build_encoder(spec: str, *, weights: str | Path | None = None) -> EncoderBundle:
    """Build an encoder by name (``builtin``, ``uni``, ``resnet50``, ``timm:<name>``).

    Parameters
    ----------
    spec:
        Encoder name.
    weights:
        Local weights file or folder (required by every encoder except ``builtin``).
    """
    name, arch = parse_encoder(spec)
    builder = _load_registry()[name]
    return builder(weights=None if weights is None else Path(weights), arch=arch)
