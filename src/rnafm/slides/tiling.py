"""Tile one slide: scale, tissue mask, grid, tile QC, sampling; write coords and a thumbnail."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnafm import __version__
from rnafm._io import atomic_path
from rnafm.errors import SlideError
from rnafm.slides.config import TilingConfig
from rnafm.slides.mask import TissueMask, detect_tissue, tile_fractions
from rnafm.slides.reader import TileGrid, grid_coords, plan_grid, read_tiles
from rnafm.slides.wsi import SlideScale, open_slide, slide_id_of

__all__ = ["SlideTiles", "tile_slide", "read_tile_file", "tiles_path", "thumbnail_path"]

log = logging.getLogger(__name__)


@dataclass
class SlideTiles:
    """Result of tiling one slide.

    Attributes
    ----------
    slide_id:
        Slide id.
    coords:
        int64 ``(N, 2)`` level-0 top-left corners of the kept tiles.
    attrs:
        Attributes written to the tile file (TRIDENT names plus provenance).
    path:
        The tile file, when written.
    n_candidates:
        Tiles on tissue before quality control and sampling.
    seconds:
        Wall time.
    """

    slide_id: str
    coords: np.ndarray
    attrs: dict[str, Any]
    path: Path | None = None
    n_candidates: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def tiles_path(out: str | os.PathLike[str], slide_id: str) -> Path:
    """``<out>/tiles/<slide>.h5``."""
    return Path(out) / "tiles" / f"{slide_id}.h5"


def thumbnail_path(out: str | os.PathLike[str], slide_id: str) -> Path:
    """``<out>/thumbnails/<slide>.png``."""
    return Path(out) / "thumbnails" / f"{slide_id}.png"


def _scale(slide_path: Path, config: TilingConfig, slide: Any) -> SlideScale:
    scale = slide.scale(base_magnification=config.base_magnification)
    if scale is None:
        raise SlideError(
            f"{slide_path}: magnification unknown (no openslide.mpp-x, TIFF resolution, aperio.AppMag "
            "or objective-power in the metadata); pass --base-mag (e.g. --base-mag 40)"
        )
    return scale


def _quality(config: TilingConfig, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (mean <= config.max_background_mean) & (std >= config.min_contrast)


def _qc_and_sample(
    slide: Any, grid: TileGrid, cand: np.ndarray, config: TilingConfig, progress: Any
):
    """Read candidate tiles, drop blank/low-contrast ones, sample ``max_tiles`` reproducibly.

    Returns indices into ``cand`` (sorted) and the number of tiles read.
    """
    n = len(cand)
    if config.max_tiles is None or config.max_tiles >= n:
        order, chunk = np.arange(n), n
    else:  # read a random subset first and more only if QC rejects too many
        order = np.random.default_rng(config.seed).permutation(n)
        chunk = min(n, int(config.max_tiles * 1.25) + 16)
    good = np.zeros(n, dtype=bool)
    done = 0
    while done < n:
        part = order[done : done + chunk]
        for idx, _tiles, (mean, std) in read_tiles(
            slide, grid, cand[part], workers=config.workers, stats=True, pixels=False
        ):
            good[part[idx]] = _quality(config, mean, std)
            if progress is not None:
                progress(len(idx))
        done += len(part)
        if config.max_tiles is not None and good[order[:done]].sum() >= config.max_tiles:
            break
    kept_in_order = order[:done][good[order[:done]]]
    if config.max_tiles is not None:
        kept_in_order = kept_in_order[: config.max_tiles]
    return np.sort(kept_in_order), done


def tile_slide(
    slide_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    config: TilingConfig | None = None,
    *,
    progress: Any = None,
) -> SlideTiles:
    """Tile one slide and (when ``out`` is given) write its tile file and thumbnail.

    Parameters
    ----------
    slide_path:
        Slide file.
    out:
        Output folder: writes ``<out>/tiles/<slide>.h5`` and ``<out>/thumbnails/<slide>.png``.
    config:
        Tiling settings.
    progress:
        Optional callable receiving the number of tiles read so far in each step.

    Raises
    ------
    SlideError
        Unreadable slide, unknown magnification, no tissue, or no tile passing QC.
    """
    config = config or TilingConfig()
    start = time.perf_counter()
    slide_path = Path(slide_path)
    sid = slide_id_of(slide_path)
    with open_slide(slide_path) as slide:
        scale = _scale(slide_path, config, slide)
        grid = plan_grid(
            slide, scale, patch_size=config.patch_size, overlap=config.overlap,
            magnification=config.magnification, mpp=config.mpp,
        )  # fmt: skip
        if grid.size0 < grid.patch_size * 0.95:
            log.warning(
                "%s: target finer than the scan (%.3g um/px); tiles are upsampled",
                sid, scale.mpp,
            )  # fmt: skip
        if grid.size0 > min(slide.dimensions):
            raise SlideError(f"{slide_path}: slide smaller than one tile ({grid.size0} level-0 px)")
        tissue, overview = detect_tissue(
            slide, mpp=scale.mpp, config=config.mask, image_size=config.thumbnail_size
        )
        if not tissue.mask.any():
            raise SlideError(f"{slide_path}: no tissue found (mask empty); is the slide blank?")
        coords = grid_coords(slide.dimensions, grid)
        frac = tile_fractions(tissue, coords, grid.size0)
        on_tissue = frac >= config.min_tissue_fraction
        cand, cand_frac = coords[on_tissue], frac[on_tissue]
        if len(cand) == 0:
            raise SlideError(
                f"{slide_path}: no tile has >= {config.min_tissue_fraction:.0%} tissue; "
                "lower --min-tissue or check the thumbnail"
            )
        keep, n_read = _qc_and_sample(slide, grid, cand, config, progress)
        if len(keep) == 0:
            raise SlideError(
                f"{slide_path}: all {len(cand)} tissue tiles are blank or low-contrast"
            )
        attrs = _attrs(slide_path, sid, slide.dimensions, scale, grid, config, tissue)
    result = SlideTiles(sid, cand[keep], attrs, n_candidates=len(cand))
    result.extra = {"tissue_fraction": cand_frac[keep], "n_read": n_read}
    if out is not None:
        result.path = tiles_path(out, sid)
        _write_tile_file(result.path, result.coords, result.extra["tissue_fraction"], attrs)
        _write_thumbnail(thumbnail_path(out, sid), overview, tissue, result.coords, grid.size0)
    result.seconds = time.perf_counter() - start
    log.info("%s: %d tiles (%d on tissue) in %.1f s", sid, len(keep), len(cand), result.seconds)
    return result


def _attrs(
    path, sid, dims, scale: SlideScale, grid: TileGrid, config: TilingConfig, tissue: TissueMask
):
    attrs: dict[str, Any] = {
        "slide_id": sid,
        "slide_path": str(Path(path).resolve()),
        "patch_size": grid.patch_size,
        "patch_size_level0": grid.size0,
        "stride_level0": grid.stride0,
        "overlap": config.overlap,
        "level0_magnification": float(scale.magnification),
        "level0_mpp": float(scale.mpp),
        "scale_source": scale.source,
        "read_level": grid.level,
        "read_downsample": float(grid.level_downsample),
        "level0_width": int(dims[0]),
        "level0_height": int(dims[1]),
        "mask_downsample": float(np.mean(tissue.downsample)),
        "tiling_config": config.model_dump_json(),
        "tiling_digest": config.digest(),
        "rnafm_version": __version__,
    }
    if config.mpp is not None:
        attrs["target_mpp"] = float(config.mpp)
    else:
        attrs["target_magnification"] = float(config.magnification)
    return attrs


def _write_tile_file(
    path: Path, coords: np.ndarray, frac: np.ndarray, attrs: dict[str, Any]
) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("coords", data=coords.astype(np.int64))
        f.create_dataset("tissue_fraction", data=frac.astype(np.float32))
        for k, v in attrs.items():
            f.attrs[k] = v
            ds.attrs[k] = v  # TRIDENT keeps the attributes on the coords dataset


def read_tile_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Coords ``(N, 2)`` int64 and attributes of a tile file (ours, TRIDENT's or CLAM's)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            coords = np.asarray(f["coords"][:], dtype=np.int64)
            attrs = {**dict(f["coords"].attrs), **dict(f.attrs)}
    except (OSError, KeyError) as e:
        raise SlideError(f"{path}: not a readable tile file with a 'coords' dataset ({e})") from e
    return coords, {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}


def _write_thumbnail(
    path: Path, overview: np.ndarray, tissue: TissueMask, coords: np.ndarray, size0: int
) -> None:
    """PNG of the slide overview, tissue tinted green, kept tiles outlined in blue."""
    from PIL import Image, ImageDraw

    h, w = overview.shape[:2]
    mask = (
        np.asarray(
            Image.fromarray(tissue.mask.astype(np.uint8) * 255).resize(
                (w, h), Image.Resampling.NEAREST
            )
        )
        > 0
    )  # (h, w)
    img = overview.astype(np.float32)
    img[mask] = 0.7 * img[mask] + 0.3 * np.array([0, 170, 0], np.float32)
    pil = Image.fromarray(img.astype(np.uint8))
    fx = w / (tissue.mask.shape[1] * tissue.downsample[0])  # overview pixels per level-0 pixel
    fy = h / (tissue.mask.shape[0] * tissue.downsample[1])
    draw = ImageDraw.Draw(pil)
    for x, y in coords.tolist():
        draw.rectangle(
            [x * fx, y * fy, (x + size0) * fx - 1, (y + size0) * fy - 1], outline=(30, 60, 220)
        )
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG", compress_level=1)
