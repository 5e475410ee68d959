"""A thin whole-slide image interface over OpenSlide, and the slide's physical scale.

``open_slide(path)`` returns a :class:`Slide` (a context manager) exposing only what tiling
needs: level-0 dimensions, pyramid levels, ``read_region`` and the level-0 scale
(:class:`SlideScale`: microns per pixel and objective magnification, with their source).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from rnafm.errors import SlideError

__all__ = [
    "SLIDE_EXTENSIONS",
    "Slide",
    "SlideScale",
    "open_slide",
    "slide_scale",
    "mpp_to_magnification",
    "slide_id_of",
]

log = logging.getLogger(__name__)

#: File extensions OpenSlide can open (lower case, with the dot).
SLIDE_EXTENSIONS: tuple[str, ...] = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".svslide", ".bif",
)  # fmt: skip

#: Objective powers a magnification derived from mpp is snapped to (within 10 %).
_STANDARD_MAGS = (1.25, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0)
#: Microns per pixel of a 1x objective by convention (10x ~ 1 um/px, 20x ~ 0.5, 40x ~ 0.25).
_MPP_AT_1X = 10.0
_MPP_RANGE = (0.02, 50.0)  # anything outside is a bogus resolution tag (e.g. 72 dpi)


def mpp_to_magnification(mpp: float) -> float:
    """Objective magnification of a pixel size, snapped to a standard power within 10 %.

    >>> mpp_to_magnification(0.252), mpp_to_magnification(0.499), mpp_to_magnification(0.3)
    (40.0, 20.0, 33.333333333333336)
    """
    mag = _MPP_AT_1X / mpp
    best = min(_STANDARD_MAGS, key=lambda m: abs(math.log(mag / m)))
    return best if abs(mag / best - 1.0) <= 0.10 else mag


@dataclass(frozen=True)
class SlideScale:
    """Physical scale of level 0.

    Attributes
    ----------
    mpp:
        Microns per level-0 pixel (measured, or derived as ``10 / magnification``).
    magnification:
        Objective power of level 0 (vendor field, or derived from ``mpp`` and snapped).
    source:
        Where the scale came from (``openslide.mpp-x``, ``tiff.XResolution``,
        ``aperio.AppMag``, ``openslide.objective-power`` or ``--base-mag``).
    """

    mpp: float
    magnification: float
    source: str


def _float(props: Any, key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def slide_scale(properties: Any, *, base_magnification: float | None = None) -> SlideScale | None:
    """Level-0 scale from OpenSlide properties: mpp first, vendor magnification second.

    Parameters
    ----------
    properties:
        Mapping of OpenSlide property names to strings.
    base_magnification:
        User override (``--base-mag``); wins over every metadata field.

    Returns
    -------
    SlideScale or None
        ``None`` when the slide carries no usable scale.
    """
    if base_magnification is not None:
        return SlideScale(_MPP_AT_1X / base_magnification, float(base_magnification), "--base-mag")
    mpp, source = _float(properties, "openslide.mpp-x"), "openslide.mpp-x"
    if mpp is None:  # TIFF resolution tags OpenSlide did not translate (e.g. unit inch)
        res = _float(properties, "tiff.XResolution")
        unit = str(properties.get("tiff.ResolutionUnit", "")).lower()
        per_unit = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
        if res is not None and per_unit is not None:
            mpp, source = per_unit / res, "tiff.XResolution"
    if mpp is not None and not (_MPP_RANGE[0] <= mpp <= _MPP_RANGE[1]):
        log.debug("ignoring implausible mpp %.4g from %s", mpp, source)
        mpp = None
    if mpp is not None:
        return SlideScale(mpp, mpp_to_magnification(mpp), source)
    for key in ("aperio.AppMag", "openslide.objective-power", "hamamatsu.SourceLens"):
        mag = _float(properties, key)
        if mag is not None:
            return SlideScale(_MPP_AT_1X / mag, mag, key)
    return None


class Slide:
    """An open whole-slide image; use as a context manager or call :meth:`close`.

    Parameters
    ----------
    path:
        Slide file.
    handle:
        The OpenSlide object (thread-safe for concurrent ``read_region`` calls).
    """

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self._osr = handle

    # --- geometry -------------------------------------------------------------------------
    @property
    def slide_id(self) -> str:
        """File name without its extension."""
        return slide_id_of(self.path)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return tuple(self._osr.dimensions)

    @property
    def level_count(self) -> int:
        return int(self._osr.level_count)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each pyramid level."""
        return tuple(tuple(d) for d in self._osr.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0."""
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._osr.properties)

    def scale(self, *, base_magnification: float | None = None) -> SlideScale | None:
        """Level-0 scale (see :func:`slide_scale`)."""
        return slide_scale(self._osr.properties, base_magnification=base_magnification)

    @property
    def mpp(self) -> float | None:
        s = self.scale()
        return None if s is None else s.mpp

    @property
    def magnification(self) -> float | None:
        s = self.scale()
        return None if s is None else s.magnification

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample does not exceed ``downsample`` (1 % tolerance)."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    # --- pixels ---------------------------------------------------------------------------
    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read RGB pixels.

        Parameters
        ----------
        location:
            Top-left ``(x, y)`` in level-0 pixels.
        level:
            Pyramid level to read from.
        size:
            ``(width, height)`` in pixels of ``level``.

        Returns
        -------
        numpy.ndarray
            uint8 ``(height, width, 3)``; areas outside the scanned region are white.
        """
        return bgra_to_rgb(self.read_bgra(location, level, size))

    def read_bgra(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Raw pixels as OpenSlide renders them: uint8 ``(height, width, 4)`` premultiplied BGRA.

        Decodes straight into a numpy buffer (no PIL round trip); falls back to the public
        API when the low-level binding is unavailable.
        """
        w, h = int(size[0]), int(size[1])
        fn = _lowlevel_read()
        if fn is None or w <= 0 or h <= 0:
            import openslide

            loc = (int(location[0]), int(location[1]))
            try:
                rgba = np.asarray(self._osr.read_region(loc, int(level), (w, h)))
            except openslide.OpenSlideError as e:
                raise SlideError(
                    f"{self.path}: reading pixels failed ({e}); the file may be corrupt"
                ) from e
            a = rgba[..., 3:4].astype(np.uint16)
            bgr = (rgba[..., 2::-1].astype(np.uint16) * a // 255).astype(np.uint8)  # premultiply
            return np.concatenate([bgr, rgba[..., 3:4]], axis=2)
        import ctypes

        import openslide

        buf = np.empty((h, w), dtype=np.uint32)
        ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        try:
            fn(self._osr._osr, ptr, int(location[0]), int(location[1]), int(level), w, h)
        except openslide.OpenSlideError as e:
            raise SlideError(
                f"{self.path}: reading pixels failed ({e}); the file may be corrupt"
            ) from e
        return buf.view(np.uint8).reshape(h, w, 4)

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, dimensions={self.dimensions}, levels={self.level_count})"


def _lowlevel_read() -> Any:
    """``openslide.lowlevel._read_region`` on little-endian machines, else None."""
    import sys

    if sys.byteorder != "little":
        return None
    try:
        from openslide import lowlevel
    except ImportError:
        return None
    return getattr(lowlevel, "_read_region", None)


def bgra_to_rgb(bgra: np.ndarray) -> np.ndarray:
    """Premultiplied BGRA ``(..., 4)`` composited over white -> uint8 RGB ``(..., 3)``."""
    rgb = np.ascontiguousarray(bgra[..., 2::-1])
    alpha = bgra[..., 3]
    if alpha.min() < 255:
        rgb += (255 - alpha)[..., None]  # premultiplied colour over white; never overflows
    return rgb


def slide_id_of(path: str | os.PathLike[str]) -> str:
    """Slide id: the file name without its (last) extension."""
    return Path(path).stem


def open_slide(path: str | os.PathLike[str]) -> Slide:
    """Open a whole-slide image with OpenSlide.

    Raises
    ------
    SlideError
        The file is missing, not a format OpenSlide reads, or corrupt.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: slide file not found; check the path or the wsi_file_name column")
    import openslide  # deferred: loads the native library

    try:
        handle = openslide.OpenSlide(str(p))
    except openslide.OpenSlideUnsupportedFormatError as e:
        raise SlideError(
            f"{p}: not a slide format OpenSlide can read (supported: {', '.join(SLIDE_EXTENSIONS)}; "
            "plain TIFFs must be tiled); convert it, e.g. with `vips tiffsave --tile --pyramid`"
        ) from e
    except (openslide.OpenSlideError, OSError) as e:
        raise SlideError(
            f"{p}: cannot open slide ({e}); the file may be corrupt or truncated"
        ) from e
    return Slide(p, handle)
