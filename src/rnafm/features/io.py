"""Read and write per-slide tile-feature h5 files.

Layouts read
------------
- TRIDENT: datasets ``features`` (N, D) and ``coords`` (N, 2) with provenance attributes.
- CLAM: ``h5_files/<slide>.h5`` with the same datasets, possibly with a leading batch axis
  ``(1, N, D)`` / ``(1, N, 2)`` and no attributes.
- SEQUOIA / RNA-FM: ``<slide>/<slide>.h5`` with ``cluster_features`` (K, D) (precomputed k-means
  means; layout ``CLUSTERS``) or ``uni_features`` / ``resnet_features`` (tile features).

Files are always written in the TRIDENT layout.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import atomic_path
from rnafm.errors import InputError

__all__ = [
    "FeatureLayout",
    "SlideFeatures",
    "read_features",
    "write_features",
    "find_feature_files",
    "slide_id_from_path",
]

logger = logging.getLogger(__name__)

_TILE_DATASETS = ("features", "uni_features", "resnet_features")
_CLUSTER_DATASET = "cluster_features"
_H5_SUFFIXES = (".h5", ".hdf5")


class FeatureLayout(str, Enum):
    """Where a feature file came from, which decides how its arrays are read."""

    TRIDENT = "trident"
    CLAM = "clam"
    CLUSTERS = "clusters"  # SEQUOIA/RNA-FM cluster_features: (K, D) precomputed cluster means


@dataclass
class SlideFeatures:
    """Tile (or precomputed cluster) features of one slide."""

    slide_id: str
    features: np.ndarray  # float32 (N, D) tile features, or (K, D) precomputed cluster means
    coords: np.ndarray | None  # int64 (N, 2) level-0 top-left corners
    attrs: dict[str, Any] = field(default_factory=dict)
    layout: FeatureLayout = FeatureLayout.TRIDENT

    @property
    def n_tiles(self) -> int:
        """Number of rows of ``features``."""
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.features.shape[1])


def slide_id_from_path(path: str | os.PathLike[str]) -> str:
    """Slide id of a feature file: its name without the ``.h5`` suffix."""
    name = Path(path).name
    for suffix in _H5_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _to_python(value: Any) -> Any:
    """Turn an h5py attribute value into a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
        return value.tolist()
    return value


def _squeeze_batch(arr: np.ndarray, ndim: int, *, name: str, path: Path) -> np.ndarray:
    """Drop CLAM's leading batch axis of size 1; check the final rank."""
    while arr.ndim > ndim and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != ndim:
        raise InputError(
            f"{path}: dataset {name!r} has shape {arr.shape}, expected {ndim} dimensions. "
            "Re-extract the features with `rnafm extract`."
        )
    return arr


def read_features(path: str | os.PathLike[str]) -> SlideFeatures:
    """Read one feature file in any supported layout.

    Parameters
    ----------
    path
        An ``.h5`` file with ``features`` (+ ``coords``), ``cluster_features``,
        ``uni_features`` or ``resnet_features``.

    Returns
    -------
    SlideFeatures
        ``features`` as float32 (N, D); ``coords`` int64 (N, 2) or None.

    Raises
    ------
    InputError
        The file is missing, not HDF5, has no known dataset, has NaN/inf values or no rows.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: feature file not found. Check --features or run `rnafm extract`.")
    try:
        with h5py.File(p, "r") as f:
            attrs = {str(k): _to_python(v) for k, v in f.attrs.items()}
            keys = set(f.keys())
            coords = None
            if _CLUSTER_DATASET in keys and not keys.intersection(_TILE_DATASETS):
                name, layout = _CLUSTER_DATASET, FeatureLayout.CLUSTERS
            else:
                name = next((k for k in _TILE_DATASETS if k in keys), None)
                if name is None:
                    raise InputError(
                        f"{p}: no feature dataset found (has {sorted(keys)}; expected one of "
                        f"{list(_TILE_DATASETS) + [_CLUSTER_DATASET]}). Is this a tile-feature file? "
                        "Create one with `rnafm extract`."
                    )
                # TRIDENT keeps patch attributes on the datasets; the file's own attrs win
                ds_attrs: dict[str, Any] = {}
                for ds in ("coords", name):
                    if ds in keys:
                        ds_attrs.update({str(k): _to_python(v) for k, v in f[ds].attrs.items()})
                attrs = {**ds_attrs, **attrs}
                layout = FeatureLayout.TRIDENT if attrs else FeatureLayout.CLAM
                if "coords" in keys:
                    coords = np.asarray(f["coords"][()])
            feats = np.asarray(f[name][()])
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise InputError(
            f"{p}: cannot read the feature file ({e}). It may be truncated or not HDF5; "
            "re-create it with `rnafm extract`."
        ) from e

    feats = _squeeze_batch(feats, 2, name=name, path=p)
    if feats.shape[0] == 0:
        raise InputError(
            f"{p}: dataset {name!r} has no rows (no tissue tiles). Re-tile this slide."
        )
    if not np.issubdtype(feats.dtype, np.number):
        raise InputError(f"{p}: dataset {name!r} is not numeric ({feats.dtype}).")
    feats = feats.astype(np.float32, copy=False)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise InputError(
            f"{p}: {bad} of {feats.shape[0]} rows of {name!r} contain NaN or inf. "
            "Re-extract the features of this slide (the encoder may have overflowed in fp16)."
        )
    if coords is not None:
        coords = _squeeze_batch(coords, 2, name="coords", path=p)
        if coords.shape[0] != feats.shape[0]:
            raise InputError(
                f"{p}: 'coords' has {coords.shape[0]} rows but {name!r} has {feats.shape[0]}. "
                "The file is inconsistent; re-extract it."
            )
        coords = coords.astype(np.int64, copy=False)
    return SlideFeatures(
        slide_id=slide_id_from_path(p), features=feats, coords=coords, attrs=attrs, layout=layout
    )


def write_features(
    path: str | os.PathLike[str],
    features: np.ndarray,
    coords: np.ndarray | None,
    attrs: dict[str, Any],
) -> None:
    """Write tile features in the TRIDENT layout, atomically.

    Parameters
    ----------
    path
        Destination ``.h5``; replaced only once the file is complete.
    features
        (N, D) tile features, stored as float32.
    coords
        (N, 2) level-0 top-left corners, stored as int64 (may be None).
    attrs
        Provenance attributes (``patch_size``, ``encoder``...); ``rnafm_version`` is added.
    """
    import h5py

    from rnafm import __version__

    feats = np.asarray(features, dtype=np.float32)  # (N, D)
    if feats.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {feats.shape}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=feats)
        if coords is not None:
            c = np.asarray(coords, dtype=np.int64)  # (N, 2)
            if c.shape != (feats.shape[0], 2):
                raise ValueError(f"coords must be ({feats.shape[0]}, 2), got {c.shape}")
            f.create_dataset("coords", data=c)
        for key, value in attrs.items():
            if value is None:
                continue
            f.attrs[key] = value.value if isinstance(value, Enum) else value
        f.attrs["rnafm_version"] = __version__


def _is_h5(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_H5_SUFFIXES) and not p.name.startswith(".")


def find_feature_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Map slide id -> feature file for every slide in ``folder``.

    Accepted layouts: ``folder/*.h5`` (TRIDENT), ``folder/h5_files/*.h5`` (CLAM) and
    ``folder/<slide>/<slide>.h5`` (SEQUOIA/RNA-FM). A slide found in two layouts keeps the first
    in that order (and a warning is logged). Hidden files and the ``.rnafm_cache`` folder are ignored.

    Raises
    ------
    InputError
        ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(
            f"{root}: feature folder not found. Pass the folder holding the per-slide .h5 files "
            "written by `rnafm extract` (or TRIDENT/CLAM/SEQUOIA)."
        )
    found: dict[str, Path] = {}

    def add(p: Path) -> None:
        sid = slide_id_from_path(p)
        if sid in found:
            if found[sid] != p:
                logger.warning(
                    "slide %s has two feature files; using %s, ignoring %s", sid, found[sid], p
                )
            return
        found[sid] = p

    for p in sorted(root.iterdir()):
        if _is_h5(p):
            add(p)
    clam = root / "h5_files"
    if clam.is_dir():
        for p in sorted(clam.iterdir()):
            if _is_h5(p):
                add(p)
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.name != "h5_files":
            for suffix in _H5_SUFFIXES:
                p = d / f"{d.name}{suffix}"
                if _is_h5(p):
                    add(p)
                    break
    return found
