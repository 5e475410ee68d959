"""The report's spatial-maps section: the PNGs of ``rnafm maps`` for a few slides, inlined."""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from rnafm._io import read_json
from rnafm.maps.api import MANIFEST

__all__ = ["is_maps_folder", "find_maps_folders", "maps_section"]

logger = logging.getLogger(__name__)


def is_maps_folder(path: Path) -> bool:
    """True for a folder written by ``rnafm maps`` (it holds ``maps.json``)."""
    return path.is_dir() and (path / MANIFEST).is_file()


def find_maps_folders(inputs: Sequence[Path]) -> list[Path]:
    """Maps folders among ``inputs`` plus a ``maps/`` folder beside any other input."""
    found: list[Path] = []
    for item in inputs:
        for cand in (item, item.parent / "maps"):
            if is_maps_folder(cand) and cand.resolve() not in {f.resolve() for f in found}:
                found.append(cand)
    return found


def _jpeg_uri(png: Path, max_width: int) -> str | None:
    """The PNG shrunk to ``max_width`` and re-encoded as JPEG (keeps the page light)."""
    from PIL import Image

    try:
        with Image.open(png) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize((max_width, round(im.height * max_width / im.width)))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except OSError as e:
        logger.warning("%s: cannot read the map picture (%s); left out of the report", png, e)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def maps_section(
    folders: Sequence[Path], *, max_slides: int = 3, max_columns: int = 3, max_width: int = 1100
) -> str:
    """HTML of the maps of up to ``max_slides`` slides (``max_columns`` maps each)."""
    figures: list[str] = []
    shown = 0
    for folder in folders:
        try:
            slides = dict(read_json(folder / MANIFEST).get("slides", {}))
        except (OSError, ValueError, AttributeError) as e:
            logger.warning(
                "%s: unreadable %s (%s); maps left out of the report", folder, MANIFEST, e
            )
            continue
        for sid, entry in sorted(slides.items()):
            if shown >= max_slides:
                break
            pngs = [folder / p for p in entry.get("pngs", [])][:max_columns]
            uris = [(p, u) for p in pngs if p.is_file() and (u := _jpeg_uri(p, max_width))]
            if not uris:
                continue
            shown += 1
            for png, uri in uris:
                caption = f"{sid}: {png.stem} (left: per-tile score; right: std of the draws)"
                figures.append(
                    f'<figure><img alt="{html.escape(caption)}" src="{uri}">'
                    f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>'
                )
    if not figures:
        return ""
    intro = (
        '<p class="note">Per-tile predictions of <code>rnafm maps</code> over the slide: each tile '
        "is scored by the model's prediction for the tissue around it (same log2 scale as the "
        "bulk prediction, marked by the black line on the colour bar). The uncertainty panel "
        "shows the spread of the model's draws.</p>"
    )
    return "<h2>Spatial maps</h2>" + intro + "".join(figures)
