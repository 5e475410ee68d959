"""Configuration of the RNA-FM network."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MODEL_PRESETS",
    "HeadModulation",
    "Implementation",
    "ModelConfig",
    "PathwayMask",
    "model_preset",
]


class Implementation(str, Enum):
    """How the per-token gene ops (input MLPs and output heads) are computed."""

    FAST = "fast"  # tokens bucketed by size, batched matmuls, one gather and one scatter
    LOOP = "loop"  # plain Python loop over tokens (reference oracle, same parameters)


class HeadModulation(str, Enum):
    """Where the final adaLN modulation of the output heads comes from."""

    TOKEN = "token"  # each token's head has its own modulation (as the published model)
    SHARED = "shared"  # one modulation shared by all heads (fewer parameters)


class ImageEmbedding(str, Enum):
    """How the image encoder turns its pooled cluster tokens into the slide vector."""

    MLP = "mlp"  # LayerNorm on the tokens, a two-layer MLP on the pooled vector (runs of 0.1)
    LINEAR = "linear"  # the pooled vector as it is, as an attention-MIL regressor reads it


class PathwayMask(str, Enum):
    """Where the pathway-graph attention mask (edge = shared genes) is applied."""

    EVERY_BLOCK = "every_block"  # in every DiT block (rnafm)
    GRAPH_BLOCK = "graph_block"  # once, in a graph block before unmasked DiT blocks (published)


class ModelConfig(BaseModel):
    """Size and switches of the pathway-token flow-matching network."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(128, ge=8, description="Width of token, time and image embeddings.")
    depth: int = Field(4, ge=0, description="Number of DiT blocks over pathway tokens.")
    heads: int = Field(4, ge=1, description="Attention heads in each DiT block.")
    mlp_ratio: float = Field(4.0, gt=0, description="Hidden width of block MLPs / hidden.")
    image_depth: int = Field(1, ge=0, description="Transformer layers over the K cluster tokens.")
    image_heads: int = Field(4, ge=1, description="Attention heads of the image transformer.")
    cond_dropout: float = Field(
        0.1, ge=0.0, le=1.0, description="Per-sample probability of dropping the image condition."
    )
    time_scale: float = Field(
        1000.0, gt=0, description="t in [0, 1] is multiplied by this before the sinusoids."
    )
    use_pathway_mask: bool = Field(
        True, description="Mask token attention by the pathway graph (edge = shared genes)."
    )
    pathway_mask: PathwayMask = Field(
        PathwayMask.EVERY_BLOCK,
        description="Where the pathway mask applies: in every DiT block, or once in an "
        "unconditioned graph block before unmasked DiT blocks (the published model).",
    )
    graph_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout of the graph block's attention and MLP outputs "
        "(pathway_mask = graph_block; the published model uses 0.1).",
    )
    cross_attention: bool = Field(
        False, description="Add cross-attention from pathway tokens to the cluster tokens."
    )
    cluster_size_weights: bool = Field(
        True,
        description="Use cluster sizes: log-size attention bias and size-weighted pooling.",
    )
    cluster_index_embedding: bool = Field(
        False,
        description="Add a learned embedding of the cluster index (as the paper; k-means "
        "indices carry no order, so off by default).",
    )
    pool_heads: int = Field(
        4,
        ge=0,
        description="Gated-attention pooling heads over the cluster tokens (0: plain mean pooling).",
    )
    image_embedding: ImageEmbedding = Field(
        ImageEmbedding.MLP,
        description="The slide vector (read by the slide head and the flow): 'linear' is the "
        "gated-attention pool's output (the tokens' LayerNorm only after transformer layers), "
        "'mlp' (the default) adds a two-layer MLP and always the LayerNorm.",
    )
    encoder_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout in the image encoder (input and pooled vector); training uses 0.3.",
    )
    slide_head: bool = Field(
        True,
        description="A linear head on the slide embedding predicts the z-scored expression "
        "directly (auxiliary loss; its prediction is a candidate for the predictive mean).",
    )
    head_modulation: HeadModulation = Field(
        HeadModulation.TOKEN, description="Final adaLN of the heads: per token or shared."
    )
    implementation: Implementation = Field(
        Implementation.FAST, description="Per-token gene ops: bucketed batched (fast) or loop."
    )
    bucket_overhead: int = Field(
        256,
        ge=0,
        description="Cost of one extra size bucket, in padded gene slots; larger values give "
        "fewer, more padded buckets.",
    )

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.hidden % self.image_heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be divisible by image_heads ({self.image_heads})"
            )
        return self


def _tiny() -> ModelConfig:
    return ModelConfig(hidden=64, depth=2, heads=4, image_heads=4)


def _small() -> ModelConfig:
    return ModelConfig(hidden=128, depth=4, heads=4, image_heads=4)


def _paper() -> ModelConfig:
    return ModelConfig(hidden=256, depth=7, heads=8, image_heads=8)


MODEL_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": _tiny,
    "small": _small,  # the ModelConfig defaults
    "paper": _paper,  # the published size (depth 7, hidden 256, 8 heads)
}


def model_preset(name: str) -> ModelConfig:
    """A named model size (see ``MODEL_PRESETS``); raise ValueError for unknown names."""
    try:
        return MODEL_PRESETS[name]()
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose from {sorted(MODEL_PRESETS)}"
        ) from None
