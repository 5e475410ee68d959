"""Blocks over pathway tokens: DiT-style (adaLN-Zero, graph-masked attention) and a graph block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GraphBlock", "TokenBlock", "modulate"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, T, H) * (1 + scale (B, H)) + shift (B, H), as one fused op."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))  # (B, T, H)


class TokenBlock(nn.Module):
    """Masked self-attention + MLP with adaLN-Zero, optional cross-attention to cluster tokens.

    The attention branch also carries a learnable residual scale (starts at 1).
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, *, cross_attention: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.attn_scale = nn.Parameter(torch.ones(1))
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden)
        )
        self.ada = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        if cross_attention:
            self.norm_x = nn.LayerNorm(hidden, eps=1e-6)
            self.q_x = nn.Linear(hidden, hidden)
            self.kv_x = nn.Linear(hidden, 2 * hidden)
            self.proj_x = nn.Linear(hidden, hidden)
            nn.init.zeros_(self.proj_x.weight)
            nn.init.zeros_(self.proj_x.bias)
        else:
            self.q_x = None

    def _split(self, x: Tensor) -> Tensor:
        b, n, h = x.shape
        return x.view(b, n, self.heads, h // self.heads).transpose(1, 2)  # (B, nh, N, hd)

    def _merge(self, x: Tensor) -> Tensor:
        b, nh, n, hd = x.shape
        return x.transpose(1, 2).reshape(b, n, nh * hd)  # (B, N, H)

    def forward(
        self,
        h: Tensor,
        c: Tensor,
        mask: Tensor | None,
        cond_tokens: Tensor | None = None,
        cond_bias: Tensor | None = None,
    ) -> Tensor:
        """Update token states h (B, T, H) under conditioning c (B, H).

        ``mask`` is an additive (T, T) attention mask (0 or -inf) or None; ``cond_tokens``
        (B, K, H) and ``cond_bias`` (B, K) feed the optional cross-attention.
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, -1)  # (B, H)
        y = modulate(self.norm1(h), shift1, scale1)  # (B, T, H)
        q, k, v = self.qkv(y).chunk(3, -1)  # (B, T, H) each
        q, k, v = self._split(q), self._split(k), self._split(v)  # (B, nh, T, hd) each
        mask = None if mask is None else mask.to(q.dtype)  # (T, T)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hd)
        gate1 = (self.attn_scale * gate1).unsqueeze(1)  # (B, 1, H) learnable residual scale
        h = torch.addcmul(h, gate1, self.proj(self._merge(a)))  # (B, T, H)
        if self.q_x is not None and cond_tokens is not None:
            qx = self._split(self.q_x(self.norm_x(h)))  # (B, nh, T, hd)
            kx, vx = self.kv_x(cond_tokens).chunk(2, -1)  # (B, K, H) each
            bias = None if cond_bias is None else cond_bias[:, None, None, :].to(qx.dtype)
            ax = F.scaled_dot_product_attention(
                qx, self._split(kx), self._split(vx), attn_mask=bias
            )  # (B, nh, T, hd)
            h = h + self.proj_x(self._merge(ax))  # (B, T, H)
        y = modulate(self.norm2(h), shift2, scale2)  # (B, T, H)
        return torch.addcmul(h, gate2.unsqueeze(1), self.mlp(y))  # (B, T, H)


class GraphBlock(nn.Module):
    """One pre-norm transformer block under the pathway-graph mask, not conditioned on t or slide.

    The published model applies the pathway mask once, in such a block between the gene
    embedding and the (then unmasked) DiT blocks: a token mixes only with the tokens it shares
    genes with. The attention branch carries a learnable residual scale that starts at 0.1.
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, *, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.alpha = nn.Parameter(torch.full((1,), 0.1))
        self.norm2 = nn.LayerNorm(hidden)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor | None) -> Tensor:
        """Update token states h (B, T, H); ``mask`` is an additive (T, T) mask or None."""
        b, t, hid = h.shape
        qkv = self.qkv(self.norm1(h)).view(b, t, 3, self.heads, hid // self.heads)  # (B,T,3,nh,hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, nh, T, hd) each
        mask = None if mask is None else mask.to(q.dtype)  # (T, T)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hd)
        a = self.proj(a.transpose(1, 2).reshape(b, t, hid))  # (B, T, H)
        h = h + self.dropout(self.alpha * a)  # (B, T, H)
        return h + self.dropout(self.mlp(self.norm2(h)))  # (B, T, H)
