"""``rnafm maps``: a thin wrapper over :func:`rnafm.maps.make_maps`."""

from __future__ import annotations

from pathlib import Path

import click

from rnafm.maps.config import MapConfig, MapMethod
from rnafm.runtime import Device

__all__ = ["maps_cmd"]

_DEFAULTS = MapConfig()


@click.command("maps")
@click.option(
    "--model", "-m", "model_dir", required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run directory written by `rnafm train` (or a fold of `rnafm cv`).",
)  # fmt: skip
@click.option(
    "--features", "-f", required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of per-slide feature h5 files (with coords) from the run's encoder.",
)  # fmt: skip
@click.option(
    "--tiles", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="The tiles/ folder of `rnafm tile`: checked against the features and drawn behind the maps.",
)  # fmt: skip
@click.option("--slides", default=None, help="Comma-separated slide ids, or 'all' [default: all].")
@click.option("--pathways", default=None, help="Comma-separated pathway names of the run.")
@click.option("--genes", default=None, help="Comma-separated gene symbols of the run.")
@click.option(
    "--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: <slide>.h5, <slide>/<name>.png, maps.json.",
)  # fmt: skip
@click.option(
    "--method", type=click.Choice([m.value for m in MapMethod]), default=_DEFAULTS.method.value,
    show_default=True,
    help="How a tile is scored: tiles (the run's tile head, per-tile expression), readout (the "
    "slide head read out per tile), local (the run on a window of tiles), blend (the mean of "
    "tiles and local: programmes around rare structures), cluster (baseline).",
)  # fmt: skip
@click.option(
    "--smooth", type=click.FloatRange(0, 16), default=_DEFAULTS.smooth, show_default=True,
    help="tiles, readout: Gaussian sigma of the smoothing, in tiles.",
)  # fmt: skip
@click.option(
    "--tile-share", type=click.FloatRange(0, 1, min_open=True), default=_DEFAULTS.tile_share,
    show_default=True,
    help="readout: a tile's score is the change of the slide's prediction when this share of "
    "its tissue is made like the tile (1: the slide made of that tile alone).",
)  # fmt: skip
@click.option(
    "--attention-power", type=click.FloatRange(0, 64), default=_DEFAULTS.attention_power,
    show_default=True,
    help="readout: pull tiles the run's attention listens to less than average towards the slide "
    "level (8 is strong; 0 turns it off). See docs/maps.md.",
)  # fmt: skip
@click.option(
    "--radius", type=click.FloatRange(0, 64), default=_DEFAULTS.radius, show_default=True,
    help="Window radius in tiles.",
)  # fmt: skip
@click.option(
    "--stride", type=click.IntRange(1, 64), default=_DEFAULTS.stride, show_default=True,
    help="Evaluate windows every STRIDE tiles (grows when a slide has too many windows).",
)  # fmt: skip
@click.option(
    "--draws", type=click.IntRange(2, 256), default=_DEFAULTS.draws, show_default=True,
    help="Draws per window (their std is the uncertainty map).",
)  # fmt: skip
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed.")
@click.option(
    "--device", type=click.Choice([d.value for d in Device]), default="auto", show_default=True
)
@click.option("--no-png", is_flag=True, help="Write the h5 files only.")
@click.option("--overwrite", is_flag=True, help="Recompute slides whose maps are already there.")
def maps_cmd(model_dir: Path, features: Path, tiles: Path | None, slides: str | None,
             pathways: str | None, genes: str | None, out: Path, method: str, smooth: float,
             tile_share: float, attention_power: float, radius: float, stride: int, draws: int,
             seed: int, device: str, no_png: bool, overwrite: bool) -> None:  # fmt: skip
    """Map pathway scores and genes over the tiles of slides, with uncertainty."""
    from rnafm.maps.api import make_maps
    from rnafm.predict.predictor import load_model

    config = MapConfig(
        method=MapMethod(method), smooth=smooth, tile_share=tile_share,
        attention_power=attention_power, radius=radius,
        stride=stride, draws=draws, seed=seed,
    )  # fmt: skip
    predictor = load_model(model_dir, device=device)
    result = make_maps(
        predictor, features, slides=slides, pathways=pathways, genes=genes, out=out,
        tiles=tiles, config=config, png=not no_png, overwrite=overwrite,
    )  # fmt: skip
    n_png = sum(len(v) for v in result.pngs.values())
    click.echo(
        f"mapped {len(result.files) - len(result.skipped)} slides ({len(result.skipped)} already "
        f"done) x {len(next(iter(result.maps.values())).names)} columns -> {out} ({n_png} PNGs)"
    )
