"""A planted programme must be found, where it was planted, on the predictions' scale."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from rnafm.maps.compute import map_slide
from rnafm.maps.config import MapAnchor, MapConfig, MapMethod
from rnafm.maps.names import resolve_columns

PATHWAY = "HALLMARK_PLANTED"


def _columns(pred, genes=("HOT2",)):
    return resolve_columns(pred.tokens, pred.genes, pathways=[PATHWAY, "HALLMARK_FLAT"],
                           symbols=list(genes), source="test")  # fmt: skip


def _smooth_truth(slide, radius: float) -> np.ndarray:
    """Share of hot tiles within ``radius`` of each tile: what a window map should follow."""
    d = np.linalg.norm(slide.grid[:, None].astype(float) - slide.grid[None], axis=2)
    near = d <= radius
    return (near * slide.hot[None]).sum(1) / near.sum(1)


@pytest.mark.parametrize("method", [MapMethod.TILES, MapMethod.READOUT, MapMethod.LOCAL,
                                    MapMethod.BLEND])  # fmt: skip
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_planted_block_is_found_top_left(quadrant, predictor, stride, method):
    cols = _columns(predictor)
    cfg = MapConfig(method=method, radius=2.0, stride=stride, smooth=1.0, anchors=400)
    smap = map_slide(predictor, quadrant.path, cols, cfg)
    np.testing.assert_array_equal(smap.coords, quadrant.coords)  # file order, untouched
    s = smap.scores[:, 0]
    assert s[quadrant.hot].mean() > s[~quadrant.hot].mean() + 1.0
    assert np.corrcoef(s, _smooth_truth(quadrant, 2.0))[0, 1] > 0.95
    # a transposed or shifted map would follow the wrong tiles
    x, y = quadrant.grid[:, 0], quadrant.grid[:, 1]
    transposed = (y < 7) & (x < 13)
    assert spearmanr(s, quadrant.hot).statistic > spearmanr(s, transposed).statistic + 0.2
    # flat pathway stays flat; the gene column is on its own log2 scale
    assert smap.scores[:, 1].std() < 0.03
    assert smap.scores[:, 2].max() > 6.0


@pytest.mark.parametrize("method", [MapMethod.TILES, MapMethod.READOUT, MapMethod.LOCAL,
                                    MapMethod.BLEND])  # fmt: skip
@pytest.mark.parametrize("stride, offset", [(1, 4), (1, 9), (1, 13), (2, 4), (2, 10)])
def test_stripe_peak_is_on_its_column_not_one_patch_off(tmp_path, planted, predictor, stride,
                                                        offset, method):  # fmt: skip
    slide = planted(tmp_path, "STRIPE", lambda x, y: x == offset, rows=12, cols=18)
    cfg = MapConfig(method=method, radius=1.0, stride=stride, smooth=0.7)
    smap = map_slide(predictor, slide.path, _columns(predictor), cfg)
    x = slide.grid[:, 0]
    profile = np.array([smap.scores[x == c, 0].mean() for c in range(18)])
    assert int(np.argmax(profile)) == offset
    assert profile[offset] > profile[offset - 1] and profile[offset] > profile[offset + 1]


def test_noise_features_give_no_map(tmp_path, planted, predictor):
    """Without a planted region the map carries no structure to find (and no false signal)."""
    slide = planted(tmp_path, "EMPTY", lambda x, y: False)
    smap = map_slide(predictor, slide.path, _columns(predictor), MapConfig())
    assert smap.scores[:, 0].std() < 0.03


@pytest.mark.parametrize("method", [MapMethod.READOUT, MapMethod.LOCAL])
def test_std_is_higher_on_the_boundary_than_inside(quadrant, predictor, method):
    cfg = MapConfig(method=method, radius=2.0, draws=32, anchors=400)
    smap = map_slide(predictor, quadrant.path, _columns(predictor), cfg)
    mixed = _smooth_truth(quadrant, 2.0)
    edge = (mixed > 0.3) & (mixed < 0.7)
    pure = (mixed == 0) | (mixed == 1)
    assert smap.std[edge, 0].mean() > 1.5 * smap.std[pure, 0].mean()
    assert np.all(smap.std >= 0)


@pytest.mark.parametrize("method", [MapMethod.TILES, MapMethod.READOUT])
def test_bulk_is_the_slide_prediction_and_maps_share_its_scale(quadrant, predictor, method):
    smap = map_slide(predictor, quadrant.path, _columns(predictor),
                     MapConfig(method=method, radius=3.0))  # fmt: skip
    share = quadrant.hot.mean()
    want = np.mean(predictor.base[:3] + share * predictor.gain[:3])
    assert smap.bulk[0] == pytest.approx(want, abs=0.05)
    s = smap.scores[:, 0]
    if method is MapMethod.READOUT:
        # the mean of the map is the bulk value for a model linear in the composition
        assert s.mean() == pytest.approx(smap.bulk[0], abs=0.25)
    else:  # tiles: hot and cold tissue keep their own log2 levels, the bulk lies between
        assert s[quadrant.hot].mean() > smap.bulk[0] > s[~quadrant.hot].mean()
        assert s[quadrant.hot].mean() - s[~quadrant.hot].mean() > 1.0


def test_cluster_method_colours_each_tile_by_its_cluster(quadrant, predictor):
    smap = map_slide(predictor, quadrant.path, _columns(predictor),
                     MapConfig(method=MapMethod.CLUSTER))  # fmt: skip
    s = smap.scores[:, 0]
    assert s[quadrant.hot].min() > s[~quadrant.hot].max()


def test_many_windows_grow_the_stride(tmp_path, planted, predictor):
    slide = planted(tmp_path, "BIG", lambda x, y: (x - 20) ** 2 + (y - 15) ** 2 < 60,
                    rows=40, cols=50)  # fmt: skip
    cfg = MapConfig(method=MapMethod.LOCAL, radius=3.0, stride=1, max_conditions=40)
    smap = map_slide(predictor, slide.path, _columns(predictor), cfg)
    assert smap.attrs["n_conditions"] <= 40 and smap.attrs["lattice_stride"] > 1
    assert np.corrcoef(smap.scores[:, 0], slide.hot)[0, 1] > 0.8
    # the tiles (default) and readout methods run the full model on at most `anchors` windows
    for method in (MapMethod.TILES, MapMethod.READOUT):
        cfg = MapConfig(method=method, radius=3.0, stride=1, anchors=12)
        smap = map_slide(predictor, slide.path, _columns(predictor), cfg)
        assert smap.attrs["n_conditions"] <= 12 and smap.attrs["method"] == method.value
        assert np.corrcoef(smap.scores[:, 0], slide.hot)[0, 1] > 0.9


def test_run_warnings_once_per_slide_and_no_calibration_noise(quadrant, make_predictor, caplog):
    import logging

    base = make_predictor()
    run_log = logging.getLogger("rnafm.training.run")

    class Warning(type(base)):
        def predict_data(self, data, **kw):
            run_log.warning("the intervals were calibrated for other sampling settings: draws 8")
            run_log.warning("cannot check that the features come from the training encoder")
            return super().predict_data(data, **kw)

    pred = Warning()
    with caplog.at_level(logging.WARNING, logger="rnafm.training.run"):
        cfg = MapConfig(method=MapMethod.LOCAL, stride=1, batch=16)
        map_slide(pred, quadrant.path, _columns(pred), cfg)
    messages = [r.getMessage() for r in caplog.records]
    assert pred.calls > 3
    assert not [m for m in messages if "calibrated" in m]
    assert sum("cannot check" in m for m in messages) == 1
    run_log.warning("after the map")  # the filter is gone again
    assert caplog.records[-1].getMessage() == "after the map"


def test_readout_resolves_a_stripe_finer_than_its_anchor_windows(tmp_path, planted, predictor):
    """The detail comes from the per-tile read-out: with four anchor windows for the whole
    slide (stride about 9 tiles), a one-tile stripe still peaks on its own column."""
    slide = planted(tmp_path, "FINE", lambda x, y: x == 7, rows=12, cols=18)
    cfg = MapConfig(method=MapMethod.READOUT, radius=3.0, stride=1, anchors=4, smooth=0.5)
    smap = map_slide(predictor, slide.path, _columns(predictor), cfg)
    assert smap.attrs["n_conditions"] <= 4 and smap.attrs["lattice_stride"] >= 6
    x = slide.grid[:, 0]
    profile = np.array([smap.scores[x == c, 0].mean() for c in range(18)])
    assert int(np.argmax(profile)) == 7
    assert profile[7] > max(profile[6], profile[8]) + 0.2
    assert predictor.head_calls > 0


def test_readout_is_anchored_to_the_full_prediction(quadrant, make_predictor):
    """A head that sees the programme at a third of the run's gain still maps on the run's
    scale: the slide anchor shifts the head's map onto the run's bulk prediction (the map's
    mean is the bulk value for a model linear in the composition, the contrast is the head's),
    the window anchor also restores the run's contrast."""
    weak = make_predictor(head_shrink=0.3)
    cols = _columns(weak)
    far_hot = (quadrant.grid[:, 0] <= 2) & (quadrant.grid[:, 1] <= 8)
    far_cold = quadrant.grid[:, 0] >= 12
    base, gain = weak.base[:3].mean(), weak.gain[:3].mean()
    readout = MapConfig(method=MapMethod.READOUT, smooth=1.0)
    smap = map_slide(weak, quadrant.path, cols, readout)
    s = smap.scores[:, 0]
    assert s.mean() == pytest.approx(smap.bulk[0], abs=0.02)
    assert s[far_hot].mean() - s[far_cold].mean() == pytest.approx(0.3 * gain, abs=0.1)
    cfg = readout.model_copy(update={"radius": 2.0, "anchors": 400, "anchor": MapAnchor.WINDOWS})
    s = map_slide(weak, quadrant.path, cols, cfg).scores[:, 0]
    assert s[far_cold].mean() == pytest.approx(base, abs=0.1)
    assert s[far_hot].mean() == pytest.approx(base + gain, abs=0.15)


def test_tiles_are_anchored_so_the_maps_mixture_is_the_bulk(quadrant, make_predictor):
    """The map of every column (pathway or gene) mixed over the slide's tiles (equal weights,
    as the planted head gives) is the run's bulk prediction for it, smoothed or not, while the
    contrast between hot and cold tissue is the tile head's own (a third of the run's gain)."""
    weak = make_predictor(tile_shrink=0.3)
    cols = _columns(weak)
    for smooth in (0.0, 2.5):
        smap = map_slide(weak, quadrant.path, cols, MapConfig(smooth=smooth))
        assert smap.attrs["method"] == "tiles"
        mixed = np.log2(np.mean(np.exp2(smap.scores.astype(np.float64)), axis=0))  # (M,)
        np.testing.assert_allclose(mixed, smap.bulk, atol=1e-4)
        assert smap.scores[:, 0].min() < smap.bulk[0] < smap.scores[:, 0].max()
    smap = map_slide(weak, quadrant.path, cols, MapConfig(smooth=0.0))
    gene = smap.scores[:, 2].astype(np.float64)  # HOT2 on log2
    hot = gene[quadrant.hot].mean() - gene[~quadrant.hot].mean()
    assert hot == pytest.approx(0.3 * weak.gain[1], abs=0.05)
    assert weak.head_calls == 0  # the slide head is not asked


def test_mixture_shift_against_a_weighted_mean():
    from scipy.special import softmax

    from rnafm.maps.tiles import mixture_shift

    rng = np.random.default_rng(0)
    scores, logits, bulk = rng.normal(5, 2, (7, 3)), rng.normal(0, 3, 7), rng.normal(5, 1, 3)
    shift = mixture_shift(scores, logits, bulk)
    w = softmax(logits)
    np.testing.assert_allclose(np.log2(w @ np.exp2(scores + shift)), bulk, rtol=1e-10)
    # huge scores do not overflow
    np.testing.assert_allclose(mixture_shift(scores + 2000.0, logits, bulk), shift - 2000.0)


def test_tiles_without_a_tile_head_map_with_the_readout(quadrant, make_predictor):
    pred = make_predictor(tile_head=False)
    smap = map_slide(pred, quadrant.path, _columns(pred), MapConfig(smooth=1.0))
    assert smap.attrs["method"] == "readout" and pred.head_calls > 0
    s = smap.scores[:, 0]
    assert s[quadrant.hot].mean() > s[~quadrant.hot].mean() + 1.0


def test_readout_without_a_slide_head_maps_with_local_windows(quadrant, make_predictor):
    class NoHead(make_predictor):
        slide_head_log2 = None

    pred = NoHead(tile_head=False)
    smap = map_slide(pred, quadrant.path, _columns(pred), MapConfig(radius=2.0))
    assert smap.attrs["method"] == "local"
    s = smap.scores[:, 0]
    assert s[quadrant.hot].mean() > s[~quadrant.hot].mean() + 1.0


@pytest.mark.parametrize("anchor", [MapAnchor.SLIDE, MapAnchor.WINDOWS])
def test_blend_is_the_mean_of_the_tiles_and_local_maps(quadrant, make_predictor, anchor):
    """blend = (tiles + local) / 2 tile by tile, with local's std; the tiles map anchored on
    the same windows as the local one (``anchors`` covering them all)."""
    pred = make_predictor(tile_shrink=0.3)
    cols = _columns(pred)
    base = {"radius": 2.0, "smooth": 1.0, "anchor": anchor, "anchors": 384}
    maps = {m: map_slide(pred, quadrant.path, cols, MapConfig(method=m, **base))
            for m in (MapMethod.TILES, MapMethod.LOCAL, MapMethod.BLEND)}  # fmt: skip
    tiles, local, blend = maps.values()
    assert blend.attrs["method"] == "blend"
    np.testing.assert_allclose(blend.scores, 0.5 * (tiles.scores + local.scores), atol=1e-5)
    np.testing.assert_allclose(blend.std, local.std, atol=1e-6)
    np.testing.assert_allclose(blend.bulk, tiles.bulk, atol=1e-6)


def test_blend_without_a_tile_head_maps_with_local_windows(quadrant, make_predictor):
    pred = make_predictor(tile_head=False)
    smap = map_slide(pred, quadrant.path, _columns(pred), MapConfig(method=MapMethod.BLEND))
    assert smap.attrs["method"] == "local"
