"""Patch encoder registry.

Each :class:`EncoderName` maps to one builder (``_builders``, imported on first use so that
parsing a name loads no torch); a builder returns an :class:`EncoderBundle`
``(model, transform, precision, encoder_id)``:

- ``model``: a ``torch.nn.Module`` mapping a batch from ``transform`` to float features ``(B, D)``;
- ``transform``: per tile, uint8 ``(H, W, 3)`` numpy array -> tensor (runs in DataLoader workers);
- ``precision``: the dtype to autocast to on CUDA (``torch.float32`` means no autocast);
- ``encoder_id``: name plus a short digest of the weights (provenance; changes with the weights).

Names: ``builtin`` (weight-free morphology descriptor), ``uni``, ``resnet50`` and
``timm:<model name>``. Weights always come from a local file or folder; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rnafm.features.encoders.base import EncoderBundle, EncoderName

__all__ = [
    "EncoderName",
    "EncoderBundle",
    "build_encoder",
    "list_encoders",
    "parse_encoder",
    "encoder_dirname",
]


Builder = Callable[..., EncoderBundle]


def _builders() -> dict[EncoderName, Builder]:
    """Encoder name -> builder ``f(*, weights, arch) -> EncoderBundle``."""
    from rnafm.features.encoders import builtin, torch_encoders

    return {
        EncoderName.BUILTIN: builtin.build_builtin,
        EncoderName.UNI: torch_encoders.build_uni,
        EncoderName.RESNET50: torch_encoders.build_resnet50,
        EncoderName.TIMM: torch_encoders.build_timm,
    }


def list_encoders() -> list[str]:
    """Registered encoder names (``timm`` stands for ``timm:<name>``)."""
    return sorted(e.value for e in EncoderName)


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
    builder = _builders()[EncoderName(name)]
    return builder(weights=None if weights is None else Path(weights), arch=arch)
