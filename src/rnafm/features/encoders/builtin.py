"""``builtin``: a weight-free morphology descriptor of H&E tiles, vectorised over a batch.

Per tile, at about 1 micron per pixel (tiles are resized to 128 x 128 px):

- colour deconvolution (Ruifrok & Johnston stain vectors) into haematoxylin (H), eosin (E)
  and residual optical densities; tissue and H-/E-dominant pixel fractions;
- mean and standard deviation of H, E and RGB, and 8-bin histograms of H and E;
- nucleus-like blobs: connected components of the smoothed H channel above a fixed optical
  density, their density, mean and spread of area, covered fraction and clumps;
- texture: grey-level co-occurrence (8 levels, distances 1 and 3, horizontal and vertical)
  contrast, homogeneity, energy and correlation, and gradient magnitude statistics.

Every feature is scaled to roughly [0, 1] so Euclidean distances (k-means) weigh them evenly.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from rnafm.features.encoders.base import EncoderBundle

__all__ = ["BuiltinEncoder", "FEATURE_NAMES", "builtin_features", "builtin_transform", "TILE_SIZE"]

TILE_SIZE = 128
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)  # od (.., 3) @ this -> hed
_LOG_LUT = (-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
_HIST_BINS = 8
_H_RANGE, _E_RANGE = 1.2, 0.8  # optical density spanned by the histograms
_NUCLEUS_OD = 0.45  # smoothed H optical density of nuclear pixels
_NUCLEUS_AREA = (10, 300)  # blob area in pixels (~um^2 at 1 um/px) counted as a nucleus
_GLCM_LEVELS = 8
_GLCM_DISTANCES = (1, 3)
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")

FEATURE_NAMES: tuple[str, ...] = (
    ("tissue_fraction", "h_dominant_fraction", "e_dominant_fraction")
    + ("h_mean", "h_std", "e_mean", "e_std", "d_mean", "d_std")
    + ("r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std")
    + tuple(f"h_hist_{i}" for i in range(_HIST_BINS))
    + tuple(f"e_hist_{i}" for i in range(_HIST_BINS))
    + ("nuclei_density", "nuclei_area_mean", "nuclei_area_std", "nuclei_fraction")
    + ("nuclei_h_mean", "clump_fraction")
    + tuple(f"glcm_{p}_d{d}" for d in _GLCM_DISTANCES for p in _GLCM_PROPS)
    + ("gradient_mean", "gradient_std")
)


def builtin_transform(tile: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` tile -> uint8 tensor ``(128, 128, 3)`` (box-filter resize)."""
    h, w = tile.shape[:2]
    if (h, w) != (TILE_SIZE, TILE_SIZE):
        if (h, w) == (2 * TILE_SIZE, 2 * TILE_SIZE):  # the common 256-px case: 2 x 2 box mean
            t = tile.astype(np.uint16)
            tile = (
                (t[0::2, 0::2] + t[1::2, 0::2] + t[0::2, 1::2] + t[1::2, 1::2] + 2) >> 2
            ).astype(np.uint8)
        else:
            from PIL import Image

            tile = np.asarray(
                Image.fromarray(tile).resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BOX)
            )
    if not tile.flags.writeable or not tile.flags.c_contiguous:
        tile = np.array(tile)
    return torch.from_numpy(tile)


def _glcm_features(grey: np.ndarray) -> np.ndarray:
    """GLCM properties per tile; ``grey`` uint8 ``(B, S, S)`` levels in [0, _GLCM_LEVELS)."""
    b = grey.shape[0]
    lv = _GLCM_LEVELS
    levels = np.arange(lv, dtype=np.float32)
    ii, jj = np.meshgrid(levels, levels, indexing="ij")  # (L, L)
    out = []
    base = (np.arange(b, dtype=np.int64) * lv * lv)[:, None, None]  # (B, 1, 1)
    for d in _GLCM_DISTANCES:
        codes = np.concatenate(
            [
                (base + grey[:, :, :-d].astype(np.int64) * lv + grey[:, :, d:]).reshape(b, -1),
                (base + grey[:, :-d, :].astype(np.int64) * lv + grey[:, d:, :]).reshape(b, -1),
            ],
            axis=1,
        )  # (B, 2 S (S - d))
        counts = np.bincount(codes.ravel(), minlength=b * lv * lv).reshape(b, lv, lv)
        p = counts + counts.transpose(0, 2, 1)  # symmetric (B, L, L)
        p = p / p.sum(axis=(1, 2), keepdims=True)
        contrast = (p * (ii - jj) ** 2).sum(axis=(1, 2)) / (lv - 1) ** 2
        homogeneity = (p / (1.0 + (ii - jj) ** 2)).sum(axis=(1, 2))
        energy = np.sqrt((p**2).sum(axis=(1, 2)))
        mu = (p * ii).sum(axis=(1, 2))  # (B,)
        var = (p * (ii - mu[:, None, None]) ** 2).sum(axis=(1, 2))
        cov = (p * (ii - mu[:, None, None]) * (jj - mu[:, None, None])).sum(axis=(1, 2))
        corr = np.where(var > 1e-9, cov / np.maximum(var, 1e-9), 1.0)
        out.append(np.stack([contrast, homogeneity, energy, (corr + 1) / 2], axis=1))
    return np.concatenate(out, axis=1)  # (B, 4 * n_distances)


def _nuclei_features(h: np.ndarray) -> np.ndarray:
    """Blob statistics of the H channel; ``h`` float32 ``(B, S, S)`` optical density."""
    b, s, _ = h.shape
    smooth = ndimage.uniform_filter(h, size=(1, 3, 3))
    fg = smooth > _NUCLEUS_OD  # (B, S, S)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # never connect across tiles
    labels, n = ndimage.label(fg, structure=structure)
    lab_fg = labels[fg]  # labels of foreground pixels only
    areas = np.bincount(lab_fg, minlength=n + 1)[1:].astype(np.float32)  # (n,)
    h_sum = np.bincount(lab_fg, weights=h[fg], minlength=n + 1)[1:]  # (n,)
    # labels are numbered in raster order, so each tile owns a contiguous label range
    last = np.maximum.accumulate(labels.reshape(b, -1).max(axis=1))  # (B,)
    first = np.concatenate([[0], last[:-1]])
    owner = np.repeat(np.arange(b), last - first)  # (n,) tile of each blob
    nucleus = (areas >= _NUCLEUS_AREA[0]) & (areas <= _NUCLEUS_AREA[1])
    clump = areas > _NUCLEUS_AREA[1]
    cnt = np.bincount(owner[nucleus], minlength=b).astype(np.float32)
    a_sum = np.bincount(owner[nucleus], weights=areas[nucleus], minlength=b)
    a_sq = np.bincount(owner[nucleus], weights=areas[nucleus] ** 2, minlength=b)
    hn_sum = np.bincount(owner[nucleus], weights=h_sum[nucleus], minlength=b)
    clump_px = np.bincount(owner[clump], weights=areas[clump], minlength=b)
    safe = np.maximum(cnt, 1.0)
    a_mean = a_sum / safe
    a_std = np.sqrt(np.maximum(a_sq / safe - a_mean**2, 0.0))
    px = float(s * s)
    return np.stack(
        [
            np.minimum(cnt / (px / 400.0), 1.0),  # 1.0 = one nucleus per 20 x 20 px
            a_mean / _NUCLEUS_AREA[1],
            a_std / _NUCLEUS_AREA[1],
            a_sum / px,
            np.where(a_sum > 0, hn_sum / np.maximum(a_sum, 1.0), 0.0) / _H_RANGE,
            clump_px / px,
        ],
        axis=1,
    )  # (B, 6)


def _histograms(values: np.ndarray, top: float) -> np.ndarray:
    """Normalised 8-bin histograms per tile of ``values`` ``(B, P)`` over ``[0, top]``."""
    b = values.shape[0]
    q = np.clip((values * (_HIST_BINS / top)).astype(np.int64), 0, _HIST_BINS - 1)
    q += (np.arange(b, dtype=np.int64) * _HIST_BINS)[:, None]
    counts = np.bincount(q.ravel(), minlength=b * _HIST_BINS).reshape(b, _HIST_BINS)
    return counts / values.shape[1]


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row means and standard deviations of ``x`` ``(B, P)``."""
    m = x.mean(axis=1)
    return m, np.sqrt(np.maximum(np.einsum("bp,bp->b", x, x) / x.shape[1] - m * m, 0.0))


def builtin_features(tiles: np.ndarray) -> np.ndarray:
    """Morphology descriptors of a batch of tiles.

    Parameters
    ----------
    tiles:
        uint8 ``(B, S, S, 3)`` RGB tiles (``S = 128`` after :func:`builtin_transform`; S even).

    Returns
    -------
    numpy.ndarray
        float32 ``(B, len(FEATURE_NAMES))``.
    """
    b, s = tiles.shape[0], tiles.shape[1]
    planes = np.ascontiguousarray(tiles.reshape(b, -1, 3).transpose(2, 0, 1))  # (3, B, P) uint8
    od = [_LOG_LUT[c] for c in planes]  # 3 x (B, P) optical density
    m = _HED_FROM_RGB
    hch, ech, dch = (
        np.maximum(od[0] * m[0, k] + od[1] * m[1, k] + od[2] * m[2, k], 0.0) for k in range(3)
    )  # (B, P) each
    tissue = (od[0] + od[1] + od[2]) > 0.25  # (B, P)
    n_tissue = np.maximum(tissue.sum(axis=1), 1)
    h_gt_e = hch > ech
    h_dom = (tissue & h_gt_e).sum(axis=1) / n_tissue
    e_dom = (tissue & ~h_gt_e).sum(axis=1) / n_tissue
    hm, hs = _mean_std(hch)
    em, es = _mean_std(ech)
    dm, ds = _mean_std(dch)
    stats = np.stack(
        [
            tissue.mean(axis=1),
            h_dom,
            e_dom,
            hm / _H_RANGE,
            hs / _H_RANGE,
            em / _E_RANGE,
            es / _E_RANGE,
            dm,
            ds,
        ],
        axis=1,
    )  # (B, 9)
    rgbf = planes.astype(np.float32) * np.float32(1 / 255)  # (3, B, P)
    ms = [_mean_std(c) for c in rgbf]
    colour = np.stack([x[0] for x in ms] + [2 * x[1] for x in ms], axis=1)  # (B, 6)
    hists = np.concatenate(
        [_histograms(hch, _H_RANGE), _histograms(ech, _E_RANGE)], axis=1
    )  # (B, 16)
    nuclei = _nuclei_features(hch.reshape(b, s, s))  # (B, 6)
    grey = (0.299 * rgbf[0] + 0.587 * rgbf[1] + 0.114 * rgbf[2]).reshape(b, s, s)  # (B, S, S)
    half = grey.reshape(b, s // 2, 2, s // 2, 2).mean(axis=(2, 4))  # (B, S/2, S/2)
    glcm = _glcm_features(np.minimum((half * _GLCM_LEVELS).astype(np.uint8), _GLCM_LEVELS - 1))
    gx = np.diff(grey, axis=2)[:, :-1, :]  # (B, S-1, S-1)
    gy = np.diff(grey, axis=1)[:, :, :-1]
    gm, gs = _mean_std(np.sqrt(gx * gx + gy * gy).reshape(b, -1))
    gradient = np.stack([4 * gm, 4 * gs], axis=1)  # (B, 2)
    feats = np.concatenate([stats, colour, hists, nuclei, glcm, gradient], axis=1)
    return feats.astype(np.float32)  # (B, D)


class BuiltinEncoder(torch.nn.Module):
    """``torch.nn.Module`` wrapper: uint8 ``(B, 128, 128, 3)`` -> float32 ``(B, D)``."""

    dim = len(FEATURE_NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = builtin_features(x.detach().cpu().numpy())  # (B, D)
        return torch.from_numpy(feats).to(x.device)


def build_builtin(*, weights: object = None, arch: str | None = None) -> EncoderBundle:
    """The weight-free morphology descriptor (``weights`` is ignored)."""
    return EncoderBundle(BuiltinEncoder(), builtin_transform, torch.float32, "builtin-v1")
