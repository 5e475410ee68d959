"""Conditioning: time embedding, image (cluster) encoder and the Condition carrier."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Condition",
    "GatedAttentionPool",
    "ImageEncoder",
    "TimeEmbedding",
    "cluster_attention_bias",
]


@dataclass
class Condition:
    """The encoded slide condition, computed once per slide and reused at every solver step.

    Attributes
    ----------
    vec
        (B, H) image embedding (added to the time embedding, drives adaLN).
    tokens
        (B, K, H) cluster tokens for cross-attention, or None when the model does not use them.
    token_bias
        (B, K) additive attention bias over the cluster tokens (-inf for empty clusters,
        log-size with cluster-size weights), or None for no bias.
    """

    vec: Tensor
    tokens: Tensor | None = None
    token_bias: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.vec.shape[0]

    def repeat(self, n: int) -> Condition:
        """Repeat every row n times, consecutively: row i becomes rows i*n ... i*n + n - 1."""

        def rep(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.repeat_interleave(n, dim=0)

        return Condition(rep(self.vec), rep(self.tokens), rep(self.token_bias))

    def to(self, device: torch.device | str) -> Condition:
        """Move to a device."""

        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Condition(mv(self.vec), mv(self.tokens), mv(self.token_bias))

    def select(self, index: Tensor | slice) -> Condition:
        """Rows ``index`` of the condition."""

        def sel(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return Condition(sel(self.vec), sel(self.tokens), sel(self.token_bias))

    @staticmethod
    def cat(conds: list[Condition]) -> Condition:
        """Concatenate conditions along the batch (a missing bias counts as zero)."""
        vec = torch.cat([c.vec for c in conds], 0)  # (sum B, H)
        if any(c.tokens is None for c in conds):
            return Condition(vec)
        tokens = torch.cat([c.tokens for c in conds], 0)  # (sum B, K, H)
        if all(c.token_bias is None for c in conds):
            return Condition(vec, tokens)
        bias = torch.cat(
            [
                c.token_bias if c.token_bias is not None else c.tokens.new_zeros(c.tokens.shape[:2])
                for c in conds
            ],
            0,
        )  # (sum B, K)
        return Condition(vec, tokens, bias)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t * scale followed by an MLP."""

    def __init__(self, hidden: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.freq_dim = hidden + hidden % 2
        self.mlp = nn.Sequential(
            nn.Linear(self.freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )

    def forward(self, t: Tensor) -> Tensor:
        """Embed times t (B,) in [0, 1] as (B, H)."""
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half
        )  # (F/2,)
        args = (t * self.scale)[:, None] * freqs[None]  # (B, F/2)
        emb = torch.cat([torch.cos(args), torch.sin(args)], -1)  # (B, F)
        return self.mlp(emb)  # (B, H)


def cluster_attention_bias(sizes: Tensor, *, use_sizes: bool) -> Tensor:
    """Additive attention bias (B, K) from cluster sizes (B, K).

    Empty clusters (size 0) get -inf, unless a whole row is empty (then all count). With
    ``use_sizes`` the others get log(size), so attention is proportional to the tile count.
    """
    valid = sizes > 0  # (B, K)
    valid = valid | ~valid.any(1, keepdim=True)  # (B, K) rows with no tiles: keep all
    bias = torch.log(sizes.clamp_min(1.0)) if use_sizes else torch.zeros_like(sizes)  # (B, K)
    return bias.masked_fill(~valid, float("-inf"))  # (B, K)


class _EncoderLayer(nn.Module):
    """Pre-norm transformer layer with an additive key bias."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden)
        )

    def forward(self, z: Tensor, bias: Tensor) -> Tensor:
        b, k, h = z.shape
        qkv = self.qkv(self.norm1(z)).view(b, k, 3, self.heads, h // self.heads)  # (B,K,3,nh,hd)
        q, key, v = qkv.permute(2, 0, 3, 1, 4)  # (B, nh, K, hd) each
        mask = bias[:, None, None, :].to(q.dtype)  # (B, 1, 1, K)
        a = F.scaled_dot_product_attention(q, key, v, attn_mask=mask)  # (B, nh, K, hd)
        z = z + self.proj(a.transpose(1, 2).reshape(b, k, h))  # (B, K, H)
        return z + self.mlp(self.norm2(z))  # (B, K, H)


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al. 2018) over cluster tokens with an additive bias.

    ``a_k = w^T (tanh(V z_k) * sigmoid(U z_k)) + bias_k`` per pooling head; the pooled vector is
    the softmax(a)-weighted sum of the tokens, heads concatenated and projected back to H.
    With the log-size bias a cluster's weight is proportional to its tile count times the
    learned gate, so tissue composition enters the pooled vector directly.
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.v = nn.Linear(hidden, hidden)
        self.u = nn.Linear(hidden, hidden)
        self.w = nn.Linear(hidden, heads)
        self.out = nn.Linear(hidden * heads, hidden)

    def logits(self, z: Tensor) -> Tensor:
        """Attention logits (B, K, P) of tokens z (B, K, H), before the bias."""
        return self.w(torch.tanh(self.v(z)) * torch.sigmoid(self.u(z)))  # (B, K, P)

    def weights(self, z: Tensor, bias: Tensor) -> Tensor:
        """Attention weights (B, K, P) of tokens z (B, K, H) under bias (B, K)."""
        a = self.logits(z)  # (B, K, P)
        return torch.softmax(a + bias[..., None].to(a.dtype), dim=1)  # (B, K, P)

    def pooled_heads(self, z: Tensor, bias: Tensor) -> Tensor:
        """Each head's attention-weighted token mean (B, P, H), before the output projection."""
        return torch.einsum("bkp,bkh->bph", self.weights(z, bias), z)  # (B, P, H)

    def forward(self, z: Tensor, bias: Tensor) -> Tensor:
        return self.out(self.pooled_heads(z, bias).flatten(1))  # (B, H)


class ImageEncoder(nn.Module):
    """Encode K cluster means (B, K, D) into a slide vector (B, H) and cluster tokens (B, K, H)."""

    def __init__(
        self,
        feature_dim: int,
        n_clusters: int,
        hidden: int,
        *,
        depth: int,
        heads: int,
        mlp_ratio: float,
        index_embedding: bool,
        size_weights: bool,
        pool_heads: int = 0,
        dropout: float = 0.0,
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.n_clusters = n_clusters
        self.size_weights = size_weights
        if pool_heads > 0:  # attention-MIL style input: normalise, project, nonlinearity
            self.proj = nn.Sequential(
                nn.LayerNorm(feature_dim),
                nn.Linear(feature_dim, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
            )
        else:
            self.proj = nn.Linear(feature_dim, hidden)
        self.index_embedding = (
            nn.Parameter(torch.randn(n_clusters, hidden) * 0.02) if index_embedding else None
        )
        self.layers = nn.ModuleList(_EncoderLayer(hidden, heads, mlp_ratio) for _ in range(depth))
        # ``linear``: the slide vector is the pooled tokens as an attention-MIL regressor reads
        # them (measured: a better slide head than with the MLP, docs/benchmarks.md)
        self.norm = nn.Identity() if linear and depth == 0 else nn.LayerNorm(hidden)
        self.pool = GatedAttentionPool(hidden, pool_heads) if pool_heads > 0 else None
        self.dropout = nn.Dropout(dropout)
        self.mlp = (
            nn.Identity()
            if linear
            else nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        )

    def forward(self, clusters: Tensor, sizes: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Return (vec (B, H), tokens (B, K, H), bias (B, K))."""
        b, k, _ = clusters.shape
        if sizes is None:
            sizes = clusters.new_ones(b, k)  # (B, K)
        bias = cluster_attention_bias(sizes.to(clusters.dtype), use_sizes=self.size_weights)
        z = self.proj(clusters)  # (B, K, H)
        if self.index_embedding is not None:
            if k > self.n_clusters:
                raise ValueError(f"got {k} clusters, the model was built for {self.n_clusters}")
            z = z + self.index_embedding[:k]  # (B, K, H)
        for layer in self.layers:
            z = layer(z, bias)  # (B, K, H)
        z = self.norm(z)  # (B, K, H)
        return self.embed_pooled(self.pool_tokens(z, bias)), z, bias

    def pool_tokens(self, tokens: Tensor, bias: Tensor) -> Tensor:
        """The pooled tokens (B, P, H) of tokens (B, K, H): one row per gated-attention head, or
        one row (the mean over valid clusters, or size-weighted) without attention pooling."""
        if self.pool is not None:
            return self.pool.pooled_heads(tokens, bias)  # (B, P, H)
        w = torch.softmax(bias, dim=1)  # (B, K)
        return torch.einsum("bk,bkh->bh", w, tokens)[:, None, :]  # (B, 1, H)

    def embed_pooled(self, pooled: Tensor) -> Tensor:
        """The slide vector (B, H) from pooled tokens (B, P, H) (:meth:`pool_tokens`)."""
        vec = self.pool.out(pooled.flatten(1)) if self.pool is not None else pooled[:, 0]
        return self.mlp(self.dropout(vec))  # (B, H)
