"""Where each tissue type lies on a synthetic slide: a coarse grid of :class:`Label` values.

A slide is one tissue piece (an irregular blob) on glass. A side of it, covering a share
``adjacent_fraction`` of the tissue, is adjacent normal tissue (glands and smooth muscle) that is not
part of the RNA sample. The rest is the sampled tumour region, split into tissue types following
smooth random fields so that the area of each type matches the slide's target composition exactly
(to one grid cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rnafm.synth.config import ADJACENT_LABELS, SAMPLED_LABELS, Label

__all__ = ["CELL_UM", "SlideLayout", "cell_px", "layout_slide", "label_targets"]

CELL_UM = 16.0  # side of one label-grid cell in microns


def cell_px(mpp: float) -> int:
    """Level-0 pixels per label-grid cell at ``mpp`` microns per pixel."""
    return max(4, round(CELL_UM / mpp))


# Smoothness (grid cells) of each sampled type's random field: nests, aggregates, sheets.
_FIELD_SIGMA = {
    Label.TUMOUR: 2.2,
    Label.TUMOUR_INFILTRATED: 2.2,
    Label.LYMPHOCYTE: 1.3,
    Label.STROMA: 1.8,
    Label.NECROSIS: 2.6,
    Label.NORMAL_EPITHELIUM: 2.0,
}


@dataclass
class SlideLayout:
    """The label grid of one slide and its realised composition."""

    labels: np.ndarray  # uint8 (gh, gw) Label values, one per cell_px x cell_px block
    adjacent_fraction: float  # realised share of tissue that is adjacent normal

    def fractions(self) -> np.ndarray:
        """Share of the tissue area under each :class:`Label` (index = label value; background 0)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(Label)).astype(np.float64)
        counts[Label.BACKGROUND] = 0.0
        return counts / max(counts.sum(), 1.0)

    def sampled_fractions(self) -> np.ndarray:
        """Share of the sampled (tumour-region) area under each label; adjacent labels are 0."""
        frac = self.fractions()
        frac[list(ADJACENT_LABELS)] = 0.0
        return frac / max(frac.sum(), 1e-12)


def label_targets(composition: np.ndarray, infiltration: float) -> np.ndarray:
    """Target area share of each sampled label from cell-type proportions (T,) and infiltration.

    A share ``infiltration`` of the lymphocytes sits inside tumour nests: infiltrated nests are
    half tumour, half lymphocytes by area, so the amount of each cell type on the slide does not
    depend on ``infiltration`` -- only whether the two types are co-located does.
    """
    tumour, lymph, stroma, necrosis, normal = composition
    inside = min(infiltration * lymph, tumour)
    return np.array([tumour - inside, 2.0 * inside, lymph - inside, stroma, necrosis, normal])


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / max(field.std(), 1e-9)


def _counts(targets: np.ndarray, n: int) -> np.ndarray:
    """Integer cell counts summing to ``n`` closest to ``targets * n`` (largest remainders)."""
    raw = targets / targets.sum() * n
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(counts - raw)[: n - counts.sum()]] += 1
    return counts


def _assign(fields: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label index (M,) for M cells: exactly the target share per label, following the fields.

    Labels are placed one at a time in random order; each takes the free cells where its field
    most exceeds the best field of the labels still to place, so regions stay smooth blobs.
    """
    n = fields.shape[1]
    counts = _counts(targets, n)
    out = np.full(n, -1, dtype=np.int64)
    todo = [int(k) for k in rng.permutation(len(targets)) if counts[k] > 0]
    free = np.arange(n)
    for pos, k in enumerate(todo):
        if pos == len(todo) - 1:
            out[free] = k
            break
        rest = [j for j in todo[pos + 1 :]]
        score = fields[k, free] - fields[rest][:, free].max(axis=0)
        take = np.argsort(-score, kind="stable")[: counts[k]]
        out[free[take]] = k
        free = np.delete(free, take)
    return out


def layout_slide(
    width: int,
    height: int,
    *,
    mpp: float,
    composition: np.ndarray,
    infiltration: float,
    adjacent_fraction: float,
    rng: np.random.Generator,
) -> SlideLayout:
    """Draw the label grid of one slide.

    Parameters
    ----------
    width, height
        Level-0 size in pixels.
    mpp
        Microns per level-0 pixel (sets the grid cell size, :func:`cell_px`).
    composition
        (5,) cell-type proportions of the sampled region (tumour, lymphocyte, stroma, necrosis,
        normal epithelium).
    infiltration
        Share of the lymphocytes drawn inside tumour nests (see :func:`label_targets`).
    adjacent_fraction
        Share of the tissue that is adjacent normal tissue.
    rng
        Random generator.
    """
    cell = cell_px(mpp)
    gh, gw = -(-height // cell), -(-width // cell)
    yy, xx = np.mgrid[0:gh, 0:gw]
    yn, xn = (yy + 0.5) / gh, (xx + 0.5) / gw
    cy, cx = rng.uniform(0.45, 0.55, 2)
    ry, rx = rng.uniform(0.36, 0.44, 2)
    prior = 1.0 - ((xn - cx) / rx) ** 2 - ((yn - cy) / ry) ** 2
    tissue = prior + 0.35 * _smooth_noise((gh, gw), max(gw, gh) / 10.0, rng) > 0
    tissue = ndimage.binary_opening(tissue, iterations=1)
    labels = np.zeros((gh, gw), dtype=np.uint8)
    if not tissue.any():  # degenerate tiny slide: fill the centre
        tissue[gh // 4 : -(-3 * gh // 4), gw // 4 : -(-3 * gw // 4)] = True

    theta = rng.uniform(0, 2 * np.pi)
    proj = xn * np.cos(theta) + yn * np.sin(theta) + 0.05 * _smooth_noise((gh, gw), 3.0, rng)
    adjacent = np.zeros_like(tissue)
    if adjacent_fraction > 0:
        cut = np.quantile(proj[tissue], 1.0 - adjacent_fraction)
        adjacent = tissue & (proj > cut)
    sampled = tissue & ~adjacent

    targets = label_targets(np.asarray(composition, dtype=np.float64), float(infiltration))
    targets = targets / targets.sum()
    fields = np.stack([_smooth_noise((gh, gw), _FIELD_SIGMA[lab], rng) for lab in SAMPLED_LABELS])
    lab_idx = _assign(fields[:, sampled], targets, rng)
    labels[sampled] = np.asarray([int(v) for v in SAMPLED_LABELS], dtype=np.uint8)[lab_idx]

    if adjacent.any():
        adj_fields = np.stack([_smooth_noise((gh, gw), 2.5, rng) for _ in ADJACENT_LABELS])
        adj_idx = _assign(adj_fields[:, adjacent], np.array([0.5, 0.5]), rng)
        labels[adjacent] = np.asarray([int(v) for v in ADJACENT_LABELS], dtype=np.uint8)[adj_idx]
    realised = float(adjacent.sum()) / max(float(tissue.sum()), 1.0)
    return SlideLayout(labels=labels, adjacent_fraction=realised)
