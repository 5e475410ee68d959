"""Encoders with weights: ``uni``, ``resnet50`` (CLAM's truncated ResNet-50) and ``timm:<name>``.

Weights always come from a local file or folder (``--weights``); models are built with
random initialisation and the state dict is loaded on top, so nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rnafm._io import file_digest
from rnafm.errors import InputError
from rnafm.features.encoders.base import EncoderBundle

__all__ = ["TileTransform", "ResNet50Trunk", "load_state_dict", "UNI_ARCH"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: timm arguments of UNI (MahmoodLab/UNI, ViT-L/16, 1024-d); tests swap in a tiny ViT.
UNI_ARCH: dict[str, Any] = {
    "model_name": "vit_large_patch16_224",
    "img_size": 224,
    "patch_size": 16,
    "init_values": 1e-5,
    "num_classes": 0,
    "dynamic_img_size": True,
}
_WHERE = {
    "uni": "request access at https://huggingface.co/MahmoodLab/UNI and download "
    "pytorch_model.bin (e.g. `huggingface-cli download MahmoodLab/UNI pytorch_model.bin`)",
    "resnet50": "save torchvision's ImageNet weights once on a machine with network access: "
    '`python -c "import torch, torchvision; torch.save(torchvision.models.resnet50('
    "weights='IMAGENET1K_V2').state_dict(), 'resnet50.pth')\"`",
    "timm": "save the pretrained timm model once on a machine with network access: "
    "`python -c \"import timm, torch; torch.save(timm.create_model('NAME', pretrained=True)"
    ".state_dict(), 'NAME.pth')\"` (or download model.safetensors from its Hugging Face page)",
}
_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class TileTransform:
    """uint8 ``(H, W, 3)`` tile -> normalised float tensor ``(3, size, size)`` (picklable)."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, tile: np.ndarray) -> torch.Tensor:
        x = (
            torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1).float() / 255.0
        )  # (3, H, W)
        if x.shape[1:] != (self.size, self.size):
            x = nn.functional.interpolate(
                x[None],
                size=(self.size, self.size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]  # (3, size, size)
        return (x - self.mean) / self.std  # (3, size, size)


def _weights_file(weights: Path | None, name: str) -> Path:
    hint = _WHERE["timm" if name.startswith("timm") else name]
    if weights is None:
        raise InputError(f"encoder {name!r} needs --weights PATH (a local file or folder); {hint}")
    if not weights.exists():
        raise InputError(f"{weights}: weights for encoder {name!r} not found; {hint}")
    if weights.is_dir():
        for fname in _WEIGHT_NAMES:
            if (weights / fname).exists():
                return weights / fname
        found = sorted(p for p in weights.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if len(found) != 1:
            raise InputError(
                f"{weights}: expected one weights file ({', '.join(_WEIGHT_NAMES)} or *.pth) "
                f"in the folder, found {len(found)}; pass the file itself; {hint}"
            )
        return found[0]
    return weights


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (unwrapping ``state_dict``/``model``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as e:
        raise InputError(f"{path}: cannot read the weights file ({str(e)[:200]})") from e
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(f"{path}: not a state dict (got {type(sd).__name__})")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in sd.items()}


def _load_into(
    model: nn.Module, sd: dict[str, torch.Tensor], path: Path, *, ignore: tuple[str, ...]
) -> None:
    """Load ``sd``; every model key must be present, extra keys only under ``ignore`` prefixes."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not k.startswith(ignore)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise InputError(
            f"{path}: weights do not match the architecture (missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}); check that the file belongs to this encoder"
        )
    bad = [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        raise InputError(f"{path}: shape mismatch for {bad[:4]}; wrong model variant?")
    model.load_state_dict(sd, strict=True)


def _encoder_id(name: str, path: Path) -> str:
    return f"{name}-{file_digest(path, limit=1 << 26)[:10]}"


class ResNet50Trunk(nn.Module):
    """ResNet-50 up to ``layer3`` then global average pooling: ``(B, 3, H, W) -> (B, 1024)``."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 1024, H/16, W/16)
        return x.mean(dim=(2, 3))  # (B, 1024)


def build_resnet50(*, weights: Path | None, arch: str | None = None) -> EncoderBundle:
    """CLAM's ResNet-50 trunk (1024-d) from a torchvision ResNet-50 state dict."""
    path = _weights_file(weights, "resnet50")
    model = ResNet50Trunk()
    _load_into(model, load_state_dict(path), path, ignore=("layer4.", "fc."))
    return EncoderBundle(
        model.eval(), TileTransform(224, IMAGENET_MEAN, IMAGENET_STD), torch.float16,
        _encoder_id("resnet50", path),
    )  # fmt: skip


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise InputError("this encoder needs timm: pip install 'rnafm[encoders]'") from e
    return timm


def build_uni(*, weights: Path | None, arch: str | None = None) -> EncoderBundle:
    """UNI (ViT-L/16, 1024-d) from MahmoodLab's ``pytorch_model.bin``."""
    path = _weights_file(weights, "uni")
    model = _timm().create_model(pretrained=False, **UNI_ARCH)
    _load_into(model, load_state_dict(path), path, ignore=("head.",))
    size = int(UNI_ARCH.get("img_size", 224))
    return EncoderBundle(
        model.eval(), TileTransform(size, IMAGENET_MEAN, IMAGENET_STD), torch.bfloat16,
        _encoder_id("uni", path),
    )  # fmt: skip


def build_timm(*, weights: Path | None, arch: str | None = None) -> EncoderBundle:
    """Any timm model (``timm:<name>``) without its classifier, from a local state dict."""
    timm = _timm()
    if not arch:
        raise InputError("give the timm model name as timm:<name>")
    path = _weights_file(weights, f"timm:{arch}")
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    except RuntimeError as e:  # unknown model name
        raise InputError(f"timm has no model {arch!r} ({e}); see timm.list_models()") from e
    _load_into(
        model, load_state_dict(path), path, ignore=("head", "fc.", "classifier.", "last_linear.")
    )
    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    return EncoderBundle(
        model.eval(), TileTransform(size, tuple(cfg["mean"]), tuple(cfg["std"])), torch.bfloat16,
        _encoder_id(f"timm-{arch}", path),
    )  # fmt: skip
