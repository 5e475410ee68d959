"""Tiny hand-made slides with a planted programme and a fake predictor that sees it.

A slide is a grid of tiles whose features carry a 'hot' flag in feature 0 inside a planted
region. The fake predictor returns, for a condition (cluster means, sizes), genes whose log2
value rises with the share of tiles in hot clusters, so a correct map is high exactly where the
region was planted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rnafm.features.clusters import ClusterConfig
from rnafm.features.io import write_features
from rnafm.model.tile_head import TileHead
from rnafm.pathways.tokens import PathwayTokens
from rnafm.predict.predictor import PredictionArrays

PATCH = 256
GENES = ["HOT1", "HOT2", "HOT3", "FLAT1", "FLAT2", "COLD1"]
PATHWAY = "HALLMARK_PLANTED"


def planted_tokens() -> PathwayTokens:
    return PathwayTokens(
        genes=list(GENES),
        names=[PATHWAY, "HALLMARK_FLAT", "background_0"],
        members=[np.array([0, 1, 2]), np.array([3, 4]), np.array([5])],
        is_background=np.array([False, False, True]),
    )


class PlantedTileHead(TileHead):
    """A tile head whose tile profile is base + shrink * gain * clip(feature 0, 0, 1), equal
    weights; its slide mixture is the real :meth:`TileHead.slide_log2`."""

    def __init__(self, dim: int, base: np.ndarray, gain: np.ndarray, shrink: float) -> None:
        super().__init__(dim, len(base), hidden=1, dropout=0.0)
        import torch

        self.register_buffer("base", torch.as_tensor(base, dtype=torch.float32))
        self.register_buffer("gain", torch.as_tensor(shrink * gain, dtype=torch.float32))

    def forward(self, x, genes=None):
        hot = x[..., :1].clamp(0.0, 1.0)  # (..., 1)
        h = self.base + hot * self.gain  # (..., G)
        return (h if genes is None else h[..., genes]), x[..., 0] * 0.0


class FakePredictor:
    """Predicts gene g = base_g + gain_g * (share of tiles in clusters with feature 0 > 0.5).

    Its slide head (``slide_head_log2``, the hook the read-out method uses) sees the same share,
    with the gain times ``head_shrink`` (below 1: a head that is one component of a run's
    prediction). Its tile head (:class:`PlantedTileHead`, unless ``tile_head`` is False) gives
    hot tiles the gain times ``tile_shrink``.
    """

    def __init__(
        self,
        *,
        k: int = 4,
        dim: int = 5,
        noise: float = 0.05,
        head_shrink: float = 1.0,
        tile_head: bool = True,
        tile_shrink: float = 1.0,
    ) -> None:
        self.tokens = planted_tokens()
        self.genes = list(GENES)
        self.feature_dim = dim
        self.config = SimpleNamespace(clusters=ClusterConfig(k=k, seed=0, max_iter=50))
        self.base = np.array([5.0, 4.0, 6.0, 3.0, 3.0, 7.0])
        self.gain = np.array([2.0, 3.0, 1.0, 0.0, 0.0, -2.0])
        self.noise = noise
        self.calls = 0
        self.head_calls = 0
        self.head_shrink = head_shrink
        self.tile_head = (
            PlantedTileHead(dim, self.base, self.gain, tile_shrink).eval() if tile_head else None
        )
        self.run_dir = Path("fake-run")

    def __repr__(self) -> str:
        return f"FakePredictor(noise={self.noise})"

    def _mean(self, clusters, sizes) -> np.ndarray:
        hot = (clusters[:, :, 0] > 0.5).astype(np.float64)  # (n, K)
        share = (sizes * hot).sum(1) / np.maximum(sizes.sum(1), 1e-9)  # (n,)
        return self.base[None] + share[:, None] * self.gain[None], share  # (n, G), (n,)

    def slide_head_log2(self, clusters, sizes) -> np.ndarray:
        """The slide head's estimate (n, G): the noise-free mean, its gain times ``head_shrink``."""
        self.head_calls += 1
        mean, _ = self._mean(clusters, sizes)
        return self.base[None] + self.head_shrink * (mean - self.base[None])  # (n, G)

    def predict_data(self, data, *, draws=16, seed=0, keep_draws=False, **_) -> PredictionArrays:
        self.calls += 1
        mean, share = self._mean(data.clusters, data.sizes)  # (n, G), (n,)
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((len(share), draws, len(self.genes)))  # (n, S, G)
        # more uncertain where the condition is mixed (share near 0.5)
        scale = self.noise * (1.0 + 4.0 * share * (1.0 - share))  # (n,)
        d = (mean[:, None, :] + scale[:, None, None] * eps).astype(np.float32)  # (n, S, G)
        return PredictionArrays(
            mean=d.mean(1), std=d.std(1, ddof=1), draws=d if keep_draws else None, level=0.9
        )


@dataclass
class PlantedSlide:
    slide_id: str
    path: Path
    coords: np.ndarray  # (N, 2)
    hot: np.ndarray  # bool (N,)
    grid: np.ndarray  # int (N, 2) (col, row)


def write_planted(
    folder: Path,
    slide_id: str,
    region,
    *,
    rows: int = 20,
    cols: int = 20,
    dim: int = 5,
    seed: int = 0,
    drop: float = 0.0,
) -> PlantedSlide:
    """Feature file of a rows x cols grid; ``region(col, row) -> bool`` marks hot tiles."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:rows, 0:cols]
    grid = np.stack([cc.ravel(), rr.ravel()], axis=1)  # (N, 2) (x, y)
    keep = rng.random(len(grid)) >= drop
    grid = grid[keep]
    rng.shuffle(grid)  # file order is not raster order
    hot = np.array([bool(region(int(x), int(y))) for x, y in grid])
    feats = rng.normal(0.0, 0.05, size=(len(grid), dim)).astype(np.float32)  # (N, D)
    feats[:, 0] += hot.astype(np.float32)
    feats[:, 1] += rng.integers(0, 2, len(grid)).astype(np.float32) * 0.3  # a nuisance split
    coords = (grid * PATCH + np.array([1000, 500])).astype(np.int64)  # (N, 2)
    attrs = {"patch_size": PATCH, "patch_size_level0": PATCH, "level0_mpp": 0.5,
             "stride_level0": PATCH, "encoder": "fake"}  # fmt: skip
    path = folder / f"{slide_id}.h5"
    write_features(path, feats, coords, attrs)
    return PlantedSlide(slide_id, path, coords, hot, grid)


@pytest.fixture
def predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def quadrant(tmp_path: Path) -> PlantedSlide:
    """Hot block: columns 0-6, rows 0-12 (top-left, taller than wide, so a transpose shows)."""
    return write_planted(tmp_path / "features", "SLIDE-A", lambda x, y: x < 7 and y < 13)


@pytest.fixture
def planted():
    """The planted-slide factory (tests import nothing from conftest under --import-mode=importlib)."""
    return write_planted


@pytest.fixture
def make_predictor():
    """The fake predictor class."""
    return FakePredictor
