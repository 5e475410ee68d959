"""make_maps: files, resumption keyed on settings, bad input, tiles, CLI and Predictor.maps."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from rnafm.errors import InputError
from rnafm.maps import MapConfig, make_maps, read_map

PATHWAY = "HALLMARK_PLANTED"


def _tiles(root: Path, slide, *, shift: int = 0, patch: int = 256) -> Path:
    """A tile file and a thumbnail as `rnafm tile` writes them."""
    tiles = root / "prep" / "tiles"
    tiles.mkdir(parents=True, exist_ok=True)
    w0 = int(slide.coords[:, 0].max()) + 2000
    h0 = int(slide.coords[:, 1].max()) + 1000
    with h5py.File(tiles / f"{slide.slide_id}.h5", "w") as f:
        ds = f.create_dataset("coords", data=slide.coords + shift)
        for k, v in {
            "patch_size_level0": patch,
            "level0_width": w0,
            "level0_height": h0,
            "level0_mpp": 0.5,
            "slide_path": "/nonexistent/slide.svs",
        }.items():
            f.attrs[k] = v
            ds.attrs[k] = v
    thumbs = root / "prep" / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    img = np.full((h0 // 64, w0 // 64, 3), 235, dtype=np.uint8)
    img[10:-10, 10:-10] = (200, 120, 190)  # pink tissue
    Image.fromarray(img).save(thumbs / f"{slide.slide_id}.png")
    return tiles


def test_writes_h5_pngs_and_manifest(tmp_path, quadrant, predictor):
    tiles = _tiles(tmp_path, quadrant)
    out = tmp_path / "maps"
    res = make_maps(predictor, quadrant.path.parent, pathways=f"{PATHWAY},HALLMARK_FLAT",
                    genes=["hot1"], out=out, tiles=tiles, radius=2.0)  # fmt: skip
    h5 = out / f"{quadrant.slide_id}.h5"
    assert res.files == {quadrant.slide_id: h5}
    with h5py.File(h5) as f:
        assert f["coords"].dtype == np.int64 and f["coords"].shape == (400, 2)
        assert f["scores"].dtype == np.float32 and f["scores"].shape == (400, 3)
        assert f["std"].dtype == np.float32 and f["std"].shape == (400, 3)
        assert [n.decode() for n in f["names"][()]] == [PATHWAY, "HALLMARK_FLAT", "HOT1"]
        assert f.attrs["patch_size_level0"] == 256 and f.attrs["scale"] == "log2(x+1)"
        assert '"radius": 2.0' in f.attrs["settings"]
    smap = read_map(h5)
    np.testing.assert_array_equal(smap.coords, quadrant.coords)
    s = smap.scores[:, 0]
    assert s[quadrant.hot].mean() > s[~quadrant.hot].mean() + 1.0
    for name in (PATHWAY, "HALLMARK_FLAT", "HOT1"):
        png = out / quadrant.slide_id / f"{name}.png"
        with Image.open(png) as im:
            assert im.size[0] > 800 and im.size[1] > 300
    assert (out / "maps.json").is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # atomic writes leave nothing


def test_map_pixels_are_hot_where_the_programme_was_planted(tmp_path, quadrant, predictor):
    """Sample the PNG's score panel: the planted corner is drawn brighter than the far corner."""
    from rnafm.maps.plot import map_figure

    res = make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, radius=2.0)
    smap = res.maps[quadrant.slide_id]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = map_figure(smap, 0, None)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[..., :3].astype(float)
    ax = fig.axes[0]
    (x0, y0), (x1, y1) = ax.get_window_extent().get_points()
    h = rgba.shape[0]

    def pixel(fx, fy):  # fractions of the axes, y from the top
        return rgba[int(h - (y1 - fy * (y1 - y0))), int(x0 + fx * (x1 - x0))].mean()

    # inferno: bright = high. Planted: columns 0-6, rows 0-12 of 20; a transposed map would
    # light (0.55, 0.15) and leave (0.15, 0.55) dark.
    assert pixel(0.15, 0.55) > pixel(0.55, 0.15) + 60
    assert pixel(0.15, 0.3) > pixel(0.85, 0.85) + 60


def test_rerun_skips_finished_slides_unless_settings_change(tmp_path, quadrant, predictor):
    out = tmp_path / "maps"
    make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out)
    calls, mtime = predictor.calls, (out / f"{quadrant.slide_id}.h5").stat().st_mtime_ns
    res = make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out)
    assert res.skipped == [quadrant.slide_id] and predictor.calls == calls
    assert (out / f"{quadrant.slide_id}.h5").stat().st_mtime_ns == mtime
    res = make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out, radius=4.0)
    assert res.skipped == [] and predictor.calls > calls
    calls = predictor.calls
    res = make_maps(predictor, quadrant.path.parent, pathways=[PATHWAY, "HALLMARK_FLAT"], out=out,
                    config=MapConfig(radius=4.0))  # fmt: skip
    assert res.skipped == [] and predictor.calls > calls  # other columns: recomputed
    assert read_map(out / f"{quadrant.slide_id}.h5").names == [PATHWAY, "HALLMARK_FLAT"]


def test_a_refitted_tile_head_recomputes_the_maps(tmp_path, quadrant, predictor):
    predictor.run_dir = tmp_path / "run"
    predictor.run_dir.mkdir()
    (predictor.run_dir / "tile_head.safetensors").write_bytes(b"first head")
    out = tmp_path / "maps"
    make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out)
    res = make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out)
    assert res.skipped == [quadrant.slide_id]
    (predictor.run_dir / "tile_head.safetensors").write_bytes(b"refitted head")
    res = make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out)
    assert res.skipped == []


def test_unknown_names_list_close_matches(quadrant, predictor):
    with pytest.raises(InputError, match="HALLMARK_PLANTED"):
        make_maps(predictor, quadrant.path.parent, pathways="HALLMARK_PLANTD")
    with pytest.raises(InputError, match="HOT1"):
        make_maps(predictor, quadrant.path.parent, genes="HOT7X")
    with pytest.raises(InputError, match="no pathway or gene"):
        make_maps(predictor, quadrant.path.parent)


def test_slide_missing_from_the_features(quadrant, predictor):
    with pytest.raises(InputError, match="SLIDE-A"):
        make_maps(predictor, quadrant.path.parent, slides="SLIDE-B", pathways=PATHWAY)


@pytest.mark.parametrize("shift", [128, 256])
def test_tiles_from_another_tiling_are_refused(tmp_path, quadrant, predictor, shift):
    tiles = _tiles(tmp_path, quadrant, shift=shift)
    with pytest.raises(InputError, match="different tilings"):
        make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=tmp_path / "m",
                  tiles=tiles)  # fmt: skip


def test_tiles_with_another_patch_size_are_refused(tmp_path, quadrant, predictor):
    tiles = _tiles(tmp_path, quadrant, patch=512)
    with pytest.raises(InputError, match="different tilings"):
        make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, tiles=tiles)


def test_slides_without_tiles_still_get_the_h5(tmp_path, planted, quadrant, predictor):
    other = planted(quadrant.path.parent, "SLIDE-C", lambda x, y: y > 15, seed=1)
    tiles = _tiles(tmp_path, quadrant)  # no tile file for SLIDE-C
    out = tmp_path / "maps"
    res = make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, out=out, tiles=tiles)
    assert set(res.files) == {"SLIDE-A", "SLIDE-C"}
    np.testing.assert_array_equal(read_map(out / "SLIDE-C.h5").coords, other.coords)
    assert (out / "SLIDE-C" / f"{PATHWAY}.png").is_file()


def test_load_model_gives_a_predictor_that_maps(monkeypatch, quadrant, predictor):
    import rnafm
    import rnafm.maps.api
    from rnafm.maps.model import MapPredictor
    from rnafm.predict.predictor import Predictor

    assert issubclass(MapPredictor, Predictor)
    assert rnafm.load_model is rnafm.maps.model.load_model
    seen = {}

    def fake(model, features, **kw):
        seen.update(model=model, features=features, **kw)
        return "result"

    monkeypatch.setattr(rnafm.maps.api, "make_maps", fake)
    assert MapPredictor.maps(predictor, "feats", slides=["S"], pathways=[PATHWAY]) == "result"
    assert seen == {"model": predictor, "features": "feats", "slides": ["S"], "pathways": [PATHWAY]}


def test_cli_maps(monkeypatch, tmp_path, quadrant, predictor):
    from click.testing import CliRunner

    import rnafm.predict.predictor as pp
    from rnafm.cli.main import cli

    monkeypatch.setattr(pp, "load_model", lambda run, device="auto": predictor)
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "maps"
    args = ["maps", "--model", str(run), "--features", str(quadrant.path.parent),
            "--slides", quadrant.slide_id, "--pathways", PATHWAY, "--genes", "HOT2",
            "--out", str(out), "--radius", "2"]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "mapped 1 slides" in r.output
    assert read_map(out / f"{quadrant.slide_id}.h5").names == [PATHWAY, "HOT2"]
    r = CliRunner().invoke(cli, args)
    assert "(1 already done)" in r.output
    more = ["--smooth", "0.5", "--attention-power", "4", "--tile-share", "0.25"]
    r = CliRunner().invoke(cli, [*args, *more])
    assert "(0 already done)" in r.output  # other settings: recomputed
    with h5py.File(out / f"{quadrant.slide_id}.h5", "r") as f:
        settings = f.attrs["settings"]
    assert '"smooth": 0.5' in settings and '"attention_power": 4.0' in settings
    assert '"tile_share": 0.25' in settings
    r = CliRunner().invoke(cli, [*args, "--method", "blend"])
    assert r.exit_code == 0 and "(0 already done)" in r.output, r.output
    assert read_map(out / f"{quadrant.slide_id}.h5").attrs["method"] == "blend"


def test_unknown_setting_is_an_input_error(quadrant, predictor):
    with pytest.raises(InputError, match="invalid map setting"):
        make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, radiuss=2.0)
    with pytest.raises(InputError, match="invalid map setting"):
        make_maps(predictor, quadrant.path.parent, pathways=PATHWAY, draws=1)
