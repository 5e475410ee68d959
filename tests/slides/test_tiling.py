"""Tiling one slide: magnification handling, coordinates against the mask, QC, sampling."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from rnafm.errors import SlideError
from rnafm.slides.config import TilingConfig
from rnafm.slides.reader import grid_coords, plan_grid, read_tiles
from rnafm.slides.tiling import read_tile_file, tile_slide
from rnafm.slides.wsi import open_slide


def _box_fraction(coords, size0, box):
    x0, y0, x1, y1 = box
    ix = np.clip(np.minimum(coords[:, 0] + size0, x1) - np.maximum(coords[:, 0], x0), 0, None)
    iy = np.clip(np.minimum(coords[:, 1] + size0, y1) - np.maximum(coords[:, 1], y0), 0, None)
    return ix * iy / size0**2


def test_40x_slide_at_20x_reads_512_px_from_level_1(slide_40x, tissue_box, tmp_path):
    res = tile_slide(slide_40x, tmp_path, TilingConfig(magnification=20, progress=False))
    a = res.attrs
    assert (a["patch_size"], a["patch_size_level0"], a["read_level"]) == (256, 512, 1)
    assert a["level0_magnification"] == 40.0 and a["target_magnification"] == 20.0
    c = res.coords
    assert (c % 512 == 0).all()
    assert (c[:, 0] + 512 <= 3301).all() and (c[:, 1] + 512 <= 2603).all()
    # coordinates against the mask: every kept tile mostly on tissue, every full tissue tile kept
    frac = _box_fraction(c, 512, tissue_box)
    assert frac.min() >= 0.4
    grid = grid_coords(
        (3301, 2603),
        plan_grid(
            open_slide(slide_40x), open_slide(slide_40x).scale(), patch_size=256, magnification=20
        ),
    )
    full = grid[_box_fraction(grid, 512, tissue_box) >= 0.99]
    assert {tuple(x) for x in full.tolist()} <= {tuple(x) for x in c.tolist()}
    empty = grid[_box_fraction(grid, 512, tissue_box) <= 0.2]
    assert not ({tuple(x) for x in empty.tolist()} & {tuple(x) for x in c.tolist()})
    # the written file: TRIDENT attributes on the coords dataset and the root
    with h5py.File(tmp_path / "tiles" / "s40.h5") as f:
        assert f["coords"].dtype == np.int64 and f["coords"].shape == c.shape
        for key in (
            "patch_size",
            "patch_size_level0",
            "target_magnification",
            "level0_magnification",
            "level0_mpp",
        ):
            assert key in f["coords"].attrs and key in f.attrs
    assert (tmp_path / "thumbnails" / "s40.png").stat().st_size > 1000


def test_same_tissue_at_20x_and_40x_gives_the_same_tiles(slide_40x, slide_20x, tmp_path):
    cfg = TilingConfig(magnification=20, progress=False)
    t40 = tile_slide(slide_40x, None, cfg)
    t20 = tile_slide(slide_20x, None, cfg)
    assert t20.attrs["patch_size_level0"] == 256 and t20.attrs["read_level"] == 0
    a = {tuple(x) for x in (t40.coords // 2).tolist()}
    b = {tuple(x) for x in t20.coords.tolist()}
    assert len(a & b) / len(a | b) > 0.8
    common = np.array(sorted(a & b))[:4]
    with open_slide(slide_40x) as s40, open_slide(slide_20x) as s20:
        g40 = plan_grid(s40, s40.scale(), patch_size=256, magnification=20)
        g20 = plan_grid(s20, s20.scale(), patch_size=256, magnification=20)
        tiles40 = np.concatenate([t for _, t, _ in read_tiles(s40, g40, common * 2, workers=1)])
        tiles20 = np.concatenate([t for _, t, _ in read_tiles(s20, g20, common, workers=1)])
    diff = np.abs(tiles40.astype(float) - tiles20.astype(float)).mean()
    assert diff < 12  # same physical field of view (JPEG and resampling noise only)


@pytest.mark.parametrize(
    ("mpp", "size0", "level", "read"),
    [(0.5, 512, 1, 256), (1.0, 1024, 2, 256), (0.25, 256, 0, 256)],
)
def test_target_mpp(slide_40x, mpp, size0, level, read):
    with open_slide(slide_40x) as s:
        g = plan_grid(s, s.scale(), patch_size=256, mpp=mpp)
    assert (g.size0, g.level, g.read_size) == (size0, level, read)


def test_strip_reader_matches_per_tile_reads_with_overlap(slide_40x):
    with open_slide(slide_40x) as s:
        g = plan_grid(s, s.scale(), patch_size=96, overlap=32, magnification=40)
        assert (g.size0, g.stride0) == (96, 64)
        coords = grid_coords(s.dimensions, g)[200:300]
        got = np.empty((len(coords), 96, 96, 3), np.uint8)
        seen = []
        for idx, tiles, (mean, std) in read_tiles(s, g, coords[::-1], workers=2, stats=True):
            got[len(coords) - 1 - idx] = tiles
            seen.extend(idx.tolist())
            grey = tiles[:, ::4, ::4].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            flat = grey.reshape(len(idx), -1)
            assert mean == pytest.approx(flat.mean(1), rel=1e-4)
            assert std == pytest.approx(flat.std(1), rel=1e-3, abs=1e-3)
        assert sorted(seen) == list(range(len(coords)))
        for k in (0, 37, 99):
            x, y = coords[k]
            np.testing.assert_array_equal(got[k], s.read_region((x, y), 0, (96, 96)))


def test_stats_only_fast_path_matches_tile_stats(slide_40x):
    from rnafm.slides.reader import tile_stats

    with open_slide(slide_40x) as s:
        g = plan_grid(s, s.scale(), patch_size=128, magnification=40)
        coords = grid_coords(s.dimensions, g)[::3]
        fast = {}
        for idx, tiles, (mean, std) in read_tiles(
            s, g, coords, workers=2, stats=True, pixels=False
        ):
            assert tiles is None
            fast.update(
                zip(idx.tolist(), zip(mean.tolist(), std.tolist(), strict=True), strict=True)
            )
        for idx, tiles, _ in read_tiles(s, g, coords, workers=1):
            mean, std = tile_stats(tiles)
            for k, m, sd in zip(idx.tolist(), mean, std, strict=True):
                assert fast[k] == pytest.approx((m, sd), rel=1e-4, abs=1e-3)
    assert len(fast) == len(coords)


def test_max_tiles_sampling_is_reproducible(slide_40x, tmp_path):
    base = dict(magnification=40, patch_size=128, progress=False)
    full = tile_slide(slide_40x, None, TilingConfig(**base)).coords
    a = tile_slide(slide_40x, None, TilingConfig(**base, max_tiles=25, seed=3)).coords
    b = tile_slide(slide_40x, None, TilingConfig(**base, max_tiles=25, seed=3)).coords
    c = tile_slide(slide_40x, None, TilingConfig(**base, max_tiles=25, seed=4)).coords
    assert len(full) > 100 and len(a) == 25
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert {tuple(x) for x in a.tolist()} <= {tuple(x) for x in full.tolist()}


def test_blank_tiles_dropped_by_qc(slide_40x, tissue_box):
    res = tile_slide(
        slide_40x, None, TilingConfig(magnification=20, min_tissue_fraction=0.0, progress=False)
    )
    assert res.n_candidates > len(res.coords)  # glass tiles were candidates but failed QC
    assert _box_fraction(res.coords, 512, tissue_box).min() > 0.05


def test_unknown_magnification_needs_base_mag(slide_nomag, tmp_path):
    with pytest.raises(SlideError, match="--base-mag"):
        tile_slide(slide_nomag, tmp_path, TilingConfig(progress=False))
    res = tile_slide(slide_nomag, tmp_path, TilingConfig(base_magnification=40, progress=False))
    assert res.attrs["scale_source"] == "--base-mag" and res.attrs["patch_size_level0"] == 512
    assert len(res.coords) > 0


def test_real_aperio_tiles_lie_on_its_mask(cmu_svs, tmp_path):
    from rnafm.slides.config import MaskConfig
    from rnafm.slides.mask import detect_tissue, tile_fractions

    res = tile_slide(cmu_svs, tmp_path, TilingConfig(magnification=20, progress=False))
    coords, attrs = read_tile_file(tmp_path / "tiles" / "cmu_small_region.h5")
    np.testing.assert_array_equal(coords, res.coords)
    assert attrs["patch_size_level0"] == 256 and attrs["level0_mpp"] == pytest.approx(0.499)
    assert 20 <= len(coords) <= 60
    with open_slide(cmu_svs) as s:
        tissue, _ = detect_tissue(s, mpp=0.499, config=MaskConfig())
    assert tissue.mask.mean() < 0.6  # lots of glass around the tissue strip
    assert tile_fractions(tissue, coords, 256).min() >= 0.5
    # 10x: 512-px level-0 regions resized to 256
    res10 = tile_slide(cmu_svs, None, TilingConfig(magnification=10, progress=False))
    assert res10.attrs["patch_size_level0"] == 512 and len(res10.coords) < len(coords)


def test_config_validation():
    with pytest.raises(ValueError, match="either"):
        TilingConfig(magnification=20, mpp=0.5)
    with pytest.raises(ValueError, match="overlap"):
        TilingConfig(patch_size=64, overlap=64)
    with pytest.raises(ValueError):
        TilingConfig(bogus=1)
    assert TilingConfig().magnification == 20
    assert TilingConfig(workers=4).digest() == TilingConfig().digest()
    assert TilingConfig(seed=1).digest() != TilingConfig().digest()


def test_subifd_pyramid_reads_512_level0_regions_and_resizes(synth, tmp_path, tissue_box):
    img = synth.he_image(1603, 2051, box=(300, 200, 1800, 1400), seed=5)
    path = synth.write_pyramid(tmp_path / "sub.tiff", img, mpp=0.25, subifds=True)
    with open_slide(path) as s:
        assert s.level_count == 1  # OpenSlide's generic-tiff reads the main IFD chain only
    res = tile_slide(path, None, TilingConfig(magnification=20, progress=False))
    assert (res.attrs["patch_size_level0"], res.attrs["read_level"]) == (512, 0)
    assert len(res.coords) >= 4
    with open_slide(path) as s:
        g = plan_grid(s, s.scale(), patch_size=256, magnification=20)
        _, tiles, _ = next(read_tiles(s, g, res.coords[:1], workers=1))
        region = s.read_region(tuple(res.coords[0]), 0, (512, 512))
    assert tiles.shape == (1, 256, 256, 3)
    box = region.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(tiles[0].astype(float) - box).mean() < 8  # resized, not cropped
