"""Whole-slide images to tiles: open slides, detect tissue, cut tiles, write coords.

Public names are imported lazily (nothing heavy happens at ``import rnafm.slides``).
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = [
    "Slide",
    "SlideScale",
    "open_slide",
    "TilingConfig",
    "MaskConfig",
    "SlideTiles",
    "tile_slide",
    "tile_slides",
    "tile_slide_job",
    "TilingReport",
    "read_tile_file",
    "resolve_slides",
]

_WHERE = {
    "Slide": "wsi",
    "SlideScale": "wsi",
    "open_slide": "wsi",
    "TilingConfig": "config",
    "MaskConfig": "config",
    "SlideTiles": "tiling",
    "tile_slide": "tiling",
    "read_tile_file": "tiling",
    "tile_slides": "batch",
    "tile_slide_job": "batch",
    "TilingReport": "batch",
    "resolve_slides": "jobs",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
