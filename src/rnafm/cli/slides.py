"""`rnafm tile`, `rnafm extract` and `rnafm preprocess`: whole-slide images to tile features.

Exit status: 0 when every slide succeeded (or was already done), 1 when any slide failed
(see ``<out>/failures.json``), 2 for bad input.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnafm.features.extract import ExtractConfig
from rnafm.runtime import Device, Precision
from rnafm.slides.config import TilingConfig

log = logging.getLogger(__name__)

_ENCODER_HELP = "builtin (default, no weights), uni, resnet50 or timm:<model name>."


def _tiling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--mag", "magnification", type=float, default=None, help="Target magnification [default: 20]."),
        click.option("--mpp", type=float, default=None, help="Target microns per pixel (instead of --mag)."),
        click.option("--base-mag", "base_magnification", type=float, default=None,
                     help="Level-0 magnification when the slide metadata lacks or misstates it."),
        click.option("--patch-size", type=int, default=256, show_default=True, help="Tile side in target pixels."),
        click.option("--overlap", type=int, default=0, show_default=True, help="Tile overlap in target pixels."),
        click.option("--min-tissue", "min_tissue_fraction", type=float, default=0.5, show_default=True,
                     help="Minimum tissue fraction of a tile."),
        click.option("--max-tiles", type=int, default=None, help="Sample at most N tiles per slide."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of --max-tiles sampling."),
        click.option("--read-threads", "read_threads", type=int, default=2, show_default=True,
                     help="Threads reading tiles while tiling."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _extract_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--encoder", default="builtin", show_default=True, help=_ENCODER_HELP),
        click.option("--weights", type=click.Path(path_type=Path), default=None,
                     help="Local weights file or folder of the encoder."),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Tiles per batch."),
        click.option("--workers", type=int, default=2, show_default=True, help="DataLoader workers."),
        click.option("--device", type=click.Choice([d.value for d in Device]), default="auto", show_default=True),
        click.option("--precision", type=click.Choice([p.value for p in Precision]), default="auto",
                     show_default=True, help="Autocast precision on CUDA."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--overwrite", is_flag=True, help="Redo slides whose outputs already exist.")(
        fn
    )
    fn = click.option("--no-progress", is_flag=True, help="Hide progress bars.")(fn)
    return fn


def _config_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        try:
            return fn(*args, **kwargs)
        except ValidationError as e:
            msgs = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}" for err in e.errors()
            )
            raise click.UsageError(msgs) from None

    return wrapper


def _tiling_config(kw: dict[str, Any], *, overwrite: bool, progress: bool) -> TilingConfig:
    return TilingConfig(
        magnification=kw["magnification"], mpp=kw["mpp"], base_magnification=kw["base_magnification"],
        patch_size=kw["patch_size"], overlap=kw["overlap"], min_tissue_fraction=kw["min_tissue_fraction"],
        max_tiles=kw["max_tiles"], seed=kw["seed"], workers=kw["read_threads"],
        overwrite=overwrite, progress=progress,
    )  # fmt: skip


def _extract_config(
    kw: dict[str, Any], *, overwrite: bool, progress: bool, slides_dir: Path | None
) -> ExtractConfig:
    return ExtractConfig(
        encoder=kw["encoder"], weights=kw["weights"], batch_size=kw["batch_size"], workers=kw["workers"],
        device=Device(kw["device"]), precision=Precision(kw["precision"]), slides_dir=slides_dir,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip


def _finish(*reports: Any) -> None:
    failed = [j for r in reports if r is not None for j in r.failed]
    for r in reports:
        if r is not None:
            click.echo(r.summary())
    if failed:
        where = next((r.failures_path for r in reports if r is not None and r.failures_path), None)
        click.echo(f"{len(failed)} slide(s) failed; reasons in {where}", err=True)
        raise SystemExit(1)
    locked = [j for r in reports if r is not None for j in r.locked]
    if locked:
        click.echo(
            f"{len(locked)} slide(s) not processed: locked by another process (e.g. "
            f"{locked[0].slide_id}); rerun when it has finished. A lock of a dead process on "
            "another host expires after $RNAFM_LOCK_TIMEOUT_HOURS (default 6) hours.",
            err=True,
        )
        raise SystemExit(3)


@click.command("tile")
@click.argument("slides", nargs=-1, required=True)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@_tiling_options
@_common
@_config_errors
def tile_cmd(
    slides: tuple[str, ...], out: Path, overwrite: bool, no_progress: bool, **kw: Any
) -> None:
    """Detect tissue and cut SLIDES (files, folders or a CSV with wsi_file_name) into tiles.

    Writes OUT/tiles/<slide>.h5 (level-0 coords + attributes), OUT/thumbnails/<slide>.png and
    OUT/failures.json.
    """
    from rnafm.slides.batch import tile_slides

    config = _tiling_config(kw, overwrite=overwrite, progress=not no_progress)
    _finish(tile_slides(list(slides), out, config))


@click.command("extract")
@click.option("--tiles", "tiles_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of tile files (OUT/tiles from rnafm tile).")  # fmt: skip
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@click.option("--slides-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where the slides are now, if they moved since tiling.")  # fmt: skip
@_extract_options
@_common
@_config_errors
def extract_cmd(
    tiles_dir: Path,
    out: Path,
    slides_dir: Path | None,
    overwrite: bool,
    no_progress: bool,
    **kw: Any,
) -> None:
    """Encode the tiles into OUT/features/<encoder>/<slide>.h5 (features, coords, attributes)."""
    from rnafm.features.extract import extract_features

    config = _extract_config(
        kw, overwrite=overwrite, progress=not no_progress, slides_dir=slides_dir
    )
    _finish(extract_features(tiles_dir, out, config))


@click.command("preprocess")
@click.argument("slides", nargs=-1, required=True)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder."
)
@_tiling_options
@_extract_options
@click.option("--scheduler", default=None,
              help="Distribute one task per slide with Dask: 'local' (a LocalCluster on this machine) "
                   "or a scheduler address such as tcp://head:8786. Default: this process.")  # fmt: skip
@click.option("--dask-workers", type=int, default=None,
              help="Worker processes of a --scheduler local cluster [default: CPU count].")  # fmt: skip
@_common
@_config_errors
def preprocess_cmd(
    slides: tuple[str, ...],
    out: Path,
    overwrite: bool,
    no_progress: bool,
    scheduler: str | None,
    dask_workers: int | None,
    **kw: Any,
) -> None:
    """Tile SLIDES and encode the tiles: OUT/tiles, OUT/thumbnails, OUT/features/<encoder>.

    The features folder feeds `rnafm train --features OUT/features/<encoder>` directly.
    """
    from rnafm.features.preprocess import PreprocessConfig, preprocess

    progress = not no_progress
    if scheduler is not None:
        kw["workers"] = 0  # Dask worker processes cannot start DataLoader worker processes
    config = PreprocessConfig(
        tiling=_tiling_config(kw, overwrite=overwrite, progress=progress),
        extraction=_extract_config(kw, overwrite=overwrite, progress=progress, slides_dir=None),
    )
    if scheduler is None:
        report = preprocess(list(slides), out, config)
    else:
        from rnafm.features.preprocess_dask import preprocess_distributed

        report = preprocess_distributed(
            list(slides),
            out,
            config,
            scheduler=scheduler,
            n_workers=dask_workers,
            progress=progress,
        )
    _finish(report.tiling, report.extraction)
    click.echo(f"features: {report.features}")
