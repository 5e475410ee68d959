"""Tile-grid geometry: positions, window counts against brute force, lattice interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.maps.grid import interpolate, make_lattice, tile_grid, window_counts


def _irregular(seed: int = 0, rows: int = 13, cols: int = 17, step: int = 224):
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:rows, 0:cols]
    grid = np.stack([cc.ravel(), rr.ravel()], 1)
    grid = grid[rng.random(len(grid)) > 0.3]  # holes, as quality control leaves them
    return grid, grid * step + np.array([448, 96])


def test_positions_are_tile_steps_from_the_corner():
    grid, coords = _irregular()
    g = tile_grid(coords, 224)
    np.testing.assert_allclose(g.pos, grid - grid.min(0))
    assert g.shape == (int(grid[:, 1].max() - grid[:, 1].min()) + 1,
                       int(grid[:, 0].max() - grid[:, 0].min()) + 1)  # fmt: skip
    assert tile_grid(coords, None).step == 224  # inferred from the spacing


@pytest.mark.parametrize("radius", [0.0, 1.0, 2.5, 4.0])
def test_window_counts_match_brute_force(radius):
    grid, coords = _irregular(1)
    g = tile_grid(coords, 224)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, len(coords))
    centres = rng.uniform(-1, 18, size=(40, 2))
    got = window_counts(g, labels, centres, radius, 7)  # (A, K)
    d = np.linalg.norm(g.pos[None] - centres[:, None], axis=2)  # (A, N)
    want = np.stack([np.bincount(labels[row <= radius], minlength=7) for row in d])
    np.testing.assert_array_equal(got, want)


def test_interpolation_is_exact_for_linear_fields_and_uses_valid_centres_only():
    grid, coords = _irregular(3)
    g = tile_grid(coords, 224)
    lat = make_lattice(g, 3)
    f = 2.0 * lat.centres[:, 0] - 3.0 * lat.centres[:, 1] + 1.0  # (A,)
    valid = np.ones(len(f), dtype=bool)
    rows, w = interpolate(g, lat, valid)
    np.testing.assert_allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(
        (f[rows] * w).sum(1), 2.0 * g.pos[:, 0] - 3.0 * g.pos[:, 1] + 1.0, atol=1e-9
    )
    valid[::2] = False  # drop half the centres: weights only on the rest, every tile covered
    rows, w = interpolate(g, lat, valid)
    assert np.all(valid[rows[w > 0]])
    np.testing.assert_allclose(w.sum(1), 1.0)


def test_stride_one_maps_every_tile_onto_its_own_centre():
    grid, coords = _irregular(4)
    g = tile_grid(coords, 224)
    lat = make_lattice(g, 1)
    rows, w = interpolate(g, lat, np.ones(len(lat.centres), dtype=bool))
    np.testing.assert_allclose(w[:, 0], 1.0)
    np.testing.assert_allclose(lat.centres[rows[:, 0]], g.pos)
