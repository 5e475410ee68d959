"""Opening slides and reading their physical scale."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.errors import SlideError
from rnafm.slides.wsi import mpp_to_magnification, open_slide, slide_scale


def test_generic_tiff_reports_mpp_and_levels(slide_40x):
    with open_slide(slide_40x) as s:
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert s.dimensions == (3301, 2603)
        assert s.level_count == 3
        assert s.level_dimensions[1] == (1650, 1301)
        assert s.mpp == pytest.approx(0.25)
        assert s.magnification == 40.0
        assert s.scale().source == "openslide.mpp-x"
        assert s.slide_id == "s40"
        assert s.best_level_for_downsample(2.0) == 1
        assert s.best_level_for_downsample(1.9) == 0
        assert s.best_level_for_downsample(100) == 2


def test_real_aperio_slide(cmu_svs):
    with open_slide(cmu_svs) as s:
        assert s.properties["openslide.vendor"] == "aperio"
        scale = s.scale()
        assert scale.mpp == pytest.approx(0.499)
        assert scale.magnification == 20.0
        region = s.read_region((100, 200), 0, (31, 17))
        assert region.shape == (17, 31, 3) and region.dtype == np.uint8


def test_read_region_outside_is_white(slide_40x):
    with open_slide(slide_40x) as s:
        region = s.read_region((3301 - 10, 0), 0, (20, 5))
    assert (region[:, 10:] == 255).all()


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"openslide.mpp-x": "0.2520", "aperio.AppMag": "20"}, (0.252, 40.0, "openslide.mpp-x")),  # mpp first
        ({"aperio.AppMag": "20"}, (0.5, 20.0, "aperio.AppMag")),
        ({"openslide.objective-power": "40"}, (0.25, 40.0, "openslide.objective-power")),
        ({"tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch"}, (0.25, 40.0, "tiff.XResolution")),
        ({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch", "aperio.AppMag": "40"}, (0.25, 40.0, "aperio.AppMag")),
        ({"openslide.mpp-x": "0.3"}, (0.3, 10 / 0.3, "openslide.mpp-x")),  # not snapped: 33x
    ],
)  # fmt: skip
def test_slide_scale_priority(props, expected):
    scale = slide_scale(props)
    assert (scale.mpp, scale.magnification, scale.source) == pytest.approx(expected)


def test_base_mag_overrides_and_unknown_is_none():
    assert slide_scale({}) is None
    assert slide_scale({"openslide.mpp-x": "bogus"}) is None
    s = slide_scale({"openslide.mpp-x": "0.25"}, base_magnification=20)
    assert (s.mpp, s.magnification, s.source) == (0.5, 20.0, "--base-mag")


def test_mpp_to_magnification_snaps_within_ten_percent():
    assert mpp_to_magnification(0.2527) == 40.0
    assert mpp_to_magnification(0.46) == 20.0
    assert mpp_to_magnification(1.0) == 10.0


def test_unopenable_files_raise_slide_error(tmp_path, cmu_svs):
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "missing.svs")
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(cmu_svs.read_bytes()[:4000])
    with pytest.raises(SlideError, match="truncated.svs"):
        open_slide(bad)
    txt = tmp_path / "notes.tiff"
    txt.write_text("hello")
    with pytest.raises(SlideError, match="notes.tiff"):
        open_slide(txt)


def test_fast_reader_matches_public_openslide_api(slide_40x, monkeypatch):
    from rnafm.slides import wsi

    with open_slide(slide_40x) as s:
        fast = s.read_region((3301 - 40, 17), 0, (64, 33))  # half outside the slide
        fast1 = s.read_region((1000, 1000), 1, (50, 21))
        monkeypatch.setattr(wsi, "_lowlevel_read", lambda: None)
        slow = s.read_region((3301 - 40, 17), 0, (64, 33))
        slow1 = s.read_region((1000, 1000), 1, (50, 21))
        pil = np.asarray(s._osr.read_region((1000, 1000), 1, (50, 21)))[..., :3]
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast1, slow1)
    np.testing.assert_array_equal(fast1, pil)
    assert (fast[:, 40:] == 255).all()
