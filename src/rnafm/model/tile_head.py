"""The tile head: an additive model of a slide's expression as a mixture of its tissue.

Every piece of tissue with feature vector x gets a log2 expression profile h(x) (G,) and a
weight logit a(x). A slide made of pieces i (tiles, or k-means clusters holding n_i tiles) is
predicted as the weighted mixture of their RNA::

    w_i = softmax_i(a(x_i) + log n_i)
    slide = log2 sum_i w_i 2^h(x_i)

so bulk RNA is fitted as what it is, RNA pooled from the tissue, and after training h(x) of one
tile is that tile's own expression on the scale of the bulk. The maps read it out tile by tile
(:mod:`rnafm.maps`). It is trained on the cluster means a run already has
(:mod:`rnafm.training.tile_head`) and applied to single tiles, which share the feature space.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TileHead"]

_LN2 = math.log(2.0)


class TileHead(nn.Module):
    """h(x) (log2 expression, G) and a(x) (mixture weight logit) of a feature vector x (D,).

    Parameters
    ----------
    feature_dim
        D, the tile feature dimension.
    n_genes
        G, the run's genes.
    hidden
        Width of the shared hidden layer.
    dropout
        Dropout after the hidden layer (training only).
    """

    def __init__(self, feature_dim: int, n_genes: int, *, hidden: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(feature_dim),
            nn.Linear(feature_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.expression = nn.Linear(hidden, n_genes)
        self.weight = nn.Linear(hidden, 1)

    def init_level(self, mean_log2: torch.Tensor) -> None:
        """Start every tile at the training mean ``mean_log2`` (G,) with small slopes."""
        with torch.no_grad():
            self.expression.bias.copy_(mean_log2)
            self.expression.weight.mul_(0.1)

    def forward(
        self, x: torch.Tensor, genes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h (..., G) log2 expression (only the ``genes`` indices, when given) and a (...)
        weight logits of features x (..., D)."""
        z = self.body(x)  # (..., H)
        if genes is None:
            h = self.expression(z)  # (..., G)
        else:
            w, b = self.expression.weight[genes], self.expression.bias[genes]  # (g, H), (g,)
            h = nn.functional.linear(z, w, b)  # (..., g)
        return h, self.weight(z)[..., 0]

    def slide_log2(
        self, means: torch.Tensor, sizes: torch.Tensor, genes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log2 of the size-weighted mixture (n, G) of the pieces ``means`` (n, K, D) holding
        ``sizes`` (n, K) tiles each (only the ``genes`` columns, when given); pieces of size 0
        (padding) take no part."""
        h, a = self(means, genes)  # (n, K, G), (n, K)
        live = sizes > 0  # (n, K)
        logits = torch.where(live, a + torch.log(sizes.clamp_min(1e-12)), -torch.inf)  # (n, K)
        logw = torch.log_softmax(logits, dim=1)  # (n, K)
        logw = torch.where(live, logw, torch.zeros_like(logw))  # no -inf * 0 below
        mix = torch.where(live[..., None], logw[..., None] + h * _LN2, -torch.inf)  # (n, K, G)
        return torch.logsumexp(mix, dim=1) / _LN2  # (n, G)
