"""Tissue detection: saturation + Otsu on a low-resolution copy, then morphological clean-up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rnafm.slides.config import MaskConfig
from rnafm.slides.wsi import Slide

__all__ = ["TissueMask", "read_downsampled", "tissue_mask", "detect_tissue", "tile_fractions"]

_MAX_STRIP_PIXELS = 1 << 24  # pixels per read while building the low-resolution image


@dataclass
class TissueMask:
    """A boolean tissue mask and the low-resolution RGB image it was computed on.

    Attributes
    ----------
    mask:
        bool ``(h, w)``; ``True`` on tissue.
    image:
        uint8 ``(h, w, 3)`` low-resolution copy of the slide.
    downsample:
        Level-0 pixels per mask pixel along ``(x, y)``.
    threshold:
        Saturation threshold used.
    """

    mask: np.ndarray
    image: np.ndarray
    downsample: tuple[float, float]
    threshold: float

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean())


def read_downsampled(slide: Slide, max_size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Whole slide at a resolution whose long side is at most ``max_size`` pixels.

    Reads the deepest pyramid level that is at least that large, in horizontal strips (so a
    single-level slide never needs its full level 0 in memory), and resizes each strip.

    Returns
    -------
    image, (downsample_x, downsample_y)
        uint8 ``(h, w, 3)`` and the level-0 pixels per output pixel.
    """
    from PIL import Image

    width, height = slide.dimensions
    ds = max(1.0, max(width, height) / max_size)
    out_w, out_h = max(1, round(width / ds)), max(1, round(height / ds))
    level = slide.best_level_for_downsample(ds)
    lw, lh = slide.level_dimensions[level]
    lds = slide.level_downsamples[level]
    rows = max(1, _MAX_STRIP_PIXELS // max(lw, 1))
    parts = []
    for r0 in range(0, lh, rows):
        r1 = min(lh, r0 + rows)
        strip = slide.read_region((0, round(r0 * lds)), level, (lw, r1 - r0))  # (r1-r0, lw, 3)
        o0, o1 = round(r0 * out_h / lh), round(r1 * out_h / lh)
        if o1 > o0:
            img = Image.fromarray(strip).resize((out_w, o1 - o0), Image.Resampling.BOX)
            parts.append(np.asarray(img))
    image = np.concatenate(parts, axis=0)  # (out_h, out_w, 3)
    return image, (width / out_w, height / out_h)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def _remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """Drop connected components of ``mask`` smaller than ``min_pixels``."""
    if min_pixels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def tissue_mask(image: np.ndarray, *, mpp: float, config: MaskConfig) -> tuple[np.ndarray, float]:
    """Tissue mask of a low-resolution RGB image.

    Parameters
    ----------
    image:
        uint8 ``(h, w, 3)``.
    mpp:
        Microns per pixel of ``image`` (sizes in ``config`` are physical).
    config:
        Thresholds and clean-up sizes.

    Returns
    -------
    mask, threshold
        bool ``(h, w)`` and the saturation threshold used.
    """
    rgb = image.astype(np.float32) / 255.0  # (h, w, 3)
    vmax = rgb.max(axis=2)
    vmin = rgb.min(axis=2)
    sat = np.divide(vmax - vmin, vmax, out=np.zeros_like(vmax), where=vmax > 0)  # (h, w)
    candidates = sat[(vmax > 0.08) & (vmax < 0.995)]
    threshold = max(_otsu(candidates) if candidates.size else 1.0, config.min_saturation)
    mask = (sat > threshold) & (vmax < config.max_brightness) & (vmax > 0.08)
    radius = int(round(config.closing_um / mpp))
    if radius >= 1:
        mask = ndimage.binary_closing(mask, structure=_disk(radius), border_value=0)
        # binary_closing erodes along the border; OR with the raw mask keeps edge tissue
        mask |= (sat > threshold) & (vmax < config.max_brightness)
    pixel_area = mpp * mpp
    mask = _remove_small(mask, config.min_object_um2 / pixel_area)
    holes = _remove_small(~mask, config.min_hole_um2 / pixel_area)
    mask = ~holes
    return mask, threshold


def detect_tissue(
    slide: Slide, *, mpp: float, config: MaskConfig, image_size: int = 1024
) -> tuple[TissueMask, np.ndarray]:
    """Read a low-resolution copy of ``slide`` once and compute its tissue mask.

    Parameters
    ----------
    slide:
        Open slide.
    mpp:
        Level-0 pixel size in microns.
    config:
        Mask settings; the mask is computed at ``config.mpp`` microns per pixel.
    image_size:
        Long side of the returned overview image (for the thumbnail).

    Returns
    -------
    mask, overview
        The tissue mask and a uint8 ``(h, w, 3)`` overview of the slide.
    """
    from PIL import Image

    longest = max(slide.dimensions)
    mask_size = min(config.max_size, max(16, round(longest * mpp / config.mpp)))
    overview, _ = read_downsampled(slide, max(mask_size, image_size))
    if max(overview.shape[:2]) > mask_size:
        f = mask_size / max(overview.shape[:2])
        size = (max(1, round(overview.shape[1] * f)), max(1, round(overview.shape[0] * f)))
        image = np.asarray(Image.fromarray(overview).resize(size, Image.Resampling.BOX))
    else:
        image = overview
    ds = (slide.dimensions[0] / image.shape[1], slide.dimensions[1] / image.shape[0])
    mask, threshold = tissue_mask(image, mpp=mpp * (ds[0] + ds[1]) / 2, config=config)
    thumb = overview if max(overview.shape[:2]) <= image_size else _shrink(overview, image_size)
    return TissueMask(mask=mask, image=image, downsample=ds, threshold=threshold), thumb


def _shrink(image: np.ndarray, max_size: int) -> np.ndarray:
    from PIL import Image

    f = max_size / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def tile_fractions(mask: TissueMask, coords: np.ndarray, size0: int) -> np.ndarray:
    """Fraction of each tile's footprint covered by tissue.

    Parameters
    ----------
    mask:
        The tissue mask.
    coords:
        int64 ``(N, 2)`` level-0 ``(x, y)`` top-left corners.
    size0:
        Tile side in level-0 pixels.

    Returns
    -------
    numpy.ndarray
        float64 ``(N,)`` in [0, 1]: mask pixels whose centre falls in the tile, averaged.
    """
    m = mask.mask
    h, w = m.shape
    sat = np.zeros((h + 1, w + 1), dtype=np.int64)
    sat[1:, 1:] = m.cumsum(0).cumsum(1)  # summed-area table
    dx, dy = mask.downsample
    # mask pixel j covers level-0 [j*dx, (j+1)*dx); its centre is inside the tile when
    # x0 <= (j + 0.5) dx < x0 + size0
    x0 = np.clip(np.ceil(coords[:, 0] / dx - 0.5), 0, w).astype(np.int64)
    x1 = np.clip(np.ceil((coords[:, 0] + size0) / dx - 0.5), 0, w).astype(np.int64)
    y0 = np.clip(np.ceil(coords[:, 1] / dy - 0.5), 0, h).astype(np.int64)
    y1 = np.clip(np.ceil((coords[:, 1] + size0) / dy - 0.5), 0, h).astype(np.int64)
    # tiles smaller than a mask pixel: use the pixel containing the tile centre
    small = (x1 <= x0) | (y1 <= y0)
    if small.any():
        cx = np.clip(((coords[small, 0] + size0 / 2) // dx).astype(np.int64), 0, w - 1)
        cy = np.clip(((coords[small, 1] + size0 / 2) // dy).astype(np.int64), 0, h - 1)
        x0[small], x1[small], y0[small], y1[small] = cx, cx + 1, cy, cy + 1
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = (x1 - x0) * (y1 - y0)
    return inside / np.maximum(area, 1)
