"""Settings of a spatial map: the window, the evaluation grid, the draws."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MapMethod", "MapConfig"]


class MapMethod(str, Enum):
    """How a tile's local condition is formed."""

    LOCAL = "local"  # composition of the disk of tiles around it (the default)
    CLUSTER = "cluster"  # its own cluster alone (a baseline: no spatial context)


class MapConfig(BaseModel):
    """How the maps of a trained run are computed (saved as attributes of every map file).

    A tile's score is the run's prediction for a slide made of the tiles around it: the slide's
    own cluster means with the cluster sizes counted in a disk of ``radius`` tiles. Windows are
    evaluated on a lattice of ``stride`` tiles and interpolated to every tile.
    """

    model_config = ConfigDict(extra="forbid")

    method: MapMethod = Field(MapMethod.LOCAL, description="Local condition of a tile.")
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
        description="Most distinct windows per slide; the stride grows until the slide fits.",
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
