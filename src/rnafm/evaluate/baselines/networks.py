"""Networks of the published baselines, re-implemented small over the K cluster tokens.

Every network maps cluster means ``x`` (B, K, D) and a validity mask (B, K) (False for the
padding rows of slides with fewer than K clusters) to z-scored expression (B, G).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HE2RNANet", "TransformerNet", "LinearAttention", "SequoiaNet"]


def _masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid tokens: h (B, K, H), mask (B, K) -> (B, H)."""
    w = mask.to(h.dtype).unsqueeze(-1)  # (B, K, 1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, H)


class HE2RNANet(nn.Module):
    """HE2RNA: a per-tile (here per-cluster) MLP predicting every gene, then for each gene the
    mean of its top-k cluster predictions, averaged over several k (Schmauch et al. 2020)."""

    def __init__(
        self, d_in: int, n_genes: int, *, hidden: int, dropout: float, ks: Sequence[int]
    ) -> None:
        super().__init__()
        self.ks = tuple(int(k) for k in ks)
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_genes)
        )

    def forward(self, x: Tensor, mask: Tensor, k: int | None = None) -> Tensor:
        """Top-k pooled predictions; ``k`` fixes one k (training samples one per batch)."""
        h = self.mlp(x)  # (B, K, G)
        h = h.masked_fill(~mask.unsqueeze(-1), float("-inf"))  # (B, K, G)
        n_valid = mask.sum(1).clamp_min(1)  # (B,)
        outs = []
        for kk in (k,) if k is not None else self.ks:
            kk = min(kk, h.shape[1])
            top = h.topk(kk, dim=1).values  # (B, kk, G), valid clusters first
            top = torch.nan_to_num(top, neginf=0.0)  # (B, kk, G)
            outs.append(top.sum(1) / n_valid.clamp_max(kk).unsqueeze(-1))  # (B, G)
        return torch.stack(outs).mean(0)  # (B, G)


class TransformerNet(nn.Module):
    """tRNAsformer-style: linear embedding of cluster tokens, a transformer encoder, mean
    pooling over tokens, and a linear head (Alsaafin et al. 2023)."""

    def __init__(
        self, d_in: int, n_genes: int, *, hidden: int, depth: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=2 * hidden,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_genes)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Predictions (B, G)."""
        h = self.embed(x)  # (B, K, H)
        h = self.encoder(h, src_key_padding_mask=~mask)  # (B, K, H)
        return self.head(self.norm(_masked_mean(h, mask)))  # (B, G)


class LinearAttention(nn.Module):
    """Linearised multi-head self-attention with the elu(x) + 1 feature map
    (Katharopoulos et al. 2020): cost linear in the number of tokens."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Attention output (B, K, H)."""
        b, k, d = x.shape
        q, kk, v = self.qkv(x).view(b, k, 3, self.heads, d // self.heads).unbind(2)  # (B, K, h, e)
        q, kk = F.elu(q) + 1, F.elu(kk) + 1  # (B, K, h, e) positive features
        kk = kk * mask[:, :, None, None].to(kk.dtype)  # (B, K, h, e) padding contributes nothing
        kv = torch.einsum("bkhe,bkhf->bhef", kk, v)  # (B, h, e, e)
        z = 1.0 / (torch.einsum("bqhe,bhe->bqh", q, kk.sum(1)) + 1e-6)  # (B, K, h)
        o = torch.einsum("bqhe,bhef,bqh->bqhf", q, kv, z)  # (B, K, h, e)
        return self.drop(self.out(o.reshape(b, k, d)))  # (B, K, H)


class _SequoiaBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)  # (B, K, H)
        return x + self.mlp(self.norm2(x))  # (B, K, H)


class SequoiaNet(nn.Module):
    """SEQUOIA: a linearised-attention transformer over the K k-means cluster tokens, mean
    pooling and a LayerNorm + linear head (Pizurica et al. 2024)."""

    def __init__(
        self, d_in: int, n_genes: int, *, hidden: int, depth: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, hidden)
        self.blocks = nn.ModuleList(_SequoiaBlock(hidden, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_genes)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Predictions (B, G)."""
        h = self.embed(x)  # (B, K, H)
        for blk in self.blocks:
            h = blk(h, mask)  # (B, K, H)
        return self.head(self.norm(_masked_mean(h, mask)))  # (B, G)
