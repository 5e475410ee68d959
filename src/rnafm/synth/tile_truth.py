"""Per-tile truth of a synthetic slide: where each gene-set programme is active.

A truth file ``truth/<slide_id>.h5`` sits beside the feature file of the same slide and holds:

- ``coords`` int64 (N, 2): level-0 top-left corners, equal to the feature file's ``coords``;
- ``activity`` float32 (N, P): activity (>= 0) of each programme in each tile;
- ``names`` (P,) str: the Hallmark gene-set name of each programme;
- ``tile_type`` int64 (N,) and ``type_names`` (T,) str: the tissue type of each tile (optional);
- ``sampled`` bool (N,): whether the tile lies in the region the RNA was extracted from (optional).

For the image-level cohort of :mod:`rnafm.synth.cohort`, :func:`tile_truth_for_slide` derives
the same truth from the saved label grid and patient latents for any tile coordinates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import atomic_path
from rnafm.errors import InputError

__all__ = [
    "TileTruth",
    "read_tile_truth",
    "write_tile_truth",
    "tile_truth_for_slide",
    "IMAGE_PROGRAMMES",
]


@dataclass
class TileTruth:
    """Programme activity of every tile of one slide."""

    coords: np.ndarray  # int64 (N, 2) level-0 top-left corners
    activity: np.ndarray  # float32 (N, P) programme activity, >= 0
    names: list[str]  # (P,) Hallmark set name of each programme
    tile_type: np.ndarray | None = None  # int64 (N,) index into type_names
    type_names: list[str] | None = None
    sampled: np.ndarray | None = None  # bool (N,) tile inside the RNA-sampled region

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return int(self.coords.shape[0])

    def column(self, name: str) -> np.ndarray:
        """Activity (N,) of the programme ``name`` (with or without the ``HALLMARK_`` prefix)."""
        want = name.upper()
        for j, n in enumerate(self.names):
            if n.upper() in (want, f"HALLMARK_{want}"):
                return self.activity[:, j]
        raise KeyError(f"no programme {name!r}; have {self.names}")


def write_tile_truth(
    path: str | os.PathLike[str], truth: TileTruth, attrs: dict[str, Any] | None = None
) -> None:
    """Write ``truth`` to an h5 file atomically (layout in the module docstring)."""
    import h5py

    n = truth.n_tiles
    act = np.asarray(truth.activity, dtype=np.float32).reshape(n, len(truth.names))  # (N, P)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=np.asarray(truth.coords, dtype=np.int64))
        f.create_dataset("activity", data=act)
        f.create_dataset("names", data=np.asarray(truth.names, dtype="S"))
        if truth.tile_type is not None:
            f.create_dataset("tile_type", data=np.asarray(truth.tile_type, dtype=np.int64))
            f.create_dataset("type_names", data=np.asarray(truth.type_names or [], dtype="S"))
        if truth.sampled is not None:
            f.create_dataset("sampled", data=np.asarray(truth.sampled, dtype=bool))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def _strings(ds: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in ds[()]]


def read_tile_truth(path: str | os.PathLike[str]) -> TileTruth:
    """Read a truth file written by :func:`write_tile_truth`.

    Raises
    ------
    InputError
        The file is missing or lacks ``coords`` / ``activity`` / ``names``.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: tile truth not found. Generate the cohort with truth files again.")
    with h5py.File(p, "r") as f:
        missing = [k for k in ("coords", "activity", "names") if k not in f]
        if missing:
            raise InputError(f"{p}: not a tile-truth file (missing {missing}); regenerate it.")
        return TileTruth(
            coords=f["coords"][()].astype(np.int64),
            activity=f["activity"][()].astype(np.float32),
            names=_strings(f["names"]),
            tile_type=f["tile_type"][()].astype(np.int64) if "tile_type" in f else None,
            type_names=_strings(f["type_names"]) if "type_names" in f else None,
            sampled=f["sampled"][()].astype(bool) if "sampled" in f else None,
        )


# --------------------------------------------------------------------------------------------
# Image-level cohort (rnafm.synth.cohort): truth from the saved label grids.

IMAGE_PROGRAMMES = (
    "HALLMARK_INTERFERON_GAMMA_RESPONSE",
    "HALLMARK_HYPOXIA",
    "HALLMARK_E2F_TARGETS",
)
_IFNG_DECAY_UM = 48.0  # interferon-gamma falls by e every 48 um away from a lymphoid aggregate
_IFNG_REACH_UM = 160.0  # and is zero beyond
_HYPOXIA_DECAY_UM = 32.0  # hypoxia: rim around necrosis, falling by e every 32 um
_HYPOXIA_REACH_UM = 96.0


def _label_activity(labels: np.ndarray, infiltration: float, prolif: float, cell_um: float):
    """Activity grids (P, gh, gw) of :data:`IMAGE_PROGRAMMES` from a label grid."""
    from scipy import ndimage

    from rnafm.synth.config import Label

    tissue = labels != Label.BACKGROUND
    lymph = labels == Label.LYMPHOCYTE
    infil = labels == Label.TUMOUR_INFILTRATED
    necro = labels == Label.NECROSIS
    out = np.zeros((len(IMAGE_PROGRAMMES),) + labels.shape, dtype=np.float32)  # (P, gh, gw)
    if lymph.any() or infil.any():
        d = ndimage.distance_transform_edt(~(lymph | infil)) * cell_um  # (gh, gw) microns
        ifng = np.exp(-d / _IFNG_DECAY_UM) * (d <= _IFNG_REACH_UM)
        out[0] = ifng * (0.5 + infiltration) * ~necro  # dead tissue has no response
    if necro.any():
        d = ndimage.distance_transform_edt(~necro) * cell_um
        rim = np.exp(-np.maximum(d - cell_um, 0.0) / _HYPOXIA_DECAY_UM)
        out[1] = rim * (d > 0) * (d <= _HYPOXIA_REACH_UM)
    tumour = (labels == Label.TUMOUR) | infil
    out[2] = tumour * np.log1p(np.exp(prolif))  # softplus keeps it >= 0
    out[:, ~tissue] = 0.0
    return out


def tile_truth_for_slide(
    cohort: Any,
    slide_id: str,
    coords: np.ndarray,
    patch_size_level0: int,
    *,
    latents: dict[str, Any] | None = None,
) -> TileTruth:
    """Per-tile programme truth of one slide of an image-level synthetic cohort.

    Parameters
    ----------
    cohort
        A :class:`rnafm.synth.cohort.SynthCohort` (or its root folder).
    slide_id
        The slide.
    coords
        (N, 2) level-0 top-left corners (x, y) of the tiles, e.g. a feature file's ``coords``.
    patch_size_level0
        Tile side in level-0 pixels.
    latents
        ``cohort.load_latents()`` when already loaded (saves reading it again per slide).

    Returns
    -------
    TileTruth
        ``activity`` (N, 3) for :data:`IMAGE_PROGRAMMES`: interferon-gamma response decaying
        with distance from lymphoid aggregates and infiltrated nests (scaled by 0.5 + the
        patient's infiltration; zero in necrosis and beyond 160 um), hypoxia on a rim around
        necrosis (zero inside it and beyond 96 um), proliferation (E2F targets) in tumour tiles
        scaled by softplus of the patient's proliferation latent; each averaged over the label
        cells the tile covers. ``tile_type`` is the tile's majority label and ``sampled`` whether
        that label is inside the RNA-sampled region.
    """
    from rnafm.synth.cohort import SynthCohort, load_cohort
    from rnafm.synth.config import ADJACENT_LABELS, Label, Programme

    co = cohort if isinstance(cohort, SynthCohort) else load_cohort(cohort)
    lat = latents if latents is not None else co.load_latents()
    if slide_id not in lat["labels"]:
        raise InputError(f"{co.latent}: no label grid for slide {slide_id!r}; check the slide id.")
    labels = lat["labels"][slide_id]  # (gh, gw) uint8
    cell = int(lat["cell_px"])
    p = int(lat["slide_patient"][list(map(str, lat["slide_ids"])).index(slide_id)])
    progs = lat["programmes"][p]
    infil = float(progs[list(Programme).index(Programme.INFILTRATION)])
    prolif = float(progs[list(Programme).index(Programme.PROLIFERATION)])
    grid = _label_activity(labels, infil, prolif, cell * float(lat["mpp"]))  # (P, gh, gw)

    xy = np.asarray(coords, dtype=np.int64).reshape(-1, 2)  # (N, 2)
    gh, gw = labels.shape
    k = max(1, -(-int(patch_size_level0) // cell))  # label cells per tile side
    offs = np.arange(k)  # (k,) cell offsets inside a tile
    rows = np.clip(xy[:, 1:2] // cell + offs[None], 0, gh - 1)  # (N, k)
    cols = np.clip(xy[:, 0:1] // cell + offs[None], 0, gw - 1)  # (N, k)
    rr, cc = rows[:, :, None], cols[:, None, :]  # (N, k, 1), (N, 1, k)
    act = grid[:, rr, cc].mean(axis=(2, 3)).T  # (N, P)
    lab = labels[rr, cc].reshape(len(xy), -1)  # (N, k*k)
    major = np.array([np.bincount(r, minlength=len(Label)).argmax() for r in lab], dtype=np.int64)
    sampled = ~np.isin(major, [int(v) for v in ADJACENT_LABELS]) & (major != Label.BACKGROUND)
    return TileTruth(
        coords=xy,
        activity=act.astype(np.float32),
        names=list(IMAGE_PROGRAMMES),
        tile_type=major,
        type_names=[lab_.name.lower() for lab_ in Label],
        sampled=sampled,
    )
