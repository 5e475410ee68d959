"""Fast tile reading: tiles in a row are read as one strip and cut, strips in parallel threads."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rnafm.errors import SlideError
from rnafm.slides.wsi import Slide, SlideScale, bgra_to_rgb

__all__ = ["TileGrid", "plan_grid", "grid_coords", "read_tiles", "tile_stats"]

_MAX_RUN = 32  # tiles per strip read


@dataclass(frozen=True)
class TileGrid:
    """Geometry of the tiles of one slide.

    Attributes
    ----------
    patch_size:
        Tile side at the target scale (pixels of the output tiles).
    size0:
        Tile side in level-0 pixels (``patch_size_level0``).
    stride0:
        Distance between neighbouring tiles in level-0 pixels.
    level:
        Pyramid level the pixels are read from.
    level_downsample:
        Downsample of ``level``.
    read_size:
        Tile side in pixels of ``level``; resized to ``patch_size`` when different.
    """

    patch_size: int
    size0: int
    stride0: int
    level: int
    level_downsample: float
    read_size: int


def plan_grid(
    slide: Slide, scale: SlideScale, *, patch_size: int, overlap: int = 0,
    magnification: float | None = None, mpp: float | None = None,
) -> TileGrid:  # fmt: skip
    """Tile geometry for a target magnification or mpp.

    A 40x slide tiled at 20x with ``patch_size=256`` gives ``size0=512``: tiles are read from
    the deepest pyramid level with downsample <= 2 and resized to 256 pixels.
    """
    if mpp is not None:
        downsample = mpp / scale.mpp
    elif magnification is not None:
        downsample = scale.magnification / magnification
    else:
        raise ValueError("give magnification or mpp")
    size0 = max(1, round(patch_size * downsample))
    stride0 = max(1, round((patch_size - overlap) * downsample))
    level = slide.best_level_for_downsample(downsample)
    lds = slide.level_downsamples[level]
    read_size = max(1, round(size0 / lds))
    return TileGrid(patch_size, size0, stride0, level, lds, read_size)


def grid_coords(dimensions: tuple[int, int], grid: TileGrid) -> np.ndarray:
    """All tile corners of the regular grid that lie fully inside the slide.

    Returns
    -------
    numpy.ndarray
        int64 ``(N, 2)`` level-0 ``(x, y)``, row-major order.
    """
    width, height = dimensions
    xs = np.arange(0, width - grid.size0 + 1, grid.stride0, dtype=np.int64)
    ys = np.arange(0, height - grid.size0 + 1, grid.stride0, dtype=np.int64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)  # (N, 2)


def tile_stats(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the grey level of each tile (on every 4th pixel).

    Parameters
    ----------
    tiles:
        uint8 ``(n, h, w, 3)``.

    Returns
    -------
    mean, std
        float32 ``(n,)`` each, grey levels in [0, 255].
    """
    sub = tiles[:, ::4, ::4].astype(np.float32)  # (n, h/4, w/4, 3)
    grey = 0.299 * sub[..., 0] + 0.587 * sub[..., 1] + 0.114 * sub[..., 2]  # (n, h/4, w/4)
    flat = grey.reshape(len(tiles), -1)
    return flat.mean(axis=1), flat.std(axis=1)


def _runs(coords: np.ndarray, stride0: int) -> list[np.ndarray]:
    """Group tile indices into horizontal runs of neighbours (same y, x steps of stride0)."""
    if len(coords) == 0:
        return []
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    c = coords[order]
    brk = (np.diff(c[:, 1]) != 0) | (np.diff(c[:, 0]) != stride0)
    runs = []
    for run in np.split(order, np.flatnonzero(brk) + 1):
        runs.extend(run[i : i + _MAX_RUN] for i in range(0, len(run), _MAX_RUN))
    return runs


def _strip_stats(strip: np.ndarray, n: int, rs: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tile_stats` of ``n`` abutting tiles straight from a BGRA strip (no tile copies)."""
    sub = strip[::4, ::4].astype(np.float32)  # (rs/4, n rs/4, 4) BGRA
    grey = 0.114 * sub[..., 0] + 0.587 * sub[..., 1] + 0.299 * sub[..., 2]
    per = grey.reshape(grey.shape[0], n, -1).transpose(1, 0, 2).reshape(n, -1)  # (n, pixels)
    return per.mean(axis=1), per.std(axis=1)


def _read_run(
    slide: Slide, grid: TileGrid, coords: np.ndarray, *, stats: bool, pixels: bool = True
):
    from PIL import Image

    x_first, y = int(coords[0, 0]), int(coords[0, 1])
    lds = grid.level_downsample
    offsets = np.round((coords[:, 0] - x_first) / lds).astype(np.int64)
    width = int(offsets[-1]) + grid.read_size
    strip = slide.read_bgra((x_first, y), grid.level, (width, grid.read_size))  # (rs, width, 4)
    rs, ps = grid.read_size, grid.patch_size
    if strip[..., 3].min() < 255:  # outside the scanned area: composite over white first
        strip = np.concatenate([bgra_to_rgb(strip)[..., ::-1], strip[..., 3:]], axis=2)
    abutting = bool(np.all(offsets == np.arange(len(offsets)) * rs))
    if not pixels and abutting and rs == ps and rs % 4 == 0:
        return None, _strip_stats(strip, len(offsets), rs)
    if abutting:  # one reshape
        tiles = strip.reshape(rs, len(offsets), rs, 4).transpose(1, 0, 2, 3)  # (n, rs, rs, 4)
    else:
        tiles = np.stack([strip[:, o : o + rs] for o in offsets])  # (n, rs, rs, 4)
    tiles = np.ascontiguousarray(tiles[..., 2::-1])  # (n, rs, rs, 3) RGB in one copy
    if rs != ps:
        if rs % ps == 0:  # integer factor (e.g. 512 -> 256): box filter, the fast path
            f = rs // ps
            tiles = np.stack([np.asarray(Image.fromarray(t).reduce(f)) for t in tiles])
        else:
            resize = Image.Resampling.BILINEAR
            tiles = np.stack(
                [np.asarray(Image.fromarray(t).resize((ps, ps), resize)) for t in tiles]
            )
    return tiles, (tile_stats(tiles) if stats else None)


def read_tiles(
    slide: Slide,
    grid: TileGrid,
    coords: np.ndarray,
    *,
    workers: int = 2,
    stats: bool = False,
    pixels: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]]:
    """Read tiles strip by strip, ``workers`` strips at a time.

    Parameters
    ----------
    slide, grid:
        Where and how to read.
    coords:
        int64 ``(N, 2)`` level-0 corners (any order).
    workers:
        Reading threads (OpenSlide releases the GIL while decoding).
    stats:
        Also return :func:`tile_stats` of each batch.
    pixels:
        When False (with ``stats``), tiles may be ``None``: only statistics are computed,
        straight from the decoded strip (the fast path of tiling's quality control).

    Yields
    ------
    index, tiles, stats
        int64 ``(n,)`` rows of ``coords``, uint8 ``(n, patch, patch, 3)``, and ``(mean, std)``
        or ``None``. Every row of ``coords`` is yielded exactly once.
    """
    runs = _runs(np.asarray(coords, dtype=np.int64), grid.stride0)
    if not runs:
        return

    def job(idx: np.ndarray):
        try:
            return idx, *_read_run(slide, grid, coords[idx], stats=stats, pixels=pixels)
        except Exception as e:  # noqa: BLE001 - re-raised with the slide named
            raise SlideError(
                f"{slide.path}: reading tiles failed near {coords[idx[0]].tolist()}: {e}"
            ) from e

    if workers <= 1:
        for idx in runs:
            yield job(idx)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rnafm-read") as pool:
        window: deque = deque()
        it = iter(runs)
        for idx in it:
            window.append(pool.submit(job, idx))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def n_batches(n_tiles: int) -> int:
    """Rough number of strip reads for ``n_tiles`` (for progress bars)."""
    return math.ceil(n_tiles / _MAX_RUN)
