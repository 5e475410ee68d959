"""Per-slide functions for the Dask runner tests (sent to workers by value)."""

from __future__ import annotations

import os
from pathlib import Path


def fake_slide_task(slide: str) -> dict:
    """Write ``<slide>.done`` beside the slide; a slide named ``bad*`` raises."""
    path = Path(slide)
    if path.name.startswith("bad"):
        raise ValueError(f"{path}: not a slide (corrupt header)")
    out = path.with_suffix(".done")
    out.write_text(path.name)
    return {"slide_id": path.stem, "n_tiles": len(path.stem), "pid": os.getpid()}
