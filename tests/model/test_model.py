"""RNAFM interface: shapes, condition dropout, switches, masking and cluster-size maths."""

from __future__ import annotations

import pytest
import torch

from rnafm.model import Condition, HeadModulation, ModelConfig, build_model


def _config(**kw) -> ModelConfig:
    base = dict(hidden=12, depth=2, heads=3, image_heads=3, image_depth=1, bucket_overhead=3)
    return ModelConfig(**(base | kw))


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden=10, heads=3)
    with pytest.raises(ValueError):
        ModelConfig(unknown=1)


SWITCHES = [  # (cross_attention, cluster_size_weights, use_pathway_mask, index_embedding, heads)
    (False, False, True, False, HeadModulation.TOKEN),
    (True, False, True, False, HeadModulation.TOKEN),
    (True, True, False, True, HeadModulation.SHARED),
    (False, True, True, True, HeadModulation.TOKEN),
    (False, False, False, False, HeadModulation.SHARED),
    (True, True, True, False, HeadModulation.TOKEN),
]


@pytest.mark.parametrize(("cross", "sizes_w", "mask", "index", "modulation"), SWITCHES)
def test_switches_forward_backward(tokens, cross, sizes_w, mask, index, modulation):
    cfg = _config(
        cross_attention=cross,
        cluster_size_weights=sizes_w,
        use_pathway_mask=mask,
        cluster_index_embedding=index,
        head_modulation=modulation,
    )
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=cfg)
    clusters, sizes = torch.randn(4, 3, 5), torch.tensor([[0.0, 3, 1]] * 4)
    cond = model.encode_condition(clusters, sizes, drop=torch.tensor([True, False, True, False]))
    assert cond.vec.shape == (4, 12)
    assert (cond.tokens is not None) == cross
    v = model(torch.randn(4, 23), torch.rand(4), cond)  # (B, G)
    assert v.shape == (4, 23) and torch.isfinite(v).all()
    assert torch.equal(v, torch.zeros_like(v))  # adaLN-Zero heads start at zero
    _perturb(model)
    v = model(torch.randn(4, 23), torch.rand(4), model.encode_condition(clusters, sizes))
    v.pow(2).mean().backward()
    missing = {n for n, p in model.named_parameters() if p.grad is None}
    head = {"slide_head.weight", "slide_head.bias"}  # trained by its own regression loss
    assert missing <= {"null_vec", "null_token"} | head  # no dropped rows in this batch
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_drop_gives_null_condition(tokens):
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=_config(cross_attention=True))
    _perturb(model)
    clusters = torch.randn(3, 3, 5)
    cond = model.encode_condition(clusters, drop=torch.tensor([True, False, True]))
    null = model.null_condition(3)
    plain = model.encode_condition(clusters)
    torch.testing.assert_close(cond.vec[[0, 2]], null.vec[[0, 2]])
    torch.testing.assert_close(cond.vec[1], plain.vec[1])
    torch.testing.assert_close(cond.tokens[0], null.tokens[0])
    x, t = torch.randn(3, 23), torch.rand(3)
    torch.testing.assert_close(model(x, t, cond)[0], model(x, t, null)[0])


def test_draw_dropout_rate_and_seed(tokens):
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=_config(cond_dropout=0.25))
    a = model.draw_dropout(4000, generator=torch.Generator().manual_seed(5))
    b = model.draw_dropout(4000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.bool
    assert 0.2 < a.float().mean() < 0.3


def test_condition_repeat_and_cat():
    vec, toks, bias = torch.arange(6.0).view(2, 3), torch.randn(2, 4, 3), torch.randn(2, 4)
    rep = Condition(vec, toks, bias).repeat(3)
    assert rep.batch_size == 6
    torch.testing.assert_close(rep.vec[:3], vec[[0, 0, 0]])
    torch.testing.assert_close(rep.tokens[3:], toks[[1, 1, 1]])
    both = Condition.cat([Condition(vec, toks, bias), Condition(vec, toks)])
    assert both.batch_size == 4 and torch.equal(both.token_bias[2:], torch.zeros(2, 4))
    assert Condition.cat([Condition(vec), Condition(vec)]).tokens is None


@pytest.mark.parametrize("mask", [True, False])
def test_pathway_mask_isolates_disconnected_token(tokens, mask):
    """Gene 13 is alone in a token that shares no gene: with the mask, its velocity sees only x13."""
    model = build_model(
        tokens, feature_dim=5, n_clusters=3, config=_config(use_pathway_mask=mask)
    ).double()
    _perturb(model)
    x = torch.randn(2, 23, dtype=torch.float64, requires_grad=True)
    cond = model.encode_condition(torch.randn(2, 3, 5, dtype=torch.float64))
    model(x, torch.rand(2, dtype=torch.float64), cond)[:, 13].sum().backward()
    others = torch.cat([x.grad[:, :13], x.grad[:, 14:]], 1)
    assert x.grad[:, 13].abs().min() > 0
    assert (others.abs().max() == 0) == mask


def test_empty_clusters_are_ignored(tokens):
    model = build_model(tokens, feature_dim=5, n_clusters=4, config=_config(cross_attention=True))
    _perturb(model)
    clusters, sizes = torch.randn(2, 4, 5), torch.tensor([[3.0, 0, 2, 0], [1, 1, 0, 5]])
    other = clusters.clone()
    other[sizes == 0] = 100.0  # garbage in the padding rows
    x, t = torch.randn(2, 23), torch.rand(2)
    v1 = model(x, t, model.encode_condition(clusters, sizes))
    v2 = model(x, t, model.encode_condition(other, sizes))
    torch.testing.assert_close(v1, v2)


def test_cluster_size_weights_equal_duplicated_clusters(tokens):
    """With size weights, a cluster of size 2 is the same as two identical clusters of size 1."""
    cfg = _config(cluster_size_weights=True, cross_attention=True, image_depth=2)
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=cfg).double()
    _perturb(model)
    a, b = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    c1 = model.encode_condition(torch.stack([a, b])[None], torch.tensor([[2.0, 1.0]]).double())
    c2 = model.encode_condition(torch.stack([a, a, b])[None], torch.ones(1, 3).double())
    torch.testing.assert_close(c1.vec, c2.vec)
    x, t = torch.randn(1, 23, dtype=torch.float64), torch.rand(1, dtype=torch.float64)
    torch.testing.assert_close(model(x, t, c1), model(x, t, c2))


def test_fast_equals_loop_float32(tokens):
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=_config())
    _perturb(model)
    x, t = torch.randn(3, 23), torch.rand(3)
    cond = model.encode_condition(torch.randn(3, 3, 5))
    v_fast = model(x, t, cond)
    model.set_implementation("loop")
    torch.testing.assert_close(model(x, t, cond), v_fast, rtol=1e-5, atol=1e-5)
    assert model.config.implementation.value == "loop"


def test_bf16_autocast_close_to_fp32(tokens):
    from rnafm.model import autocast

    model = build_model(tokens, feature_dim=5, n_clusters=3, config=_config())
    _perturb(model)
    x, t = torch.randn(3, 23), torch.rand(3)
    clusters = torch.randn(3, 3, 5)
    ref = model(x, t, model.encode_condition(clusters))
    with autocast("cpu", "bf16"):
        v = model(x, t, model.encode_condition(clusters))
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    assert (v - ref).abs().max() < 0.05 * ref.abs().max()
    v.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_presets():
    from rnafm.model import MODEL_PRESETS, model_preset

    assert model_preset("paper").depth == 7 and model_preset("paper").hidden == 256
    assert all(isinstance(model_preset(n), ModelConfig) for n in MODEL_PRESETS)
    with pytest.raises(ValueError, match="unknown"):
        model_preset("huge")
