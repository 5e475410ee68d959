"""Tissue mask, Otsu threshold and per-tile tissue fractions."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.slides.config import MaskConfig
from rnafm.slides.mask import TissueMask, _otsu, detect_tissue, tile_fractions, tissue_mask
from rnafm.slides.wsi import open_slide


def _scene(h=151, w=203):
    img = np.full((h, w, 3), 243, np.uint8)
    img[30:120, 40:170] = (220, 140, 185)  # tissue block
    img[60:64, 90:94] = 243  # a small hole (16 px)
    img[10:12, 10:12] = (120, 60, 150)  # a speck (4 px)
    return img


def test_mask_recovers_tissue_fills_holes_removes_specks():
    cfg = MaskConfig(closing_um=8.0, min_object_um2=20 * 64.0, min_hole_um2=20 * 64.0)
    mask, thr = tissue_mask(_scene(), mpp=8.0, config=cfg)
    truth = np.zeros(mask.shape, bool)
    truth[30:120, 40:170] = True
    assert 0.05 <= thr < 0.35
    assert (mask == truth).mean() > 0.995
    assert mask[61, 91] and not mask[10, 10]


def test_blank_image_has_no_tissue():
    rng = np.random.default_rng(0)
    img = np.clip(243 + rng.normal(0, 2, (97, 131, 3)), 0, 255).astype(np.uint8)
    mask, _ = tissue_mask(img, mpp=8.0, config=MaskConfig())
    assert not mask.any()


def test_otsu_matches_skimage():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.6, 0.1, 3000)]).clip(0, 1)
    assert _otsu(v) == pytest.approx(threshold_otsu(v, nbins=256), abs=2 / 256)


def test_tile_fractions_match_brute_force():
    rng = np.random.default_rng(2)
    m = rng.random((37, 53)) > 0.5
    tm = TissueMask(
        mask=m, image=np.zeros((37, 53, 3), np.uint8), downsample=(8.0, 8.0), threshold=0.1
    )
    coords = np.array([[0, 0], [16, 24], [100, 40], [8 * 45, 8 * 29], [3, 5]], dtype=np.int64)
    got = tile_fractions(tm, coords, 64)
    for (x, y), g in zip(coords.tolist(), got, strict=True):
        cx = (np.arange(53) + 0.5) * 8
        cy = (np.arange(37) + 0.5) * 8
        sel = m[np.ix_((cy >= y) & (cy < y + 64), (cx >= x) & (cx < x + 64))]
        assert g == pytest.approx(sel.mean())


def test_detect_tissue_on_pyramid(slide_40x, tissue_box):
    with open_slide(slide_40x) as s:
        tissue, overview = detect_tissue(s, mpp=0.25, config=MaskConfig(), image_size=300)
    assert max(overview.shape[:2]) == 300
    dx, dy = tissue.downsample
    assert dx == pytest.approx(32, rel=0.02)  # 8 um mask pixels at 0.25 um/px
    x0, y0, x1, y1 = tissue_box
    inner = tissue.mask[int(y0 / dy) + 2 : int(y1 / dy) - 2, int(x0 / dx) + 2 : int(x1 / dx) - 2]
    assert inner.all()
    assert tissue.mask.sum() == pytest.approx((x1 - x0) * (y1 - y0) / (dx * dy), rel=0.08)
