"""Where each tissue type lies on a synthetic slide: a coarse grid of :class:`Label` values.

A slide is one tissue piece (an irregular blob) on glass. A side of it, covering a share
``adjacent_fraction`` of the tissue, is adjacent normal tissue (glands and smooth muscle) that is not
part of the RNA sample. The rest is the sampled tumour region, split into tissue types by a biased
argmax over smooth random fields whose biases are tuned until the area of each type matches the
slide's target composition.
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


def _biased_argmax(
    fields: np.ndarray, targets: np.ndarray, *, iters: int = 80
) -> tuple[np.ndarray, np.ndarray]:
    """Argmax over ``fields`` (L, M) with per-field biases tuned so label shares match ``targets``."""
    live = targets > 0
    bias = np.where(live, np.log(np.maximum(targets, 1e-9)) * 2.0, -np.inf)
    best = np.zeros(fields.shape[1], dtype=np.int64)
    best_err = np.inf
    n = fields.shape[1]
    for _ in range(iters):
        lab = np.argmax(fields + bias[:, None], axis=0)  # (M,)
        frac = np.bincount(lab, minlength=len(targets)) / n
        err = np.abs(frac - targets).sum()
        if err < best_err:
            best, best_err = lab, err
        if err < 0.5 / n * len(targets):
            break
        bias[live] += 0.8 * (np.log(targets[live] + 1e-3) - np.log(frac[live] + 1e-3))
    return best, np.bincount(best, minlength=len(targets)) / n


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
    lab_idx, _ = _biased_argmax(fields[:, sampled], targets)
    labels[sampled] = np.asarray([int(v) for v in SAMPLED_LABELS], dtype=np.uint8)[lab_idx]

    if adjacent.any():
        adj_fields = np.stack([_smooth_noise((gh, gw), 2.5, rng) for _ in ADJACENT_LABELS])
        adj_idx, _ = _biased_argmax(adj_fields[:, adjacent], np.array([0.5, 0.5]))
        labels[adjacent] = np.asarray([int(v) for v in ADJACENT_LABELS], dtype=np.uint8)[adj_idx]
    realised = float(adjacent.sum()) / max(float(tissue.sum()), 1.0)
    return SlideLayout(labels=labels, adjacent_fraction=realised)
