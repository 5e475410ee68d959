"""``maps/<slide>.h5``: write atomically, read back, and tell whether a finished map is current."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import atomic_path
from rnafm.errors import InputError
from rnafm.maps.compute import SlideMap

__all__ = ["map_path", "write_map", "read_map", "settings_key", "is_current"]

SCALE = "log2(x+1)"


def map_path(out: str | os.PathLike[str], slide_id: str) -> Path:
    """``<out>/<slide>.h5``."""
    return Path(out) / f"{slide_id}.h5"


def settings_key(settings: dict[str, Any]) -> str:
    """Hash of the settings that determine a map's numbers (config, columns, run, features)."""
    import hashlib

    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def _strings(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def write_map(path: str | os.PathLike[str], smap: SlideMap, *, settings: dict[str, Any]) -> Path:
    """Write a :class:`SlideMap` to ``path`` (h5) atomically, with its settings as attributes."""
    import h5py

    from rnafm import __version__

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=smap.coords.astype(np.int64))
        f.create_dataset("scores", data=smap.scores.astype(np.float32))
        f.create_dataset("std", data=smap.std.astype(np.float32))
        f.create_dataset("names", data=_strings(smap.names), dtype=h5py.string_dtype())
        f.create_dataset("kinds", data=_strings(smap.kinds), dtype=h5py.string_dtype())
        f.create_dataset("bulk", data=smap.bulk.astype(np.float32))
        f.create_dataset("bulk_std", data=smap.bulk_std.astype(np.float32))
        f.create_dataset("clusters", data=smap.clusters.astype(np.int64))
        for k, v in smap.attrs.items():
            f.attrs[k] = v
        f.attrs["scale"] = SCALE
        f.attrs["settings"] = json.dumps(settings, sort_keys=True, default=str)
        f.attrs["settings_key"] = settings_key(settings)
        f.attrs["rnafm_version"] = __version__
    return path


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_map(path: str | os.PathLike[str]) -> SlideMap:
    """Read a map file written by :func:`write_map`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            smap = SlideMap(
                slide_id=str(attrs.get("slide_id", Path(path).stem)),
                coords=np.asarray(f["coords"][()], dtype=np.int64),
                scores=np.asarray(f["scores"][()], dtype=np.float32),
                std=np.asarray(f["std"][()], dtype=np.float32),
                names=_text(f["names"][()]),
                kinds=_text(f["kinds"][()]) if "kinds" in f else [],
                bulk=np.asarray(f["bulk"][()]) if "bulk" in f else np.zeros(0, np.float32),
                bulk_std=np.asarray(f["bulk_std"][()]) if "bulk_std" in f else np.zeros(0),
                clusters=np.asarray(f["clusters"][()]) if "clusters" in f else np.zeros(0, int),
                attrs=attrs,
            )
    except (OSError, KeyError) as e:
        raise InputError(f"{path}: not a readable rnafm map file ({e}); rerun `rnafm maps`.") from e
    return smap


def is_current(path: str | os.PathLike[str], key: str) -> bool:
    """True when ``path`` is a finished map written with settings hashing to ``key``."""
    import h5py

    p = Path(path)
    if not p.is_file():
        return False
    try:
        with h5py.File(p, "r") as f:
            stored = f.attrs.get("settings_key")
    except OSError:
        return False
    if isinstance(stored, bytes):
        stored = stored.decode()
    return stored == key
