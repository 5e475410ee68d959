"""Pathway scores: one number per pathway token, computed the same way for true and predicted values."""

from __future__ import annotations

import numpy as np

from rnafm.pathways.tokens import PathwayTokens

__all__ = ["pathway_scores", "pathway_matrix"]


def pathway_matrix(tokens: PathwayTokens) -> np.ndarray:
    """Averaging matrix (G, P) over the non-background tokens: column p is 1/|p| on p's genes."""
    pw = [m for m, b in zip(tokens.members, tokens.is_background, strict=True) if not b]
    a = np.zeros((len(tokens.genes), len(pw)), dtype=np.float64)  # (G, P)
    for p, idx in enumerate(pw):
        a[idx, p] = 1.0 / max(len(idx), 1)
    return a


def pathway_scores(
    values: np.ndarray,
    tokens: PathwayTokens,
    *,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> np.ndarray:
    """Mean of the member genes' values for every pathway (non-background) token.

    Parameters
    ----------
    values
        (n, G) expression in the gene order of ``tokens.genes`` (rnafm uses log2(x+1)).
    tokens
        The pathway tokens.
    mean, std
        Optional (G,) statistics: genes are z-scored ``(v - mean) / std`` before averaging, so the
        score is the mean z-score of the members. Pass the same statistics (e.g. the training
        cohort's) for true and predicted values so the two are comparable.

    Returns
    -------
    np.ndarray
        float32 (n, P), P = number of non-background tokens, in token order.
    """
    v = np.asarray(values, dtype=np.float64)  # (n, G)
    if v.ndim != 2 or v.shape[1] != len(tokens.genes):
        raise ValueError(f"values must be (n, {len(tokens.genes)}), got {v.shape}")
    if mean is not None:
        v = v - np.asarray(mean, dtype=np.float64)[None, :]  # (n, G)
    if std is not None:
        s = np.asarray(std, dtype=np.float64)  # (G,)
        v = v / np.where(s > 0, s, 1.0)[None, :]  # (n, G)
    return (v @ pathway_matrix(tokens)).astype(np.float32)  # (n, P)
