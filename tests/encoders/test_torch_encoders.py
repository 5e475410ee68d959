"""Encoders with weights: local weights saved from randomly initialised models load back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnafm.errors import InputError
from rnafm.features.encoders import build_encoder, encoder_dirname, list_encoders, parse_encoder
from rnafm.features.encoders import torch_encoders as te

TINY_VIT = {
    "model_name": "vit_tiny_patch16_224", "img_size": 64, "patch_size": 16,
    "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True,
}  # fmt: skip


def _tiles(n=2, size=77, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    net = resnet50(weights=None).eval()
    path = tmp_path_factory.mktemp("w") / "resnet50.pth"
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet18", pretrained=False)  # with its 1000-class head
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    return path, net


@pytest.fixture(scope="module")
def _tiny_uni_weights(tmp_path_factory):
    import timm

    torch.manual_seed(2)
    net = timm.create_model(pretrained=False, **TINY_VIT)
    d = tmp_path_factory.mktemp("uni")
    torch.save(net.state_dict(), d / "pytorch_model.bin")
    return d, net


@pytest.fixture
def tiny_uni(monkeypatch, _tiny_uni_weights):
    """UNI's builder with a tiny ViT in place of ViT-L (same code path, same key names)."""
    monkeypatch.setattr(te, "UNI_ARCH", TINY_VIT)
    return _tiny_uni_weights


def test_resnet50_trunk_matches_torchvision_layers(resnet50_weights):
    path, net = resnet50_weights
    enc = build_encoder("resnet50", weights=path)
    assert enc.transform(_tiles(1)[0]).shape == (3, 224, 224)
    x = torch.randn(2, 3, 64, 64)  # fully convolutional: a small input checks the same maths
    with torch.inference_mode():
        got = enc.model(x)  # (2, 1024)
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        want = net.layer3(net.layer2(net.layer1(h))).mean(dim=(2, 3))
    assert got.shape == (2, 1024)
    torch.testing.assert_close(got, want)
    assert enc.encoder_id.startswith("resnet50-") and enc.precision == torch.float16


def test_timm_model_loads_local_weights_without_head(resnet18_weights):
    path, net = resnet18_weights
    enc = build_encoder("timm:resnet18", weights=path)
    x = torch.stack([enc.transform(t) for t in _tiles()])
    with torch.inference_mode():
        got = enc.model(x)
        net.reset_classifier(0)
        want = net.eval()(x)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got, want)


def test_timm_weights_from_folder_with_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    (tmp_path / "m").mkdir()
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    save_file(net.state_dict(), tmp_path / "m" / "model.safetensors")
    enc = build_encoder("timm:resnet10t", weights=tmp_path / "m")
    out = enc.model(torch.stack([enc.transform(t) for t in _tiles(1)]))
    assert out.shape == (1, net.num_features)


def test_uni_builder_loads_its_state_dict(tiny_uni):
    folder, net = tiny_uni
    enc = build_encoder("uni", weights=folder)
    x = torch.stack([enc.transform(t) for t in _tiles(3)])  # (3, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(enc.model(x), net.eval()(x))
    assert enc.precision == torch.bfloat16 and enc.encoder_id.startswith("uni-")


def test_uni_architecture_is_vit_large_1024():
    import timm

    with torch.device("meta"):
        model = timm.create_model(pretrained=False, **te.UNI_ARCH)
    assert model.num_features == 1024 and len(model.blocks) == 24
    assert model.patch_embed.patch_size == (16, 16)


def test_missing_or_wrong_weights_are_clear_errors(tmp_path, resnet18_weights):
    with pytest.raises(InputError, match="huggingface.co/MahmoodLab/UNI"):
        build_encoder("uni", weights=tmp_path / "nope.bin")
    with pytest.raises(InputError, match="needs --weights"):
        build_encoder("resnet50")
    with pytest.raises(InputError, match="do not match"):
        build_encoder("resnet50", weights=resnet18_weights[0])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        build_encoder("timm:resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(InputError, match="no model"):
        build_encoder("timm:definitely_not_a_model", weights=resnet18_weights[0])


def test_parse_encoder_names():
    assert parse_encoder("timm:vit_small_patch16_224") == ("timm", "vit_small_patch16_224")
    assert parse_encoder("builtin") == ("builtin", None)
    for bad in ("timm", "uni:x", "clip"):
        with pytest.raises(InputError):
            parse_encoder(bad)
    assert encoder_dirname("timm:hf-hub/x") == "timm-hf-hub-x"


def test_every_registered_encoder_builds_and_encodes(resnet50_weights, resnet18_weights, tiny_uni):
    weights = {
        "builtin": None,
        "resnet50": resnet50_weights[0],
        "timm": resnet18_weights[0],
        "uni": tiny_uni[0],
    }
    specs = {"builtin": "builtin", "resnet50": "resnet50", "timm": "timm:resnet18", "uni": "uni"}
    assert set(list_encoders()) == set(weights)
    for name in list_encoders():
        model, transform, precision, encoder_id = build_encoder(specs[name], weights=weights[name])
        with torch.inference_mode():
            y = model.eval()(torch.stack([transform(t) for t in _tiles(1, 128)]))
        assert y.ndim == 2 and y.shape[0] == 1 and torch.isfinite(y).all(), name
        assert isinstance(precision, torch.dtype) and encoder_id
