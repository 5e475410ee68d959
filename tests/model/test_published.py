"""The published architecture switches: the pathway mask once in a graph block, one background token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnafm.model import ModelConfig, PathwayMask, build_model
from rnafm.pathways import BackgroundLayout, select_tokens
from rnafm.training.config import TrainConfig, apply_overrides
from rnafm.training.presets import preset_overrides

SMALL = {"model.hidden": 16, "model.depth": 2, "model.heads": 2, "model.image_heads": 2}


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _cohort() -> tuple[list[str], dict[str, list[str]]]:
    """42 genes in 5 overlapping sets and 598 genes in none (more than one default chunk)."""
    genes = [f"G{i}" for i in range(640)]
    sets = {f"S{i}": genes[8 * i : 8 * i + 10] for i in range(5)}
    return genes, sets


def _attention_masks(model, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each token-attention call of one forward pass carried a mask, in call order."""
    clusters = torch.randn(2, 3, 5)
    cond = model.encode_condition(clusters)  # the image encoder's attention is not counted
    seen: list[bool] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(attn_mask is not None)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model(torch.randn(2, model.n_genes), torch.rand(2), cond)
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("preset", ["published", "published-cpu"])
def test_published_preset_one_background_token_and_mask_in_first_block(preset, monkeypatch):
    config = apply_overrides(TrainConfig(), preset_overrides(preset) | SMALL)
    assert config.model.pathway_mask is PathwayMask.GRAPH_BLOCK
    assert config.tokens.background is BackgroundLayout.SINGLE
    genes, sets = _cohort()
    tokens = select_tokens(genes, sets, config.tokens)
    assert tokens.is_background.sum() == 1 and len(tokens.members[-1]) == 598
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=config.model).eval()
    assert model.graph is not None and len(model.blocks) == 2
    # the graph block (first) is masked, the DiT blocks after it are not
    assert _attention_masks(model, monkeypatch) == [True, False, False]


def test_default_model_unchanged(monkeypatch):
    config = apply_overrides(TrainConfig(), SMALL)
    assert config.model.pathway_mask is PathwayMask.EVERY_BLOCK
    assert config.tokens.background is BackgroundLayout.CHUNKS
    genes, sets = _cohort()
    tokens = select_tokens(genes, sets, config.tokens)
    assert tokens.is_background.sum() == 3  # 598 genes in chunks of at most 256
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=config.model)
    assert model.graph is None
    assert not any(name.startswith("graph.") for name in model.state_dict())
    assert _attention_masks(model, monkeypatch) == [True, True]  # every DiT block masked


@pytest.mark.parametrize(
    ("mode", "depth", "isolated"),
    [
        (PathwayMask.GRAPH_BLOCK, 0, True),  # the graph block alone respects the graph
        (PathwayMask.GRAPH_BLOCK, 2, False),  # the DiT blocks after it are unmasked
        (PathwayMask.EVERY_BLOCK, 2, True),
    ],
)
def test_graph_block_mask_reach(tokens, mode, depth, isolated):
    """Gene 13 is alone in a token sharing no gene: is its velocity a function of x13 only?"""
    cfg = ModelConfig(hidden=12, depth=depth, heads=3, image_heads=3, pathway_mask=mode)
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=cfg).double().eval()
    _perturb(model)
    x = torch.randn(2, 23, dtype=torch.float64, requires_grad=True)
    cond = model.encode_condition(torch.randn(2, 3, 5, dtype=torch.float64))
    model(x, torch.rand(2, dtype=torch.float64), cond)[:, 13].sum().backward()
    others = np.delete(x.grad.numpy(), 13, axis=1)
    assert np.abs(x.grad[:, 13].numpy()).min() > 0
    assert (np.abs(others).max() == 0) == isolated


def test_graph_dropout_only_in_training(tokens):
    cfg = ModelConfig(
        hidden=12, depth=1, heads=3, image_heads=3, pathway_mask="graph_block", graph_dropout=0.5
    )
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=cfg)
    _perturb(model)
    x, t = torch.randn(2, 23), torch.rand(2)
    cond = model.encode_condition(torch.randn(2, 3, 5))
    model.eval()
    torch.testing.assert_close(model(x, t, cond), model(x, t, cond))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(x, t, cond), model(x, t, cond))
