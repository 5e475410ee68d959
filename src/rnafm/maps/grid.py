"""Tile grid geometry: tile positions in grid units, windows of tiles, lattice interpolation.

Positions are measured in tile steps (the tiling stride in level-0 pixels), so a window radius
of 3 means three tiles whatever the magnification. Nothing here assumes the tiles fill a
rectangle: tissue is irregular and tiles are dropped by quality control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "TileGrid",
    "tile_grid",
    "Lattice",
    "make_lattice",
    "window_members",
    "window_counts",
    "interpolate",
]


@dataclass
class TileGrid:
    """Tiles of one slide in grid units."""

    coords: np.ndarray  # int64 (N, 2) level-0 top-left corners (x, y)
    step: float  # level-0 pixels between neighbouring tiles
    origin: np.ndarray  # int64 (2,) level-0 corner of grid position (0, 0)
    pos: np.ndarray  # float64 (N, 2) positions (x, y) in tile steps from the origin

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the bounding grid."""
        hi = np.floor(self.pos.max(axis=0)).astype(np.int64) + 1 if len(self.pos) else (0, 0)
        return int(hi[1]), int(hi[0])


def infer_step(coords: np.ndarray) -> float | None:
    """Smallest positive spacing between tile corners along x or y (None for one tile)."""
    steps = []
    for axis in (0, 1):
        v = np.unique(coords[:, axis])
        if v.size > 1:
            steps.append(float(np.diff(v).min()))
    return min(steps) if steps else None


def tile_grid(coords: np.ndarray, step: float | None) -> TileGrid:
    """Grid positions of tiles whose top-left corners are ``coords`` (N, 2).

    Parameters
    ----------
    coords
        int64 (N, 2) level-0 (x, y) corners.
    step
        The tiling stride in level-0 pixels (``stride_level0`` or ``patch_size_level0``); None
        infers it from the smallest spacing of the corners.
    """
    c = np.asarray(coords, dtype=np.int64)  # (N, 2)
    s = step if step and step > 0 else infer_step(c)
    s = float(s or 1.0)
    origin = c.min(axis=0) if len(c) else np.zeros(2, dtype=np.int64)  # (2,)
    pos = (c - origin[None, :]) / s  # (N, 2)
    return TileGrid(coords=c, step=s, origin=origin, pos=pos)


@dataclass
class Lattice:
    """Window centres every ``stride`` tile steps; ``index[r, c]`` is the centre's row or -1."""

    stride: int
    centres: np.ndarray  # float64 (A, 2) positions (x, y) in tile steps
    index: np.ndarray  # int64 (rows, cols) row into ``centres`` or -1 (no window there)


def make_lattice(grid: TileGrid, stride: int) -> Lattice:
    """All lattice points over the grid's bounding box (pruned later by window contents)."""
    rows, cols = grid.shape
    lr, lc = -(-rows // stride) + 1, -(-cols // stride) + 1
    yy, xx = np.mgrid[0:lr, 0:lc]
    centres = np.stack([xx.ravel() * stride, yy.ravel() * stride], axis=1).astype(np.float64)
    index = np.arange(lr * lc, dtype=np.int64).reshape(lr, lc)
    return Lattice(stride=stride, centres=centres, index=index)


def window_members(grid: TileGrid, centres: np.ndarray, radius: float):
    """Tiles within ``radius`` tile steps of each centre.

    Parameters
    ----------
    grid
        The slide's tiles.
    centres
        float64 (A, 2) window centres in tile steps.
    radius
        Disk radius in tile steps (a tile belongs when its position is within it).

    Returns
    -------
    scipy.sparse.csr_matrix
        (A, N) with a 1 where tile n lies in window a.
    """
    from scipy import sparse
    from scipy.spatial import cKDTree

    hits = cKDTree(grid.pos).query_ball_point(centres, r=radius + 1e-9)  # A lists of tile rows
    lens = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))  # (A,)
    rows = np.repeat(np.arange(len(hits)), lens)  # (nnz,)
    cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits]) if lens.sum() else rows
    data = np.ones(rows.size, dtype=np.float64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(hits), len(grid.pos)))  # (A, N)


def window_counts(
    grid: TileGrid, labels: np.ndarray, centres: np.ndarray, radius: float, n_labels: int
) -> np.ndarray:
    """Tiles of each label (int64 (A, K)) within ``radius`` tile steps of each centre (A, 2)."""
    from scipy import sparse

    member = window_members(grid, centres, radius)  # (A, N)
    onehot = sparse.csr_matrix(
        (np.ones(len(labels)), (np.arange(len(labels)), labels)), shape=(len(labels), n_labels)
    )  # (N, K)
    return np.rint((member @ onehot).toarray()).astype(np.int64)  # (A, K)


def interpolate(
    grid: TileGrid, lattice: Lattice, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights from the valid lattice centres to every tile.

    Parameters
    ----------
    grid
        The slide's tiles.
    lattice
        The lattice the windows were evaluated on.
    valid
        bool (A,) centres that were evaluated.

    Returns
    -------
    rows, weights
        int64 (N, 4) centre rows and float64 (N, 4) weights summing to 1 per tile. Tiles whose
        four surrounding centres are all invalid take their nearest valid centre.
    """
    from scipy.spatial import cKDTree

    s = float(lattice.stride)
    q = grid.pos / s  # (N, 2) lattice units
    base = np.floor(q).astype(np.int64)  # (N, 2)
    frac = q - base  # (N, 2)
    lr, lc = lattice.index.shape
    rows = np.zeros((len(q), 4), dtype=np.int64)  # (N, 4)
    weights = np.zeros((len(q), 4), dtype=np.float64)  # (N, 4)
    for j, (dx, dy) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        cx, cy = base[:, 0] + dx, base[:, 1] + dy  # (N,)
        inside = (cx < lc) & (cy < lr)
        idx = np.where(inside, lattice.index[np.minimum(cy, lr - 1), np.minimum(cx, lc - 1)], 0)
        wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
        wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
        ok = inside & valid[idx]
        rows[:, j] = idx
        weights[:, j] = np.where(ok, wx * wy, 0.0)
    total = weights.sum(axis=1)  # (N,)
    lost = total <= 1e-12
    if lost.any():
        valid_rows = np.flatnonzero(valid)
        _, near = cKDTree(lattice.centres[valid_rows]).query(grid.pos[lost])
        rows[lost] = valid_rows[near][:, None]
        weights[lost] = np.array([1.0, 0.0, 0.0, 0.0])
        total[lost] = 1.0
    return rows, weights / total[:, None]
