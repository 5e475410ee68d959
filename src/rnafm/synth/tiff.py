"""Write an RGB image as a pyramidal tiled JPEG TIFF that OpenSlide opens as generic-tiff.

One page per pyramid level (level 0 first, then 2x reductions, each marked as a reduced image),
``photometric='rgb'``, square JPEG tiles, and resolution tags in pixels per centimetre, from which
OpenSlide reports ``openslide.mpp-x``/``-y``.
"""

from __future__ import annotations

import os

import numpy as np

from rnafm._io import atomic_path

__all__ = ["write_pyramid_tiff"]


def _halve(img: np.ndarray) -> np.ndarray:
    """2x2 mean reduction of an (H, W, 3) uint8 image (odd edges dropped)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    v = img[:h, :w].astype(np.uint16)
    out = (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2] + 2) // 4
    return out.astype(np.uint8)


def write_pyramid_tiff(
    path: str | os.PathLike[str],
    image: np.ndarray,
    *,
    mpp: float,
    tile: int = 256,
    quality: int = 85,
    min_level_size: int = 512,
) -> int:
    """Write ``image`` (H, W, 3) uint8 as a tiled JPEG pyramid; returns the number of levels.

    Levels are added while the smaller side of the next one is at least ``min_level_size``
    (at least two levels are always written).
    """
    import tifffile

    levels = [image]
    while min(levels[-1].shape[:2]) // 2 >= min_level_size or len(levels) < 2:
        levels.append(_halve(levels[-1]))
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tw:
        for i, level in enumerate(levels):
            px_per_cm = 1e4 / (mpp * 2**i)
            tw.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": int(quality)},
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                software="rnafm synth",
            )
    return len(levels)
