"""Resolve requested pathway names and gene symbols to columns of a run's predictions."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnafm.errors import InputError

__all__ = ["MapColumns", "resolve_columns", "split_names"]


@dataclass
class MapColumns:
    """The M map columns: pathways first (in request order), then genes."""

    names: list[str]  # (M,) pathway names and gene symbols as the run spells them
    kinds: list[str]  # (M,) "pathway" or "gene"
    weights: np.ndarray  # float64 (G, M): column m = weights of the genes averaged into it

    def __len__(self) -> int:
        return len(self.names)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Scores (..., M) of log2 expression (..., G) in the run's gene order."""
        return (np.asarray(values, dtype=np.float64) @ self.weights).astype(np.float32)


def split_names(value: str | Sequence[str] | None) -> list[str]:
    """A comma-separated string or a list as a list of stripped, non-empty names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(s).strip() for s in items if str(s).strip()]


def _lookup(requested: str, known: Sequence[str], what: str, source: str) -> int:
    exact = {n: i for i, n in enumerate(known)}
    if requested in exact:
        return exact[requested]
    folded = {n.upper(): i for i, n in enumerate(known)}
    if requested.upper() in folded:
        return folded[requested.upper()]
    close = difflib.get_close_matches(requested.upper(), list(folded), n=5, cutoff=0.6)
    hint = (
        f"close matches: {', '.join(known[folded[c]] for c in close)}"
        if close
        else f"e.g. {', '.join(list(known)[:5])}"
    )
    raise InputError(
        f"{source}: unknown {what} {requested!r} ({len(known)} {what}s in the run; {hint}). "
        f"Use a {what} name of the run (see its tokens.json / genes.json)."
    )


def resolve_columns(
    tokens, genes: Sequence[str], *, pathways: Sequence[str], symbols: Sequence[str], source: str
) -> MapColumns:
    """Columns for ``pathways`` (token names) and ``symbols`` (genes) of a run.

    Pathway columns use the averaging matrix of :func:`rnafm.pathways.pathway_matrix`, the same
    one the bulk ``obsm['pathway_scores']`` uses, so a map and the bulk prediction share a scale.

    Raises
    ------
    InputError
        A name is not a pathway token / gene of the run (the message lists close matches), or
        nothing was requested.
    """
    from rnafm.pathways.scores import pathway_matrix

    if not pathways and not symbols:
        raise InputError(f"{source}: no pathway or gene requested; pass pathways= or genes=.")
    pw_names = list(tokens.pathway_names)
    matrix = pathway_matrix(tokens)  # (G, P)
    names: list[str] = []
    kinds: list[str] = []
    cols: list[np.ndarray] = []
    for p in dict.fromkeys(pathways):
        i = _lookup(p, pw_names, "pathway", source)
        names.append(pw_names[i])
        kinds.append("pathway")
        cols.append(matrix[:, i])
    for g in dict.fromkeys(symbols):
        i = _lookup(g, list(genes), "gene", source)
        onehot = np.zeros(len(genes), dtype=np.float64)  # (G,)
        onehot[i] = 1.0
        names.append(list(genes)[i])
        kinds.append("gene")
        cols.append(onehot)
    return MapColumns(names=names, kinds=kinds, weights=np.stack(cols, axis=1))  # (G, M)
