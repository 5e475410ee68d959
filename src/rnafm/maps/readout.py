"""Per-tile read-out of a run's slide head, anchored to the run's full prediction.

A trained run's image path (cluster tokens, gated-attention pooling, slide head) is an
attention-MIL regressor of a slide's expression; it is the part of the run that maps image
features to expression without sampling. The read-out asks it about each tile: by default how
the slide's prediction changes when a share of its pooled tissue is made like the tile
(:func:`tile_secants`), or (share 1) about a slide made of that one tile (one cluster holding
all the slide's tiles). Its answers are smoothed over
the neighbouring tiles (a Gaussian of ``smooth`` tiles), which averages the noise of single tiles
without the border blur of a wide window.

The slide head is only one component of the run's prediction (the flow and the ridge prior are
the others), so the read-out is anchored: windows on a coarse lattice are predicted with the full
run (flow draws), and each tile gets its read-out plus the interpolated difference between the
full prediction and the head's read-out of those windows. A slide that looks the same
everywhere therefore maps to the run's own prediction for it, on its log2 scale, and the draws
of the windows give the uncertainty map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnafm.maps.grid import TileGrid

__all__ = [
    "has_slide_head",
    "head_log2",
    "tile_attention_logits",
    "attention_gate",
    "tile_conditions",
    "tile_secants",
    "smoothing_matrix",
    "tile_readout",
]


def _model_of(predictor) -> Any:
    return getattr(predictor, "model", None)


def has_slide_head(predictor) -> bool:
    """Whether the run can be read out per tile (a slide head, or a ``slide_head_log2`` hook)."""
    if callable(getattr(predictor, "slide_head_log2", None)):
        return True
    model = _model_of(predictor)
    return model is not None and getattr(model, "slide_head", None) is not None


def head_log2(predictor, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The slide head's estimate on the log2(x+1) scale, float64 (n, G).

    Parameters
    ----------
    predictor
        A loaded run (:class:`rnafm.predict.Predictor`), or any object with a
        ``slide_head_log2(clusters, sizes)`` method.
    clusters, sizes
        float32 (n, K, D) conditions and (n, K) their sizes.
    """
    hook = getattr(predictor, "slide_head_log2", None)
    if callable(hook):
        return np.asarray(hook(clusters, sizes), dtype=np.float64)  # (n, G)
    from rnafm.flow.draws import slide_estimates

    z = slide_estimates(predictor.model, clusters, sizes, device=predictor.device)  # (n, G)
    norm = predictor.targets.norm
    return np.asarray(z, dtype=np.float64) * norm.std + norm.mean  # (n, G)


def _tile_tokens(predictor, image, clusters: np.ndarray, sizes: np.ndarray, slots: np.ndarray):
    """Each one-tile condition's token in its slot, a tensor (b, H) on the run's device.

    ``clusters``, ``sizes`` are :func:`tile_conditions` (b, K', D), (b, K'); call under
    ``torch.no_grad()``.
    """
    import torch

    device = getattr(predictor, "device", torch.device("cpu"))
    dtype = next(image.parameters()).dtype
    c = torch.as_tensor(np.asarray(clusters), device=device, dtype=dtype)  # (b, K', D)
    s = torch.as_tensor(np.asarray(sizes), device=device, dtype=dtype)  # (b, K')
    _, tokens, _ = image(c, s)  # (b, K', H)
    rows = torch.arange(len(slots), device=device)
    return tokens[rows, torch.as_tensor(slots, device=device)]  # (b, H)


def tile_attention_logits(
    predictor, clusters: np.ndarray, sizes: np.ndarray, slots: np.ndarray
) -> np.ndarray | None:
    """The attention pooling's logits (b, P) of each one-tile condition's tile, or None.

    ``clusters``, ``sizes`` are :func:`tile_conditions` (b, K', D), (b, K'); ``slots`` (b,) the
    slot holding the tile. None when the run has no gated attention pooling (``pool_heads`` 0)
    or is not a torch model.
    """
    image = getattr(_model_of(predictor), "image", None)
    pool = getattr(image, "pool", None)
    if pool is None:
        return None
    import torch

    with torch.no_grad():
        tile = _tile_tokens(predictor, image, clusters, sizes, slots)  # (b, H)
        logits = pool.logits(tile[:, None, :])[:, 0]  # (b, P)
    return logits.float().cpu().numpy().astype(np.float64)


def attention_gate(logits: np.ndarray, power: float) -> tuple[np.ndarray, np.ndarray]:
    """Relative attention of each tile and its gate ``min(1, r) ** power``, both float64 (N,).

    ``r`` is the tile's softmax weight over the slide's tiles times N (1 for every tile when the
    pooling listens to all alike), averaged over the pooling heads of ``logits`` (N, P).
    """
    lg = np.asarray(logits, dtype=np.float64)  # (N, P)
    w = np.exp(lg - lg.max(axis=0, keepdims=True))  # (N, P)
    rel = (w / w.sum(axis=0, keepdims=True)).mean(axis=1) * len(lg)  # (N,)
    return rel, np.minimum(rel, 1.0) ** power


def _indexed(predictor) -> bool:
    """True when the run embeds the cluster index (a tile must then sit in its cluster's slot)."""
    image = getattr(_model_of(predictor), "image", None)
    return getattr(image, "index_embedding", None) is not None


def tile_conditions(
    features: np.ndarray, labels: np.ndarray, n_clusters: int, n_total: int, *, indexed: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One-tile slides: each tile as the only cluster, holding ``n_total`` tiles.

    Parameters
    ----------
    features
        float32 (b, D) tile features.
    labels
        int64 (b,) slide cluster of each tile (its slot when ``indexed``).
    n_clusters
        K of the run.
    n_total
        Tiles of the slide: the size the run was trained on.
    indexed
        Put each tile in its own cluster's slot of K (runs with a cluster-index embedding);
        otherwise a single slot (K = 1), which is exact for runs without one.

    Returns
    -------
    clusters, sizes
        float32 (b, K', D) and (b, K'); K' = K when indexed, else 1.
    """
    b, d = features.shape
    if not indexed:
        sizes = np.full((b, 1), float(n_total), dtype=np.float32)  # (b, 1)
        return features[:, None, :].astype(np.float32), sizes  # (b, 1, D)
    clusters = np.zeros((b, n_clusters, d), dtype=np.float32)  # (b, K, D)
    sizes = np.zeros((b, n_clusters), dtype=np.float32)  # (b, K)
    rows = np.arange(b)
    clusters[rows, labels] = features
    sizes[rows, labels] = float(n_total)
    return clusters, sizes


def tile_secants(
    predictor,
    features: np.ndarray,
    labels: np.ndarray,
    slide: tuple[np.ndarray, np.ndarray],
    weights: np.ndarray,
    *,
    share: float,
    batch: int = 2048,
) -> np.ndarray | None:
    """Each tile's read-out as a secant of the slide head from the slide itself, float64 (N, M).

    The slide's pooled tokens ``p`` (its cluster tokens pooled by the run's attention, one row
    per pooling head) are moved a ``share`` of the way to the tile's token ``t`` (the tile
    alone, as in :func:`tile_conditions`), and the head's change is scaled back to a whole
    step: ``f(p) + (f(p + share * (t - p)) - f(p)) / share`` on the log2 scale of the columns,
    where ``f`` is the slide head after pooling. ``share`` 1 is the one-tile read-out (a
    slide made only of tiles like this one); a small share asks what a little more tissue
    like this tile would do to this slide, which stays closer to the slides the head was
    trained on. None when the run's network is not at hand (a ``slide_head_log2`` hook).

    Parameters
    ----------
    slide
        float32 (K, D) cluster means and (K,) sizes of the whole slide.
    share
        In (0, 1].
    """
    model = _model_of(predictor)
    image = getattr(model, "image", None)
    if image is None or getattr(model, "slide_head", None) is None:
        return None
    if not hasattr(image, "pool_tokens") or not hasattr(predictor, "targets"):
        return None
    import torch

    device = getattr(predictor, "device", torch.device("cpu"))
    dtype = next(image.parameters()).dtype
    norm = predictor.targets.norm
    indexed = _indexed(predictor)
    k = int(getattr(predictor, "n_clusters", 0) or labels.max() + 1)

    def head(pooled):  # (b, P, H) -> (b, M) log2 scale
        z = model.slide_head(image.embed_pooled(pooled)).float().cpu().numpy()  # (b, G)
        return (z.astype(np.float64) * norm.std + norm.mean) @ weights

    def tensor(a):
        return torch.as_tensor(np.asarray(a), device=device, dtype=dtype)

    n = len(features)
    out = np.empty((n, weights.shape[1]), dtype=np.float64)  # (N, M)
    with torch.no_grad():
        _, tokens, bias = image(tensor(slide[0][None]), tensor(slide[1][None]))  # (1, K, H)
        pooled = image.pool_tokens(tokens, bias)  # (1, P, H)
        base = head(pooled)  # (1, M)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            c, s = tile_conditions(features[start:stop], labels[start:stop], k, n, indexed=indexed)
            slots = labels[start:stop] if indexed else np.zeros(stop - start, dtype=np.int64)
            tile = _tile_tokens(predictor, image, c, s, slots)  # (b, H)
            moved = pooled + share * (tile[:, None, :] - pooled)  # (b, P, H)
            out[start:stop] = base + (head(moved) - base) / share
    return out


def smoothing_matrix(grid: TileGrid, sigma: float):
    """Row-normalised Gaussian weights between tiles (sparse (N, N)), cut at 3 sigma.

    Holes and tissue edges are handled by the normalisation: a tile averages the tiles that
    exist around it. ``sigma`` 0 gives the identity.
    """
    from scipy import sparse
    from scipy.spatial import cKDTree

    n = len(grid.pos)
    if sigma <= 0 or n == 0:
        return sparse.identity(n, format="csr")
    pairs = cKDTree(grid.pos).query_pairs(3.0 * sigma, output_type="ndarray")  # (P, 2)
    i = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])  # (2P+N,)
    j = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])  # (2P+N,)
    d2 = ((grid.pos[i] - grid.pos[j]) ** 2).sum(axis=1)  # (2P+N,)
    w = sparse.csr_matrix((np.exp(-d2 / (2.0 * sigma**2)), (i, j)), shape=(n, n))  # (N, N)
    row = np.asarray(w.sum(axis=1)).ravel()  # (N,)
    return sparse.diags(1.0 / row) @ w  # (N, N)


def tile_readout(
    predictor,
    features: np.ndarray,
    labels: np.ndarray,
    grid: TileGrid,
    weights: np.ndarray,
    *,
    smooth: float,
    attention_power: float = 0.0,
    share: float = 1.0,
    slide: tuple[np.ndarray, np.ndarray] | None = None,
    batch: int = 2048,
) -> np.ndarray:
    """The smoothed per-tile read-out of the slide head for the map columns, float64 (N, M).

    With ``share`` < 1 and the slide's clusters given, each tile is read out as a secant from
    the slide (:func:`tile_secants`); otherwise as a slide of that tile alone.

    With ``attention_power`` > 0 and a run with attention pooling, each tile's read-out is
    first pulled towards the attention-weighted mean read-out of the slide by
    :func:`attention_gate`: a tile the pooling listens to less than an average tile (adjacent
    normal tissue outside the RNA sample, say) carries less of the evidence the head learned
    from, and its read-out (the head asked about a slide made of such tiles only, which it was
    never trained on) is the least reliable.

    Parameters
    ----------
    predictor
        A loaded run with a slide head (:func:`has_slide_head`).
    features
        float32 (N, D) tile features.
    labels
        int64 (N,) slide cluster of each tile.
    grid
        The tiles' positions.
    weights
        float64 (G, M) the map columns (:class:`rnafm.maps.names.MapColumns` ``weights``).
    smooth
        Gaussian sigma in tiles.
    attention_power
        Sharpness of the attention gate; 0 turns it off.
    share
        The share of the slide's pooled tissue a tile stands in for (1: the one-tile read-out).
    slide
        The slide's (K, D) cluster means and (K,) sizes, needed for ``share`` < 1.
    batch
        Tiles per call to the head.
    """
    n = len(features)
    indexed = _indexed(predictor)
    k = int(getattr(predictor, "n_clusters", 0) or labels.max() + 1)
    out = None
    if share < 1.0 and slide is not None:
        out = tile_secants(predictor, features, labels, slide, weights, share=share, batch=batch)
    one_tile = out is None
    if one_tile:
        out = np.empty((n, weights.shape[1]), dtype=np.float64)  # (N, M)
    logits: list[np.ndarray] | None = [] if attention_power > 0 else None
    if one_tile or logits is not None:
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            c, s = tile_conditions(
                features[start:stop], labels[start:stop], k, n, indexed=indexed
            )  # (b, K', D), (b, K')
            if one_tile:
                out[start:stop] = head_log2(predictor, c, s) @ weights  # (b, M)
            if logits is not None:
                slots = labels[start:stop] if indexed else np.zeros(stop - start, dtype=np.int64)
                lg = tile_attention_logits(predictor, c, s, slots)  # (b, P) or None
                logits = None if lg is None else logits + [lg]
    if logits:
        rel, gate = attention_gate(np.concatenate(logits), attention_power)  # (N,), (N,)
        level = (rel @ out) / rel.sum()  # (M,) the attention-weighted slide level
        out = level + gate[:, None] * (out - level)  # (N, M)
    return np.asarray(smoothing_matrix(grid, smooth) @ out)  # (N, M)
