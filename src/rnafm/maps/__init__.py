"""Spatial maps: per-tile pathway scores and genes of a trained run, with uncertainty.

``make_maps(model, features, slides=..., pathways=..., genes=..., out=...)`` writes
``<out>/<slide>.h5`` and PNGs; ``map_slide`` maps one feature file in memory. Imported lazily.
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = [
    "MapAnchor",
    "MapConfig",
    "MapMethod",
    "MapPredictor",
    "MapsResult",
    "SlideMap",
    "make_maps",
    "map_slide",
    "read_map",
    "resolve_columns",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MapAnchor": "config",
        "MapConfig": "config",
        "MapMethod": "config",
        "MapPredictor": "model",
        "MapsResult": "api",
        "make_maps": "api",
        "SlideMap": "compute",
        "map_slide": "compute",
        "read_map": "io",
        "resolve_columns": "names",
    },
)
