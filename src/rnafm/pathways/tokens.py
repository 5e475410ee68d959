"""Pathway tokens: which gene sets become model tokens, and background tokens for the other genes.

Selection procedure (:func:`select_tokens`), deterministic for a given gene list, gene sets and
:class:`TokenConfig`:

1. Intersect every gene set with the cohort's genes (duplicates removed).
2. Keep sets whose intersected size ``n`` satisfies ``min_size <= n <= max_size``.
3. Drop near-duplicates: visit the sets from the largest to the smallest (ties by name) and drop a
   set whose Jaccard index with an already kept set is above ``jaccard_threshold`` (so of two
   near-duplicates the larger is kept).
4. Cap the number of pathway tokens at ``max_tokens``: when more sets remain, pick them greedily,
   each time the set adding the most not-yet-covered genes (ties: larger set, then name).
5. Kept pathway tokens keep the order of the gene-set file. Genes in no kept set become background
   tokens: taken in the order of the gene list and split into contiguous chunks of near-equal
   size, at most ``background_chunk_size`` genes each, named ``background_<i>``; with
   ``background = single`` they all form one token ``background_0`` (the published model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnafm.errors import InputError

__all__ = ["BackgroundLayout", "TokenConfig", "PathwayTokens", "select_tokens"]

logger = logging.getLogger(__name__)


class BackgroundLayout(str, Enum):
    """How the genes in no kept gene set are grouped into background tokens."""

    CHUNKS = "chunks"  # contiguous chunks of at most background_chunk_size genes (rnafm)
    SINGLE = "single"  # one background token for all of them (the published model)


class TokenConfig(BaseModel):
    """How gene sets become pathway tokens (see the module docstring for the procedure)."""

    model_config = ConfigDict(extra="forbid")

    min_size: int = Field(
        5, ge=1, description="Smallest set (after intersecting with the genes) kept."
    )
    max_size: int = Field(
        2000, ge=1, description="Largest set kept; bigger sets are too generic to be informative."
    )
    max_tokens: int = Field(
        400, ge=0, description="Most pathway tokens; chosen greedily by coverage of new genes."
    )
    jaccard_threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Sets more similar than this to a larger kept set are dropped.",
    )
    background_chunk_size: int = Field(
        256, ge=1, description="Most genes in one background token (genes in no kept set)."
    )
    background: BackgroundLayout = Field(
        BackgroundLayout.CHUNKS,
        description="Background genes in chunks of at most background_chunk_size (chunks) or "
        "all in one token (single, as the published model).",
    )


@dataclass
class PathwayTokens:
    """The model's gene tokens: pathways plus background chunks."""

    genes: list[str]  # model genes in output order
    names: list[str]  # one per token; background tokens are named "background_<i>"
    members: list[np.ndarray]  # int64 gene indices of each token
    is_background: np.ndarray  # bool (T,)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_pathways(self) -> int:
        """Number of non-background tokens."""
        return int((~self.is_background).sum())

    @property
    def pathway_names(self) -> list[str]:
        """Names of the non-background tokens, in token order."""
        return [n for n, b in zip(self.names, self.is_background, strict=True) if not b]

    def membership(self) -> np.ndarray:
        """Dense bool membership matrix (T, G)."""
        m = np.zeros((len(self.names), len(self.genes)), dtype=bool)  # (T, G)
        for t, idx in enumerate(self.members):
            m[t, idx] = True
        return m

    def adjacency(self) -> np.ndarray:
        """Bool (T, T): True where two tokens share at least one gene; the diagonal is True."""
        m = self.membership().astype(np.float32)  # (T, G)
        adj = (m @ m.T) > 0  # (T, T)
        np.fill_diagonal(adj, True)
        return adj

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists of str, int and bool)."""
        return {
            "genes": list(self.genes),
            "names": list(self.names),
            "members": [[int(i) for i in m] for m in self.members],
            "is_background": [bool(b) for b in self.is_background],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PathwayTokens:
        """Inverse of :meth:`to_dict`."""
        return cls(
            genes=[str(g) for g in d["genes"]],
            names=[str(n) for n in d["names"]],
            members=[np.asarray(m, dtype=np.int64) for m in d["members"]],
            is_background=np.asarray(d["is_background"], dtype=bool),
        )


def _near_duplicates(
    mat: Any, sizes: np.ndarray, order: np.ndarray, threshold: float
) -> np.ndarray:
    """Greedy keep-the-larger de-duplication; returns a bool keep mask over the rows of ``mat``."""
    n = mat.shape[0]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    # pairs (i, j) with Jaccard > threshold where j comes before i in the visiting order
    partners: dict[int, list[int]] = {}
    block = 512
    mt = mat.T.tocsc()
    for start in range(0, n, block):
        inter = np.asarray((mat[start : start + block] @ mt).todense())  # (b, S)
        union = sizes[start : start + block, None] + sizes[None, :] - inter  # (b, S)
        jac = inter / np.maximum(union, 1)  # (b, S)
        rows, cols = np.nonzero(jac > threshold)
        for r, c in zip(rows + start, cols, strict=True):
            if rank[c] < rank[r]:
                partners.setdefault(int(r), []).append(int(c))
    keep = np.ones(n, dtype=bool)
    for i in order:
        if any(keep[j] for j in partners.get(int(i), ())):
            keep[i] = False
    return keep


def _greedy_cover(mat: Any, sizes: np.ndarray, names: list[str], cap: int) -> np.ndarray:
    """Indices of ``cap`` rows chosen greedily by number of not-yet-covered genes."""
    n, g = mat.shape
    uncovered = np.ones(g, dtype=np.float64)  # (G,)
    chosen = np.zeros(n, dtype=bool)
    # tie-break key: larger size first, then name
    name_rank = np.empty(n, dtype=np.int64)
    name_rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(n)
    picks = []
    for _ in range(min(cap, n)):
        gain = np.asarray(mat @ uncovered).ravel()  # (S,)
        gain[chosen] = -1.0
        best = np.lexsort((name_rank, -sizes, -gain))[0]
        picks.append(int(best))
        chosen[best] = True
        uncovered[mat[best].indices] = 0.0
    return np.array(sorted(picks), dtype=np.int64)


def select_tokens(
    genes: Sequence[str], gene_sets: Mapping[str, Sequence[str]], config: TokenConfig
) -> PathwayTokens:
    """Choose pathway and background tokens for ``genes`` (procedure in the module docstring).

    Parameters
    ----------
    genes
        The model's genes (symbols) in output order; must be unique.
    gene_sets
        ``{set name: genes}``, e.g. from :func:`rnafm.pathways.load_gene_sets`.
    config
        Size bounds, Jaccard threshold, token cap and background chunk size.

    Raises
    ------
    InputError
        Duplicated genes, or no gene set shares any gene with ``genes``.
    """
    from scipy import sparse

    genes = [str(g) for g in genes]
    if not genes:
        raise InputError("select_tokens: the gene list is empty.")
    pos = {g: i for i, g in enumerate(genes)}
    if len(pos) < len(genes):
        dups = sorted({g for g in genes if genes.count(g) > 1})[:5]
        raise InputError(f"duplicated genes in the gene list, e.g. {dups}. Genes must be unique.")
    names: list[str] = []
    rows: list[np.ndarray] = []
    any_overlap = False
    for name, members in gene_sets.items():
        idx = np.unique([pos[g] for g in members if g in pos]).astype(np.int64)
        any_overlap |= idx.size > 0
        if config.min_size <= idx.size <= config.max_size:
            names.append(str(name))
            rows.append(idx)
    if not any_overlap:
        raise InputError(
            f"none of the {len(gene_sets)} gene sets shares a gene with the {len(genes)} cohort "
            f"genes (e.g. {genes[:3]}). Gene sets must use the same identifiers (HGNC symbols)."
        )
    if not rows:
        logger.warning(
            "no gene set has between %d and %d cohort genes; all genes go to background tokens",
            config.min_size,
            config.max_size,
        )
    kept = np.arange(len(rows), dtype=np.int64)
    if rows:
        sizes = np.array([r.size for r in rows], dtype=np.float64)
        indptr = np.concatenate([[0], np.cumsum([r.size for r in rows])])
        mat = sparse.csr_matrix(
            (np.ones(int(indptr[-1])), np.concatenate(rows), indptr), shape=(len(rows), len(genes))
        )
        order = np.lexsort((np.array(names, dtype=object), -sizes))
        keep = _near_duplicates(mat, sizes, order, config.jaccard_threshold)
        kept = np.flatnonzero(keep)
        if kept.size > config.max_tokens:
            sub = _greedy_cover(mat[kept], sizes[kept], [names[i] for i in kept], config.max_tokens)
            kept = kept[sub]
        n_dup = int((~keep).sum())
        logger.info(
            "%d gene sets in size bounds, %d near-duplicates dropped, %d pathway tokens kept",
            len(rows),
            n_dup,
            kept.size,
        )
    tok_names = [names[i] for i in kept]
    tok_members = [rows[i] for i in kept]
    covered = np.zeros(len(genes), dtype=bool)
    for m in tok_members:
        covered[m] = True
    rest = np.flatnonzero(~covered)
    n_chunks = -(-rest.size // config.background_chunk_size)  # ceil
    if config.background is BackgroundLayout.SINGLE:
        n_chunks = min(n_chunks, 1)
    for i, chunk in enumerate(np.array_split(rest, n_chunks) if n_chunks else []):
        tok_names.append(f"background_{i}")
        tok_members.append(chunk.astype(np.int64))
    is_bg = np.zeros(len(tok_names), dtype=bool)
    is_bg[len(kept) :] = True
    return PathwayTokens(genes=genes, names=tok_names, members=tok_members, is_background=is_bg)
