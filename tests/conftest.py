"""Fixtures shared by several test folders."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.pathways.tokens import PathwayTokens


def make_tokens(n_genes: int, groups: list[list[int]], *, background: int = 0) -> PathwayTokens:
    """PathwayTokens over genes G0..G{n-1}; the last ``background`` groups are background."""
    flags = np.zeros(len(groups), dtype=bool)
    if background:
        flags[-background:] = True
    return PathwayTokens(
        genes=[f"G{i}" for i in range(n_genes)],
        names=[f"P{i}" for i in range(len(groups))],
        members=[np.asarray(g, dtype=np.int64) for g in groups],
        is_background=flags,
    )


@pytest.fixture
def tokens() -> PathwayTokens:
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
