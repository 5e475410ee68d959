"""Tiny pathway layouts for model tests (a stand-in for rnafm.pathways.PathwayTokens)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class FakeTokens:
    """Duck-typed PathwayTokens: genes, names, members, is_background, adjacency()."""

    genes: list[str]
    names: list[str]
    members: list[np.ndarray]
    is_background: np.ndarray

    def adjacency(self) -> np.ndarray:
        t = len(self.members)
        sets = [set(m.tolist()) for m in self.members]
        adj = np.array([[bool(sets[i] & sets[j]) for j in range(t)] for i in range(t)])
        np.fill_diagonal(adj, True)
        return adj


def make_tokens(n_genes: int, groups: list[list[int]]) -> FakeTokens:
    return FakeTokens(
        genes=[f"G{i}" for i in range(n_genes)],
        names=[f"P{i}" for i in range(len(groups))],
        members=[np.asarray(g, dtype=np.int64) for g in groups],
        is_background=np.zeros(len(groups), dtype=bool),
    )


@pytest.fixture
def tokens() -> FakeTokens:
    """23 genes, 8 tokens: odd sizes, overlaps, gene 4 in three tokens, a size-1 token."""
    groups = [
        [0, 1, 2, 3, 4],
        [4, 5, 6],
        [4, 7, 8, 9, 10, 11, 12],
        [13],
        [2, 14, 15],
        [16, 17, 18, 19, 20, 21, 22],  # background-like chunk
        [1, 9],
        [5, 11, 17, 21, 3, 0, 8, 12, 19, 22, 6],
    ]
    return make_tokens(23, groups)
