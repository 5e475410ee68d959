"""Per-tile scores of one slide from a trained run: the read-out (default) and local windows.

A trained run predicts a slide from its K cluster means and the number of tiles in each
cluster. Both methods treat the tiles around a point (a disk of ``radius`` tiles) as a small
slide: its tiles keep the slide's cluster assignment, and the condition is, per cluster, the
mean feature of that cluster's tiles inside the window and their count. The run's prediction
for that condition is the expression of the neighbourhood, on the same log2 scale as the bulk
prediction, and the spread of its draws is the map's uncertainty. Windows are evaluated on a
lattice (every ``stride`` tiles, growing until the slide has at most ``max_conditions`` of
them) and interpolated bilinearly to the tiles.

``local`` maps these window predictions. ``readout`` (:mod:`rnafm.maps.readout`) takes the
scores from the run's slide head read out on every tile alone, smoothed, shifted by the
difference between the run's full prediction and the head's for the slide (or, with ``anchor``
windows, for each window); the full run is predicted for a few windows only (``anchors``), for
the std map. It is sharper at tissue borders and much cheaper.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnafm.errors import InputError
from rnafm.maps.config import MapAnchor, MapConfig, MapMethod
from rnafm.maps.grid import TileGrid, interpolate, make_lattice, tile_grid, window_members
from rnafm.maps.names import MapColumns
from rnafm.maps.readout import has_slide_head, head_log2, tile_readout
from rnafm.maps.tiles import has_tile_head, mixture_shift, tile_head_scores, tile_head_slide

__all__ = [
    "SlideMap",
    "map_slide",
    "assign_clusters",
    "Conditions",
    "local_conditions",
    "window_clusters",
]

logger = logging.getLogger(__name__)


@dataclass
class SlideMap:
    """Per-tile scores of one slide (the contents of ``maps/<slide>.h5``)."""

    slide_id: str
    coords: np.ndarray  # int64 (N, 2) level-0 top-left corners, as in the feature file
    scores: np.ndarray  # float32 (N, M) log2 scale of the predictions
    std: np.ndarray  # float32 (N, M) std of the draws
    names: list[str]  # (M,) pathway names and gene symbols
    kinds: list[str]  # (M,) "pathway" or "gene"
    bulk: np.ndarray  # float32 (M,) the slide's own (bulk) prediction
    bulk_std: np.ndarray  # float32 (M,)
    clusters: np.ndarray  # int64 (N,) the slide cluster of each tile
    attrs: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> int:
        """Index of the column called ``name``."""
        try:
            return self.names.index(name)
        except ValueError as e:
            raise KeyError(f"{name!r} is not a column of this map ({self.names})") from e


@dataclass
class Conditions:
    """The windows of a slide that are predicted, and how tiles draw on them."""

    members: Any  # scipy.sparse.csr_matrix (C, N): tiles of each window
    rows: np.ndarray  # int64 (N, 4) windows contributing to each tile
    weights: np.ndarray  # float64 (N, 4) their weights (sum 1 per tile)
    stride: int  # lattice stride used (0 for the per-cluster method)


def assign_clusters(features: np.ndarray, means: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Nearest non-empty cluster mean (K, D) of every tile (N, D); int64 (N,) indices into K."""
    live = np.flatnonzero(sizes > 0)
    if live.size == 0:
        live = np.arange(means.shape[0])
    x = np.asarray(features, dtype=np.float64)  # (N, D)
    c = np.asarray(means[live], dtype=np.float64)  # (K', D)
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]  # (N, K')
    return live[d.argmin(axis=1)]  # (N,)


def _cluster_conditions(labels: np.ndarray) -> Conditions:
    """One condition per cluster: all its tiles (the naive per-cluster baseline)."""
    from scipy import sparse

    used, inverse = np.unique(labels, return_inverse=True)  # (C,), (N,)
    n = labels.size
    members = sparse.csr_matrix(
        (np.ones(n), (inverse.ravel(), np.arange(n))), shape=(used.size, n)
    )  # (C, N)
    rows = np.zeros((n, 4), dtype=np.int64)  # (N, 4)
    rows[:, 0] = inverse.ravel()
    weights = np.zeros((n, 4))  # (N, 4)
    weights[:, 0] = 1.0
    return Conditions(members=members, rows=rows, weights=weights, stride=0)


def local_conditions(grid: TileGrid, labels: np.ndarray, config: MapConfig) -> Conditions:
    """Disk windows on the finest lattice (from ``config.stride``) with at most
    ``config.max_conditions`` windows holding at least ``config.min_tiles`` tiles."""
    if config.method is MapMethod.CLUSTER:
        return _cluster_conditions(labels)
    min_tiles = min(config.min_tiles, len(labels))
    stride = config.stride
    while True:
        lattice = make_lattice(grid, stride)
        members = window_members(grid, lattice.centres, config.radius)  # (A, N)
        count = np.asarray(members.sum(axis=1)).ravel()  # (A,)
        valid = count >= min_tiles  # (A,)
        if not valid.any():  # radius below the tile spacing: windows of single tiles
            valid = count >= 1
        if valid.sum() <= config.max_conditions or stride >= max(grid.shape):
            break
        stride += 1
    row_of = np.cumsum(valid) - 1  # (A,) lattice centre -> condition row (valid centres only)
    rows, weights = interpolate(grid, lattice, valid)  # (N, 4), (N, 4)
    return Conditions(members=members[valid], rows=row_of[rows], weights=weights, stride=stride)


def window_clusters(
    members, labels: np.ndarray, features: np.ndarray, slide_means: np.ndarray, n_total: int
) -> tuple[np.ndarray, np.ndarray]:
    """The condition of each window: its tiles grouped by slide cluster.

    Parameters
    ----------
    members
        sparse (b, N) tiles of each window.
    labels
        int64 (N,) slide cluster of each tile.
    features
        float32 (N, D) tile features.
    slide_means
        float32 (K, D) the slide's cluster means (rows of clusters absent from a window).
    n_total
        Tiles of the slide: sizes are rescaled to this total, the magnitude the run was
        trained on.

    Returns
    -------
    means, sizes
        float32 (b, K, D) the mean features of each cluster's tiles inside the window, and
        float32 (b, K) their counts (0: cluster absent) scaled to ``n_total`` tiles.
    """
    from scipy import sparse

    b, n = members.shape
    k, d = slide_means.shape
    m = members.tocoo()
    grouped = sparse.csr_matrix(
        (m.data, (m.row * k + labels[m.col], m.col)), shape=(b * k, n)
    )  # (b*K, N)
    sums = np.asarray(grouped @ features, dtype=np.float64).reshape(b, k, d)  # (b, K, D)
    counts = np.asarray(grouped.sum(axis=1)).reshape(b, k)  # (b, K)
    means = np.where(
        counts[:, :, None] > 0, sums / np.maximum(counts, 1.0)[:, :, None], slide_means[None]
    )  # (b, K, D)
    sizes = counts * (n_total / np.maximum(counts.sum(axis=1, keepdims=True), 1.0))  # (b, K)
    return means.astype(np.float32), sizes.astype(np.float32)


class _DropCalibrationWarning(logging.Filter):
    """Maps report the spread of the draws, not the calibrated interval: the warning that the
    interval was calibrated for another number of draws does not concern them. Other warnings
    of the run pass once per slide, not once per batch of windows."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "calibrated for other sampling settings" in message or message in self.seen:
            return False
        self.seen.add(message)
        return True


@contextlib.contextmanager
def _quiet_calibration(flt: _DropCalibrationWarning):
    target = logging.getLogger("rnafm.training.run")
    target.addFilter(flt)
    try:
        yield
    finally:
        target.removeFilter(flt)


def cluster_config_of(predictor):
    """The k-means settings of the run's training clusters."""
    return getattr(predictor, "cluster_config", None) or predictor.config.clusters


def _predict_windows(predictor, cond: Conditions, labels, features, clusters, columns, config,
                     attrs):  # fmt: skip
    """Mean and std over draws (C+1, M) of the columns; the last row is the whole slide."""
    from rnafm.cohort.dataset import CohortData

    c = cond.members.shape[0]
    n = len(labels)
    quiet = _DropCalibrationWarning()
    mean = np.empty((c + 1, len(columns)), dtype=np.float32)  # (C+1, M)
    std = np.empty((c + 1, len(columns)), dtype=np.float32)  # (C+1, M)
    for start in range(0, c + 1, config.batch):
        stop = min(start + config.batch, c + 1)
        if stop <= c:
            means, sizes = window_clusters(
                cond.members[start:stop], labels, features, clusters.means, n
            )  # (b, K, D), (b, K)
        else:  # the batch holding the last row: windows, then the slide's own condition
            means, sizes = window_clusters(
                cond.members[start:c], labels, features, clusters.means, n
            )
            means = np.concatenate([means, clusters.means[None]])  # (b, K, D)
            sizes = np.concatenate([sizes, clusters.sizes[None]])  # (b, K)
        ids = [f"window_{i}" for i in range(start, stop)]
        data = CohortData(
            slide_ids=ids, patient_ids=ids, projects=None, clusters=means,
            sizes=sizes.astype(np.float32), genes=None, expression=None,
            cluster_config=cluster_config_of(predictor), feature_attrs=dict(attrs),
        )  # fmt: skip
        with _quiet_calibration(quiet):
            arrays = predictor.predict_data(
                data, draws=config.draws, seed=config.seed + start, keep_draws=True
            )
        col = columns.apply(arrays.draws)  # (b, S, M)
        mean[start:stop] = col.mean(axis=1)  # (b, M)
        std[start:stop] = col.std(axis=1, ddof=1)  # (b, M)
    return mean, std


def _window_head(predictor, cond: Conditions, labels, features, clusters, columns,
                 slide_fn=head_log2) -> np.ndarray:  # fmt: skip
    """The read-out (C, M) of each window's condition (as the full run sees it) by
    ``slide_fn(predictor, means, sizes)`` (log2, (b, G)): the slide head or the tile head."""
    c = cond.members.shape[0]
    n = len(labels)
    out = np.empty((c, len(columns)), dtype=np.float64)  # (C, M)
    for start in range(0, c, 256):
        stop = min(start + 256, c)
        means, sizes = window_clusters(
            cond.members[start:stop], labels, features, clusters.means, n
        )  # (b, K, D), (b, K)
        out[start:stop] = slide_fn(predictor, means, sizes) @ columns.weights  # (b, M)
    return out


def _step(attrs: dict[str, Any]) -> float | None:
    for key in ("stride_level0", "patch_size_level0"):
        if attrs.get(key):
            return float(attrs[key])
    return None


def map_slide(
    predictor,
    features_path: str | Path,
    columns: MapColumns,
    config: MapConfig | None = None,
) -> SlideMap:
    """Map the ``columns`` over the tiles of one feature file.

    Parameters
    ----------
    predictor
        A loaded run (:class:`rnafm.predict.Predictor`): ``predict_data``, ``config.clusters``.
    features_path
        The slide's feature file (``features`` (N, D) and ``coords`` (N, 2)).
    columns
        The pathways and genes to map (:func:`rnafm.maps.names.resolve_columns`).
    config
        Window, lattice and draws.
    """
    from rnafm.features.clusters import load_clusters
    from rnafm.features.io import FeatureLayout, read_features

    config = config or MapConfig()
    path = Path(features_path)
    sf = read_features(path)
    if sf.layout is FeatureLayout.CLUSTERS or sf.coords is None:
        raise InputError(
            f"{path}: no per-tile features with coordinates (layout {sf.layout.value}); maps need "
            "tile features with 'coords', as `rnafm extract` writes them."
        )
    if sf.features.shape[1] != predictor.feature_dim:
        raise InputError(
            f"{path}: features have dimension {sf.features.shape[1]} but the run was trained on "
            f"{predictor.feature_dim}: use features from the run's encoder."
        )
    cl = load_clusters(path, cluster_config_of(predictor))
    labels = assign_clusters(sf.features, cl.means, cl.sizes)  # (N,)
    grid = tile_grid(sf.coords, _step(sf.attrs))
    feats = np.asarray(sf.features, dtype=np.float32)  # (N, D)
    method = config.method
    if method is MapMethod.BLEND and not has_tile_head(predictor):
        logger.info("%s: the run has no tile head; mapping with the local method", path)
        method = MapMethod.LOCAL
    if method is MapMethod.TILES and not has_tile_head(predictor):
        logger.info("%s: the run has no tile head; mapping with the readout method", path)
        method = MapMethod.READOUT
    if method is MapMethod.READOUT and not has_slide_head(predictor):
        logger.info("%s: the run has no slide head; mapping with the local method", path)
        method = MapMethod.LOCAL
    anchored = method in (MapMethod.TILES, MapMethod.READOUT)
    if anchored:  # the full run on a coarse lattice only: the anchors
        window_config = config.model_copy(update={"max_conditions": config.anchors})
    else:
        window_config = config
    cond = local_conditions(grid, labels, window_config)
    mean, std = _predict_windows(
        predictor, cond, labels, feats, cl, columns, config, sf.attrs
    )  # (C+1, M)
    n_cond = cond.members.shape[0]
    w = cond.weights[:, :, None]  # (N, 4, 1)
    if method in (MapMethod.TILES, MapMethod.BLEND):
        read, tile_logits = tile_head_scores(
            predictor, feats, grid, columns.weights, smooth=config.smooth
        )  # (N, M), (N,)
        slide_fn = tile_head_slide
    elif method is MapMethod.READOUT:
        read = tile_readout(
            predictor,
            feats,
            labels,
            grid,
            columns.weights,
            smooth=config.smooth,
            attention_power=config.attention_power,
            share=config.tile_share,
            slide=(cl.means, cl.sizes),
        )  # (N, M)
        slide_fn = head_log2
    if anchored or method is MapMethod.BLEND:
        if config.anchor is MapAnchor.WINDOWS:
            head = _window_head(predictor, cond, labels, feats, cl, columns, slide_fn)  # (C, M)
            read = read + ((mean[:n_cond] - head)[cond.rows] * w).sum(axis=1)  # (N, M)
        elif method is not MapMethod.READOUT:  # the map's tiles mix back to the run's bulk
            read = read + mixture_shift(read, tile_logits, mean[-1])[None, :]  # (N, M)
        else:
            head = slide_fn(predictor, cl.means[None], cl.sizes[None]) @ columns.weights  # (1, M)
            read = read + (mean[-1] - head[0])[None, :]  # (N, M)
    if anchored:
        scores = read
    else:
        scores = (mean[cond.rows] * w).sum(axis=1)  # (N, M)
        if method is MapMethod.BLEND:  # the local windows and the anchored tile head, half each
            scores = 0.5 * (scores + read)  # (N, M)
    spread = (std[cond.rows] * w).sum(axis=1)  # (N, M)
    logger.info(
        "%s: %d tiles, %d windows (stride %d)", sf.slide_id, len(labels), n_cond, cond.stride
    )
    attrs = {
        "slide_id": sf.slide_id,
        "patch_size": sf.attrs.get("patch_size"),
        "patch_size_level0": sf.attrs.get("patch_size_level0"),
        "stride_level0": grid.step,
        "level0_mpp": sf.attrs.get("level0_mpp"),
        "n_conditions": int(n_cond),
        "lattice_stride": int(cond.stride),
        "method": method.value,
    }
    return SlideMap(
        slide_id=sf.slide_id,
        coords=sf.coords.astype(np.int64),
        scores=scores.astype(np.float32),
        std=spread.astype(np.float32),
        names=list(columns.names),
        kinds=list(columns.kinds),
        bulk=mean[-1],
        bulk_std=std[-1],
        clusters=labels.astype(np.int64),
        attrs={k_: v for k_, v in attrs.items() if v is not None},
    )
