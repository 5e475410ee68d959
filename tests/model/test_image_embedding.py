"""The slide vector of the image encoder: the attention-MIL read-out (``linear``, opt-in) or
the MLP (the default, and every earlier run, which must keep loading)."""

from __future__ import annotations

import torch

from rnafm.model import ImageEmbedding, ModelConfig
from rnafm.model.condition import ImageEncoder, cluster_attention_bias
from rnafm.training.config import TrainConfig
from rnafm.training.presets import preset_overrides


def test_linear_embedding_is_the_pooled_vector():
    torch.manual_seed(0)
    enc = ImageEncoder(11, 7, 16, depth=0, heads=2, mlp_ratio=2.0, index_embedding=False,
                       size_weights=True, pool_heads=3, dropout=0.3, linear=True)  # fmt: skip
    enc.eval()
    names = [n for n, _ in enc.named_parameters()]
    assert not any(n.startswith(("mlp.", "norm.")) for n in names)
    x, sizes = torch.randn(5, 7, 11), torch.rand(5, 7) * 50
    vec, tokens, bias = enc(x, sizes)
    # a plain attention-MIL regressor's read-out: project, gated-attention pool with log sizes
    want = enc.pool(enc.proj(x), cluster_attention_bias(sizes, use_sizes=True))  # (5, 16)
    torch.testing.assert_close(vec, want)
    # with transformer layers the tokens keep their LayerNorm; the MLP stays out
    deep = ImageEncoder(11, 7, 16, depth=1, heads=2, mlp_ratio=2.0, index_embedding=False,
                        size_weights=True, pool_heads=3, linear=True)  # fmt: skip
    assert isinstance(deep.norm, torch.nn.LayerNorm) and isinstance(deep.mlp, torch.nn.Identity)


def test_runs_written_before_the_option_keep_their_mlp(tokens):
    from rnafm.model.network import build_model

    old = {"hidden": 16, "depth": 1, "heads": 2, "image_depth": 1}  # no image_embedding key
    cfg = ModelConfig.model_validate(old)
    assert cfg.image_embedding is ImageEmbedding.MLP
    keys = build_model(tokens, feature_dim=6, n_clusters=5, config=cfg).state_dict()
    assert "image.mlp.0.weight" in keys and "image.norm.weight" in keys
    assert TrainConfig().model.image_embedding is ImageEmbedding.MLP  # training's default
    new = TrainConfig.model_validate({"model": {"image_embedding": "linear"}}).model
    assert new.image_embedding is ImageEmbedding.LINEAR and new.image_depth == 1
    keys = build_model(tokens, feature_dim=6, n_clusters=5, config=new).state_dict()
    assert not any(k.startswith("image.mlp") for k in keys) and "image.norm.weight" in keys
    # the published recipe keeps its transformer layer and MLP
    pub = preset_overrides("published")
    assert pub["model.image_depth"] == 1 and pub["model.image_embedding"] == "mlp"
