"""The RNA-FM network: pathway tokens, DiT blocks, per-token heads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from rnafm.model.blocks import GraphBlock, TokenBlock
from rnafm.model.condition import Condition, ImageEncoder, TimeEmbedding
from rnafm.model.config import ImageEmbedding, Implementation, ModelConfig, PathwayMask
from rnafm.model.gene_ops import GeneTokenEmbed, GeneTokenHeads, TokenLayout

if TYPE_CHECKING:
    from rnafm.pathways.tokens import PathwayTokens

__all__ = ["RNAFM", "build_model"]


class RNAFM(nn.Module):
    """Velocity field v(x_t, t | slide) over all genes, one token per pathway.

    Parameters
    ----------
    tokens
        Pathway tokens (genes, members, adjacency); every gene must be in at least one token.
    feature_dim
        Tile feature dimension D.
    n_clusters
        Number of clusters K per slide.
    config
        Network size and switches.

    Notes
    -----
    Internally tokens are held in *slot order* (sorted by size, see ``layout.order``); the
    outputs are genes in ``tokens.genes`` order, so the slot order never leaks out.
    """

    def __init__(
        self, tokens: PathwayTokens, *, feature_dim: int, n_clusters: int, config: ModelConfig
    ) -> None:
        super().__init__()
        self.config = config
        self.genes = list(tokens.genes)
        self.feature_dim = feature_dim
        self.n_clusters = n_clusters
        hid = config.hidden
        self.layout = TokenLayout.build(
            tokens.members, n_genes=len(self.genes), overhead=config.bucket_overhead
        )
        order = self.layout.order
        self.embed = GeneTokenEmbed(self.layout, hid, config.implementation)
        self.token_embedding = nn.Parameter(torch.randn(self.layout.n_tokens, hid) * 0.02)
        adjacency = np.asarray(tokens.adjacency(), dtype=bool)[np.ix_(order, order)]
        np.fill_diagonal(adjacency, True)
        self.register_buffer("attn_mask", torch.from_numpy(adjacency), persistent=False)
        self.time = TimeEmbedding(hid, config.time_scale)
        self.image = ImageEncoder(
            feature_dim,
            n_clusters,
            hid,
            depth=config.image_depth,
            heads=config.image_heads,
            mlp_ratio=config.mlp_ratio,
            index_embedding=config.cluster_index_embedding,
            size_weights=config.cluster_size_weights,
            pool_heads=config.pool_heads,
            dropout=config.encoder_dropout,
            linear=config.image_embedding == ImageEmbedding.LINEAR,
        )
        self.slide_head = nn.Linear(hid, len(self.genes)) if config.slide_head else None
        self.null_vec = nn.Parameter(torch.randn(hid) * 0.02)
        self.null_token = nn.Parameter(torch.randn(hid) * 0.02) if config.cross_attention else None
        self.graph = (
            GraphBlock(hid, config.heads, config.mlp_ratio, dropout=config.graph_dropout)
            if config.pathway_mask is PathwayMask.GRAPH_BLOCK
            else None
        )
        self.blocks = nn.ModuleList(
            TokenBlock(hid, config.heads, config.mlp_ratio, cross_attention=config.cross_attention)
            for _ in range(config.depth)
        )
        self.heads = GeneTokenHeads(self.layout, hid, config.implementation, config.head_modulation)

    def train(self, mode: bool = True) -> RNAFM:
        """Train mode, except a frozen image path (no trainable weights) stays in eval mode."""
        super().train(mode)
        frozen = not any(p.requires_grad for p in self.image.parameters())
        if mode and frozen:
            self.image.eval()
        return self

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    def set_implementation(self, implementation: Implementation | str) -> None:
        """Switch the per-token gene ops between fast and loop (same parameters)."""
        impl = Implementation(implementation)
        self.embed.implementation = impl
        self.heads.implementation = impl
        self.config = self.config.model_copy(update={"implementation": impl})

    def encode_condition(
        self, clusters: Tensor, sizes: Tensor | None = None, drop: Tensor | None = None
    ) -> Condition:
        """Encode cluster means (B, K, D) and sizes (B, K) once per slide.

        Rows where ``drop`` (B,) is True get the learned null condition (classifier-free
        guidance; training draws ``drop`` with :meth:`draw_dropout`).
        """
        vec, toks, bias = self.image(clusters, sizes)  # (B, H), (B, K, H), (B, K)
        cond = Condition(vec, toks, bias) if self.config.cross_attention else Condition(vec)
        return cond if drop is None else self.drop_condition(cond, drop)

    def predict_slide(self, cond: Condition) -> Tensor:
        """The slide head's direct estimate (B, G) of the z-scored expression."""
        if self.slide_head is None:
            raise ValueError("this model has no slide head (model.slide_head = false)")
        return self.slide_head(cond.vec)  # (B, G)

    def drop_condition(self, cond: Condition, drop: Tensor) -> Condition:
        """Replace rows where ``drop`` (B,) is True by the learned null condition."""
        vec, toks, bias = cond.vec, cond.tokens, cond.token_bias
        drop = drop.to(device=vec.device, dtype=torch.bool)  # (B,)
        vec = torch.where(drop[:, None], self.null_vec.to(vec.dtype), vec)  # (B, H)
        if cond.tokens is None:
            return Condition(vec)
        toks = torch.where(drop[:, None, None], self.null_token.to(vec.dtype), toks)  # (B, K, H)
        bias = torch.where(drop[:, None], torch.zeros_like(bias), bias)  # (B, K)
        return Condition(vec, toks, bias)

    def null_condition(self, batch_size: int, *, n_clusters: int | None = None) -> Condition:
        """The dropped (unconditional) condition for ``batch_size`` rows."""
        vec = self.null_vec.expand(batch_size, -1)  # (B, H)
        if not self.config.cross_attention:
            return Condition(vec)
        k = n_clusters or self.n_clusters
        toks = self.null_token.expand(batch_size, k, -1)  # (B, K, H)
        return Condition(vec, toks, vec.new_zeros(batch_size, k))

    def draw_dropout(self, batch_size: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample condition-dropout mask (B,) bool with probability ``cond_dropout``."""
        device = self.null_vec.device
        u = torch.rand(batch_size, generator=generator, device=device)  # (B,)
        return u < self.config.cond_dropout

    def forward(self, x_t: Tensor, t: Tensor, cond: Condition) -> Tensor:
        """Velocity (B, G) at gene values x_t (B, G) and times t (B,)."""
        h = self.embed(x_t) + self.token_embedding  # (B, T, H)
        c = self.time(t.to(x_t.dtype)) + cond.vec  # (B, H)
        mask = None
        if self.config.use_pathway_mask:  # additive mask, built once for all blocks
            mask = torch.zeros(self.attn_mask.shape, device=h.device, dtype=h.dtype)  # (T, T)
            mask = mask.masked_fill(~self.attn_mask, float("-inf"))  # (T, T)
        if self.graph is not None:  # the mask applies once, the DiT blocks are unmasked
            h, mask = self.graph(h, mask), None  # (B, T, H)
        for block in self.blocks:
            h = block(h, c, mask, cond.tokens, cond.token_bias)  # (B, T, H)
        return self.heads(h, c)  # (B, G)

    def parameter_counts(self) -> dict[str, int]:
        """Total parameters, and how many of them are padding in the stacked gene ops."""
        total = sum(p.numel() for p in self.parameters())
        padding = self.embed.padding_parameters() + self.heads.padding_parameters()
        return {"total": total, "padding": padding, "effective": total - padding}

    def extra_repr(self) -> str:
        sizes: list[Any] = [(stop - start, width) for start, stop, width in self.layout.buckets]
        return f"genes={self.n_genes}, tokens={self.layout.n_tokens}, buckets(n, width)={sizes}"


def build_model(
    tokens: PathwayTokens, *, feature_dim: int, n_clusters: int, config: ModelConfig
) -> RNAFM:
    """Build an :class:`RNAFM` for these pathway tokens and slide-feature shapes."""
    return RNAFM(tokens, feature_dim=feature_dim, n_clusters=n_clusters, config=config)
