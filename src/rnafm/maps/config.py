"""Settings of a spatial map: the window, the evaluation grid, the draws."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MapAnchor", "MapMethod", "MapConfig"]


class MapMethod(str, Enum):
    """How a tile's local condition is formed."""

    TILES = "tiles"  # the tile head's expression of each tile, anchored to the run (default)
    READOUT = "readout"  # the slide head's read-out of each tile, anchored to the run
    LOCAL = "local"  # the run's prediction for the disk of tiles around it
    BLEND = "blend"  # the mean of tiles and local (programmes around rare structures)
    CLUSTER = "cluster"  # its own cluster alone (a baseline: no spatial context)


class MapAnchor(str, Enum):
    """tiles, readout: how the head's per-tile values are put on the run's prediction."""

    SLIDE = "slide"  # one shift per slide: the run's bulk prediction minus the head's (default)
    WINDOWS = "windows"  # per window: interpolated (run - head) of the anchor windows


class MapConfig(BaseModel):
    """How the maps of a trained run are computed (saved as attributes of every map file).

    ``tiles`` (the default): a tile's score is the run's tile head (per-tile log2 expression,
    :mod:`rnafm.model.tile_head`) on the tile, smoothed over ``smooth`` tiles, plus the
    difference between the run's full prediction and the tile head's mixture for the whole
    slide (``anchor`` slide) or per window (``anchor`` windows); the std as for ``readout``.
    Runs without a tile head map with ``readout``.
    ``readout``: a tile's score is the run's slide head asked about the slide with
    a ``tile_share`` of its pooled tissue made like that tile (per unit share; 1: that tile alone),
    pulled towards the slide level where the run's attention pools it less than an average tile
    (``attention_power``), smoothed over ``smooth`` tiles, plus the difference between the run's
    full prediction and the head's for the whole slide (``anchor`` slide) or for the window of
    ``radius`` tiles around it (``anchor`` windows, interpolated). The std comes from the run's
    draws for at most ``anchors`` windows of ``radius`` tiles on a lattice, interpolated.
    ``local``: the run's full prediction for a window of ``radius`` tiles (its tiles' own cluster
    means and counts) at every lattice point (at most ``max_conditions``). Runs without a slide
    head map with ``local``.
    ``blend``: the mean of the ``tiles`` and ``local`` scores of a tile (both on the bulk's log2
    scale), with the std of ``local``; runs without a tile head map with ``local``.
    """

    model_config = ConfigDict(extra="forbid")

    method: MapMethod = Field(MapMethod.TILES, description="How a tile is scored.")
    smooth: float = Field(
        2.5,
        ge=0.0,
        le=16.0,
        description="tiles, readout: Gaussian sigma, in tiles, of the smoothing.",
    )
    tile_share: float = Field(
        0.4,
        gt=0.0,
        le=1.0,
        description="readout: a tile's score is the change of the slide's prediction when this "
        "share of its attention-pooled tissue is made like the tile, per unit share; 1 asks "
        "about a slide made only of tiles like it.",
    )
    attention_power: float = Field(
        0.0,
        ge=0.0,
        le=64.0,
        description="readout: a tile's read-out is pulled towards the attention-weighted slide "
        "level by min(1, relative attention) ** attention_power (tiles the run's attention "
        "pooling listens to less than average carry less evidence); 0 (default) turns it off.",
    )
    anchor: MapAnchor = Field(
        MapAnchor.SLIDE,
        description="tiles, readout: shift to the run's prediction per slide or window.",
    )
    anchors: int = Field(
        32,
        ge=1,
        le=4096,
        description="tiles, readout: most windows per slide predicted with the full run (their "
        "draws give the std map).",
    )
    radius: float = Field(
        3.0, ge=0.0, le=64.0, description="Window radius in tiles (grid steps) around a tile."
    )
    stride: int = Field(
        2,
        ge=1,
        le=64,
        description="Evaluate windows every ``stride`` grid steps, interpolate between.",
    )
    max_conditions: int = Field(
        384,
        ge=16,
        description="local: most windows per slide; the stride grows until the slide fits.",
    )
    min_tiles: int = Field(
        3, ge=1, description="Windows with fewer tiles are not evaluated (tissue edges)."
    )
    draws: int = Field(4, ge=2, le=256, description="Draws per window; their std is the map's std.")
    seed: int = Field(0, ge=0, description="Seed of the draws.")
    batch: int = Field(128, ge=1, description="Windows per call to the predictor.")

    def key(self) -> str:
        """Hash of every setting that changes the numbers of a map."""
        keep = self.model_dump(mode="json", exclude={"batch"})
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]
