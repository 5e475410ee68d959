"""PNG of one map column over the slide picture: score (with colour bar and mm scale) and std."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnafm._io import atomic_path
from rnafm.maps.compute import SlideMap
from rnafm.maps.grid import tile_grid

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Background", "load_background", "map_figure", "write_png", "png_name"]

logger = logging.getLogger(__name__)

_SCALE_BARS_UM = (50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000)


@dataclass
class Background:
    """A picture of the whole slide and the level-0 rectangle it covers."""

    image: np.ndarray  # uint8 (h, w, 3)
    width0: float  # level-0 width the picture spans
    height0: float  # level-0 height


def _from_slide(slide_path: str, max_size: int) -> Background | None:
    from rnafm.errors import SlideError
    from rnafm.slides.mask import read_downsampled
    from rnafm.slides.wsi import open_slide

    if not slide_path or not Path(slide_path).is_file():
        return None
    try:
        with open_slide(slide_path) as slide:
            image, (dsx, dsy) = read_downsampled(slide, max_size)
    except (SlideError, OSError, ValueError) as e:
        logger.debug("cannot read %s for the map background: %s", slide_path, e)
        return None
    return Background(image=image, width0=image.shape[1] * dsx, height0=image.shape[0] * dsy)


def load_background(
    tile_attrs: dict, thumbnail: Path | None, *, max_size: int = 1400
) -> Background | None:
    """The slide itself at low resolution when it can be opened, else ``rnafm tile``'s thumbnail.

    Parameters
    ----------
    tile_attrs
        Attributes of the tile file (``slide_path``, ``level0_width``, ``level0_height``).
    thumbnail
        ``<tiles>/../thumbnails/<slide>.png`` (or None).
    """
    bg = _from_slide(str(tile_attrs.get("slide_path", "")), max_size)
    if bg is not None:
        return bg
    if thumbnail is None or not thumbnail.is_file():
        return None
    w0, h0 = tile_attrs.get("level0_width"), tile_attrs.get("level0_height")
    if not w0 or not h0:
        return None
    from PIL import Image

    with Image.open(thumbnail) as im:
        image = np.asarray(im.convert("RGB"))  # (h, w, 3)
    return Background(image=image, width0=float(w0), height0=float(h0))


def _raster(smap: SlideMap, values: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """Values (N,) on the tile grid (rows, cols) with NaN off tissue, and the imshow extent."""
    step = smap.attrs.get("stride_level0") or smap.attrs.get("patch_size_level0")
    grid = tile_grid(smap.coords, float(step) if step else None)
    rows, cols = grid.shape
    arr = np.full((rows, cols), np.nan)  # (rows, cols)
    ij = np.rint(grid.pos).astype(np.int64)  # (N, 2) (x, y)
    arr[ij[:, 1], ij[:, 0]] = values
    x0, y0 = (float(v) for v in grid.origin)
    return arr, (x0, x0 + cols * grid.step, y0 + rows * grid.step, y0)


def _scale_bar(ax: Axes, mpp: float | None, span0: float) -> None:
    if not mpp or mpp <= 0:
        return
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    width_um = span0 * mpp
    fits = [b for b in _SCALE_BARS_UM if b <= 0.3 * width_um] or [_SCALE_BARS_UM[0]]
    um = fits[-1]
    label = f"{um / 1000:g} mm" if um >= 1000 else f"{um / 1000:g} mm ({um} µm)"
    bar = AnchoredSizeBar(
        ax.transData, um / mpp, label, "lower left", pad=0.4, color="black", frameon=True,
        size_vertical=span0 / 200, label_top=True,
    )  # fmt: skip
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)


def _panel(
    fig: Figure, ax: Axes, smap: SlideMap, values: np.ndarray, bg: Background | None, *,
    cmap: str, limits: tuple[float, float], label: str, mark: float | None,
) -> None:  # fmt: skip
    arr, extent = _raster(smap, values)
    if bg is not None:
        ax.imshow(bg.image, extent=(0, bg.width0, bg.height0, 0), interpolation="bilinear")
        x1, y1 = bg.width0, bg.height0
    else:
        x1, y1 = extent[1], extent[2]
        ax.set_facecolor("#f4f4f4")
    im = ax.imshow(
        arr, extent=extent, cmap=cmap, vmin=limits[0], vmax=limits[1], alpha=0.78,
        interpolation="nearest",
    )  # fmt: skip
    ax.set_xlim(0 if bg is not None else extent[0], x1)
    ax.set_ylim(y1, 0 if bg is not None else extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    cbar = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    cbar.set_label(label)
    if mark is not None and limits[0] <= mark <= limits[1]:
        cbar.ax.axhline(mark, color="black", lw=2.0)
    _scale_bar(ax, smap.attrs.get("level0_mpp"), x1 - (0 if bg is not None else extent[0]))


def _limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [2, 98])
    if hi - lo < 1e-6:
        lo, hi = lo - 0.05, hi + 0.05
    return float(lo), float(hi)


def map_figure(
    smap: SlideMap, column: int, bg: Background | None, *, limits: tuple[float, float] | None = None
) -> Figure:
    """Two panels: the score map (black line on the colour bar: the slide's bulk prediction) and
    the std of the draws, over the slide picture, with a scale bar in mm."""
    from matplotlib.figure import Figure

    name, kind = smap.names[column], (smap.kinds[column] if smap.kinds else "")
    score, spread = smap.scores[:, column], smap.std[:, column]
    aspect = 1.0
    if bg is not None:
        aspect = bg.height0 / max(bg.width0, 1.0)
    fig = Figure(
        figsize=(12.5, max(3.6, 5.6 * min(aspect, 1.6) + 0.9)), dpi=110, layout="constrained"
    )
    ax1, ax2 = fig.subplots(1, 2)
    what = "pathway score" if kind == "pathway" else "expression"
    bulk = float(smap.bulk[column]) if smap.bulk.size else None
    _panel(fig, ax1, smap, score, bg, cmap="inferno", limits=limits or _limits(score),
           label=f"{what}, log2(x+1) scale", mark=bulk)  # fmt: skip
    _panel(fig, ax2, smap, spread, bg, cmap="Blues", limits=(0.0, _limits(spread)[1]),
           label="std of draws, log2 scale", mark=None)  # fmt: skip
    ax1.set_title(f"{name}\npredicted {what} per tile", fontsize=10)
    ax2.set_title("uncertainty\nstd of the draws (higher = less certain)", fontsize=10)
    sub = f"slide {smap.slide_id}"
    if bulk is not None:
        sub += f"\nslide prediction {bulk:.2f} ± {float(smap.bulk_std[column]):.2f} (black line)"
    fig.suptitle(sub, fontsize=9)
    return fig


def png_name(name: str) -> str:
    """File-system safe PNG name of a column."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}.png"


def write_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save a figure as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
