"""The HTML report shows the maps of a few slides when a maps folder exists."""

from __future__ import annotations

import re

import pytest

from rnafm.errors import InputError
from rnafm.maps import make_maps

PATHWAY = "HALLMARK_PLANTED"


def test_report_inlines_maps(tmp_path, planted, quadrant, predictor):
    from rnafm.report import make_report

    for i in range(4):
        planted(quadrant.path.parent, f"SLIDE-X{i}", lambda x, y: x > 12, seed=i + 1)
    out = tmp_path / "maps"
    make_maps(predictor, quadrant.path.parent, pathways=[PATHWAY, "HALLMARK_FLAT"], out=out)
    page = make_report([out], out=tmp_path / "report.html").read_text()
    assert "<h2>Spatial maps</h2>" in page
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/jpeg;base64,', page)
    assert len(imgs) == 3 * 2  # three slides, both columns
    assert all(PATHWAY in a or "HALLMARK_FLAT" in a for a in imgs)


def test_report_without_maps_has_no_section(tmp_path):
    from rnafm.report.maps_section import maps_section

    assert maps_section([]) == ""
    with pytest.raises(InputError, match="maps folder"):
        from rnafm.report import make_report

        (tmp_path / "empty").mkdir()
        make_report([tmp_path / "empty"], out=tmp_path / "r.html")
