"""``rnafm maps``: map pathways and genes over the tiles of slides with a trained run.

For each slide it writes ``<out>/<slide>.h5`` (coords, scores, std, names, settings) and
``<out>/<slide>/<name>.png`` (the map over the slide picture with its uncertainty beside it),
plus ``<out>/maps.json`` listing what is there. Finished slides whose settings key matches are
skipped; a changed setting recomputes them.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import read_json, write_json
from rnafm.errors import InputError
from rnafm.maps.compute import SlideMap, map_slide
from rnafm.maps.config import MapConfig
from rnafm.maps.io import is_current, map_path, read_map, settings_key, write_map
from rnafm.maps.names import MapColumns, resolve_columns, split_names

__all__ = ["MapsResult", "make_maps", "MANIFEST"]

logger = logging.getLogger(__name__)

MANIFEST = "maps.json"
PathLike = str | os.PathLike[str]


@dataclass
class MapsResult:
    """What :func:`make_maps` computed or found."""

    out: Path | None
    maps: dict[str, SlideMap] = field(default_factory=dict)  # slide id -> map
    files: dict[str, Path] = field(default_factory=dict)  # slide id -> h5
    pngs: dict[str, list[Path]] = field(default_factory=dict)  # slide id -> PNGs
    skipped: list[str] = field(default_factory=list)  # finished before, settings unchanged
    seconds: dict[str, float] = field(default_factory=dict)  # slide id -> compute time


def _select_slides(files: dict[str, Path], slides, features: PathLike) -> list[str]:
    from rnafm.cohort.reference import slide_id_from_name

    wanted = split_names(slides) if slides is not None and slides != "all" else sorted(files)
    out = []
    for s in (slide_id_from_name(w) for w in wanted):
        if s not in files:
            close = difflib.get_close_matches(s, list(files), n=3, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}" if close else f"{len(files)} slides there"
            raise InputError(
                f"{features}: no feature file for slide {s!r} ({hint}). Slide ids are feature "
                "file names without the extension."
            )
        out.append(s)
    if not out:
        raise InputError(
            f"{features}: no feature files found; pass the folder `rnafm extract` wrote."
        )
    return list(dict.fromkeys(out))


def _tile_file(tiles: Path, slide_id: str) -> tuple[Path | None, Path | None]:
    """(tile file, thumbnail) of a slide under a ``tiles/`` folder or its parent."""
    for folder in (tiles, tiles / "tiles"):
        p = folder / f"{slide_id}.h5"
        if p.is_file():
            thumbs = [folder.parent / "thumbnails", folder / "thumbnails"]
            thumb = next(
                (t / f"{slide_id}.png" for t in thumbs if (t / f"{slide_id}.png").is_file()), None
            )
            return p, thumb
    return None, None


def check_tiling(
    tile_file: Path, feature_file: Path, tile_coords, tile_attrs, smap_coords, feat_attrs
) -> None:
    """Raise InputError when the tile file and the feature file come from different tilings."""
    size_t, size_f = tile_attrs.get("patch_size_level0"), feat_attrs.get("patch_size_level0")
    if size_t and size_f and int(size_t) != int(size_f):
        raise InputError(
            f"{tile_file} (tiles of {size_t} level-0 px) and {feature_file} (tiles of {size_f} px) "
            "come from different tilings; pass the --tiles folder the features were extracted from."
        )
    known = {(int(x), int(y)) for x, y in np.asarray(tile_coords).tolist()}
    missing = [c for c in np.asarray(smap_coords).tolist() if (int(c[0]), int(c[1])) not in known]
    if missing:
        raise InputError(
            f"{tile_file} and {feature_file}: tile coordinates do not match ({len(missing)} of "
            f"{len(smap_coords)} feature tiles, e.g. {missing[0]}, are not in the tile file): the "
            "tiles and features come from different tilings; pass the --tiles folder the features "
            "were extracted from."
        )


def _run_identity(predictor) -> dict[str, Any]:
    from rnafm._io import file_digest
    from rnafm.training.run import TILE_HEAD

    run = Path(getattr(predictor, "run_dir", ""))
    weights = run / "model.safetensors"
    digest = file_digest(weights, limit=1 << 22) if weights.is_file() else repr(predictor)
    head = run / TILE_HEAD  # the tiles method's weights: a refitted head recomputes the maps
    head_digest = file_digest(head, limit=1 << 22) if head.is_file() else None
    return {"run": str(run.resolve()) if str(run) else "", "weights": digest,
            "tile_head": head_digest}  # fmt: skip


def _settings(predictor, columns: MapColumns, config: MapConfig, feature_file: Path) -> dict:
    from rnafm._io import file_digest

    return {
        "config": config.model_dump(mode="json", exclude={"batch"}),
        "names": list(columns.names),
        **_run_identity(predictor),
        "features": file_digest(feature_file, limit=1 << 22),
    }


def _pngs(smap: SlideMap, out: Path, tiles: Path | None, feature_file: Path) -> list[Path]:
    from rnafm.maps.plot import load_background, map_figure, png_name, write_png

    bg = None
    if tiles is not None:
        tile_file, thumb = _tile_file(tiles, smap.slide_id)
        if tile_file is not None:
            from rnafm.slides.tiling import read_tile_file

            _, attrs = read_tile_file(tile_file)
            bg = load_background(attrs, thumb)
    paths = []
    for j, name in enumerate(smap.names):
        fig = map_figure(smap, j, bg)
        paths.append(write_png(fig, out / smap.slide_id / png_name(name)))
    return paths


def _check_tiles(tiles: Path | None, slide_id: str, feature_file: Path) -> None:
    if tiles is None:
        return
    tile_file, _ = _tile_file(tiles, slide_id)
    if tile_file is None:
        logger.warning("%s: no tile file for %s; its maps get no slide picture", tiles, slide_id)
        return
    from rnafm.features.io import read_features
    from rnafm.slides.tiling import read_tile_file

    tc, ta = read_tile_file(tile_file)
    sf = read_features(feature_file)
    if sf.coords is not None:
        check_tiling(tile_file, feature_file, tc, ta, sf.coords, sf.attrs)


def make_maps(
    model,
    features: PathLike,
    *,
    slides: str | Sequence[str] | None = None,
    pathways: str | Sequence[str] | None = None,
    genes: str | Sequence[str] | None = None,
    out: PathLike | None = None,
    tiles: PathLike | None = None,
    config: MapConfig | None = None,
    png: bool = True,
    overwrite: bool = False,
    **overrides: Any,
) -> MapsResult:
    """Map pathway scores and genes over the tiles of slides.

    Parameters
    ----------
    model
        A :class:`rnafm.predict.Predictor` or a run directory.
    features
        Folder of per-slide feature files (with ``coords``) from the run's encoder.
    slides
        Slide ids (list or comma-separated; None or ``"all"``: every feature file).
    pathways, genes
        Pathway token names and gene symbols of the run (lists or comma-separated).
    out
        Output folder; None computes the maps in memory only.
    tiles
        ``rnafm tile`` output (``tiles/`` folder): checked against the features and used for the
        slide picture behind the PNGs. Without it the maps are drawn on a blank background.
    config, overrides
        :class:`MapConfig`, or its fields as keywords.
    png
        Also write the PNGs (with ``out``).
    overwrite
        Recompute finished slides even when their settings match.
    """
    from rnafm.features.io import find_feature_files

    predictor = _as_predictor(model)
    try:
        config = MapConfig.model_validate({**(config or MapConfig()).model_dump(), **overrides})
    except ValueError as e:
        raise InputError(f"invalid map setting ({e}); see `rnafm maps --help`.") from e
    columns = resolve_columns(
        predictor.tokens, predictor.genes, pathways=split_names(pathways),
        symbols=split_names(genes), source=str(getattr(predictor, "run_dir", "the run")),
    )  # fmt: skip
    files = find_feature_files(features)
    chosen = _select_slides(files, slides, features)
    tiles_dir = Path(tiles) if tiles is not None else None
    if tiles_dir is not None and not tiles_dir.is_dir():
        raise InputError(f"{tiles_dir}: no such folder; pass the tiles/ folder `rnafm tile` wrote.")
    out_dir = Path(out) if out is not None else None
    result = MapsResult(out=out_dir)
    for sid in chosen:
        _check_tiles(tiles_dir, sid, files[sid])
    with _progress(len(chosen)) as advance:
        for sid in chosen:
            _one_slide(predictor, sid, files[sid], columns, config, out_dir, tiles_dir, png,
                       overwrite, result)  # fmt: skip
            advance()
    if out_dir is not None:
        _write_manifest(out_dir, result, columns)
    return result


def _one_slide(predictor, sid, feature_file, columns, config, out_dir, tiles_dir, png, overwrite,
               result: MapsResult) -> None:  # fmt: skip
    settings = _settings(predictor, columns, config, feature_file)
    h5 = map_path(out_dir, sid) if out_dir is not None else None
    if h5 is not None and not overwrite and is_current(h5, settings_key(settings)):
        smap = read_map(h5)
        result.skipped.append(sid)
        pngs = [out_dir / sid / n for n in _png_names(columns)]
        if png and not all(p.is_file() for p in pngs):
            pngs = _pngs(smap, out_dir, tiles_dir, feature_file)
    else:
        t0 = time.perf_counter()
        smap = map_slide(predictor, feature_file, columns, config)
        result.seconds[sid] = time.perf_counter() - t0
        pngs = []
        if h5 is not None:
            write_map(h5, smap, settings=settings)
            if png:
                pngs = _pngs(smap, out_dir, tiles_dir, feature_file)
    result.maps[sid] = smap
    if h5 is not None:
        result.files[sid] = h5
        result.pngs[sid] = pngs if png else []


def _png_names(columns: MapColumns) -> list[str]:
    from rnafm.maps.plot import png_name

    return [png_name(n) for n in columns.names]


def _write_manifest(out: Path, result: MapsResult, columns: MapColumns) -> None:
    """``maps.json``: every map file in ``out`` (earlier runs included) with its columns."""
    manifest = out / MANIFEST
    entries: dict[str, Any] = {}
    if manifest.is_file():
        try:
            entries = dict(read_json(manifest).get("slides", {}))
        except (ValueError, OSError, AttributeError):
            entries = {}
    for sid, path in result.files.items():
        entries[sid] = {
            "h5": path.name,
            "names": list(columns.names),
            "pngs": [str(p.relative_to(out)) for p in result.pngs.get(sid, [])],
        }
    entries = {s: e for s, e in entries.items() if (out / e["h5"]).is_file()}
    from rnafm import __version__

    write_json(manifest, {"rnafm_version": __version__, "scale": "log2(x+1)", "slides": entries})


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar over slides; yields the function that advances it."""
    from rich.errors import LiveError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("mapping slides"), BarColumn(), MofNCompleteColumn(), transient=True)
    try:
        bar.start()
    except LiveError:  # another live display is running: go without a bar
        bar = Progress(disable=True)
    task = bar.add_task("maps", total=total)
    try:
        yield lambda: bar.advance(task)
    finally:
        bar.stop()


def _as_predictor(model):
    if hasattr(model, "predict_data"):
        return model
    from rnafm.maps.model import load_model

    return load_model(model)
