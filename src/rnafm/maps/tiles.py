"""Per-tile maps from the run's tile head (:class:`rnafm.model.tile_head.TileHead`).

The tile head models a slide's bulk RNA as the weighted mixture of its tissue's expression and
was fitted to the training slides' bulk, so its profile h(x) of one tile is that tile's own
expression on the log2 scale of the bulk. The map of a column (a gene, or a pathway's mean
log2 expression) is h of every tile, smoothed over ``smooth`` tiles, then shifted so the slide
as a whole agrees with the run: the map's tiles, mixed back with the head's tile weights (on
the linear scale, as RNA mixes), give the run's bulk prediction of that column
(:func:`mixture_shift`; see :func:`rnafm.maps.compute.map_slide`). The bulk value therefore lies
inside the map's range, and tissue that carries more of a programme sits above it.
"""

from __future__ import annotations

import numpy as np

from rnafm.maps.grid import TileGrid
from rnafm.maps.readout import smoothing_matrix

__all__ = ["has_tile_head", "tile_head_scores", "tile_head_slide", "mixture_shift"]


def has_tile_head(predictor) -> bool:
    """Whether the run has a fitted tile head (runs trained with ``fit_tile_head``)."""
    return getattr(predictor, "tile_head", None) is not None


def tile_head_scores(
    predictor, features: np.ndarray, grid: TileGrid, weights: np.ndarray, *, smooth: float,
    batch: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The tile head's smoothed per-tile columns, float64 (N, M), and its tile weight logits,
    float64 (N,).

    Parameters
    ----------
    predictor
        A loaded run with a tile head (:func:`has_tile_head`).
    features
        float32 (N, D) tile features.
    grid
        The tiles' positions.
    weights
        float64 (G, M) the map columns.
    smooth
        Gaussian sigma in tiles (0: none).
    batch
        Tiles per call to the head.
    """
    import torch

    head = predictor.tile_head
    n = len(features)
    out = np.empty((n, weights.shape[1]), dtype=np.float64)  # (N, M)
    logits = np.empty(n, dtype=np.float64)  # (N,)
    with torch.no_grad():
        for start in range(0, n, batch):
            x = torch.as_tensor(np.asarray(features[start : start + batch], dtype=np.float32))
            h, a = head(x)  # (b, G), (b,)
            out[start : start + len(x)] = h.double().numpy() @ weights  # (b, M)
            logits[start : start + len(x)] = a.double().numpy()
    return np.asarray(smoothing_matrix(grid, smooth) @ out), logits  # (N, M), (N,)


def mixture_shift(scores: np.ndarray, logits: np.ndarray, bulk: np.ndarray) -> np.ndarray:
    """Per column (M,): ``bulk`` minus the log2 mixture of the tiles' ``scores`` (N, M) with
    weights softmax(``logits`` (N,)); adding it makes the map mix back to the bulk."""
    logw = logits - logits.max()
    logw = logw - np.log(np.exp(logw).sum())  # (N,) log softmax
    z = logw[:, None] + scores * np.log(2.0)  # (N, M)
    top = z.max(axis=0)  # (M,)
    mix = (top + np.log(np.exp(z - top).sum(axis=0))) / np.log(2.0)  # (M,)
    return np.asarray(bulk, dtype=np.float64) - mix


def tile_head_slide(predictor, means: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The tile head's log2 mixture float64 (n, G) of slides given as clusters (n, K, D) with
    their sizes (n, K)."""
    import torch

    with torch.no_grad():
        est = predictor.tile_head.slide_log2(
            torch.as_tensor(np.asarray(means, dtype=np.float32)),
            torch.as_tensor(np.asarray(sizes, dtype=np.float32)),
        )  # (n, G)
    return est.double().numpy()
