"""Configuration of tissue detection and tiling."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MaskConfig", "TilingConfig"]


class MaskConfig(BaseModel):
    """Tissue detection on a low-resolution copy of the slide."""

    model_config = ConfigDict(extra="forbid")

    mpp: float = Field(
        8.0, gt=0, description="Pixel size in microns of the image the mask is computed on."
    )
    max_size: int = Field(
        4096, ge=64, le=16384, description="Cap on the long side in pixels of the mask image."
    )
    min_saturation: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Floor on the Otsu saturation threshold (blank glass stays out).",
    )
    max_brightness: float = Field(
        0.92, ge=0.0, le=1.0, description="Pixels brighter than this (HSV value) are background."
    )
    closing_um: float = Field(
        20.0,
        ge=0.0,
        description="Radius in microns of the morphological closing that joins tissue.",
    )
    min_object_um2: float = Field(
        20_000.0,
        ge=0.0,
        description="Tissue specks smaller than this area (square microns) are removed.",
    )
    min_hole_um2: float = Field(
        20_000.0, ge=0.0, description="Holes smaller than this area (square microns) are filled."
    )


class TilingConfig(BaseModel):
    """How slides are cut into tiles (``rnafm tile``)."""

    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(
        256, ge=16, le=4096, description="Tile side in pixels at the target scale."
    )
    magnification: float | None = Field(
        None,
        gt=0,
        description="Target objective magnification (e.g. 20); default 20 when mpp is unset.",
    )
    mpp: float | None = Field(
        None, gt=0, description="Target microns per pixel (instead of magnification)."
    )
    base_magnification: float | None = Field(
        None, gt=0, description="Override the level-0 magnification found in the slide metadata."
    )
    overlap: int = Field(0, ge=0, description="Overlap of neighbouring tiles in target pixels.")
    min_tissue_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Minimum fraction of a tile covered by the tissue mask."
    )
    max_background_mean: float = Field(
        230.0,
        ge=0,
        le=255,
        description="Tiles whose mean grey level exceeds this are blank and dropped.",
    )
    min_contrast: float = Field(
        5.0,
        ge=0,
        description="Tiles whose grey-level standard deviation is below this are dropped.",
    )
    max_tiles: int | None = Field(
        None, ge=1, description="Keep at most this many tiles per slide, sampled reproducibly."
    )
    seed: int = Field(0, description="Seed of the --max-tiles sampling.")
    mask: MaskConfig = Field(default_factory=MaskConfig, description="Tissue detection settings.")
    thumbnail_size: int = Field(
        1024, ge=64, description="Long side of the thumbnail PNG in pixels."
    )
    workers: int = Field(2, ge=1, le=64, description="Threads reading tile strips in parallel.")
    overwrite: bool = Field(False, description="Redo slides whose tile file already exists.")
    progress: bool = Field(True, description="Show progress bars.")

    @model_validator(mode="after")
    def _one_target(self) -> TilingConfig:
        if self.magnification is not None and self.mpp is not None:
            raise ValueError("give either magnification or mpp, not both")
        if self.magnification is None and self.mpp is None:
            self.magnification = 20.0
        if self.overlap >= self.patch_size:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than patch_size ({self.patch_size})"
            )
        return self

    def digest(self) -> str:
        """Hash of every setting that changes which tiles are produced."""
        keep = self.model_dump(exclude={"workers", "overwrite", "progress", "thumbnail_size"})
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]
