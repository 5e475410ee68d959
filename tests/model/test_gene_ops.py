"""Fast bucketed gene ops equal the plain per-token loop (the oracle) and the maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnafm.model import HeadModulation, ModelConfig, build_model
from rnafm.model.gene_ops import TokenLayout, plan_buckets


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Make every parameter non-zero (adaLN-Zero heads start at 0, which would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _config(**kw) -> ModelConfig:
    base = dict(hidden=12, depth=2, heads=3, image_heads=3, image_depth=1, bucket_overhead=3)
    return ModelConfig(**(base | kw))


def test_plan_buckets_optimal_small():
    sizes = np.array([1, 1, 2, 9, 10, 100])
    ends = plan_buckets(sizes, overhead=5)
    assert ends[-1] == 6 and ends == sorted(ends)
    # brute force over all cut sets
    best = None
    for mask in range(1 << 5):
        cuts = [i + 1 for i in range(5) if mask >> i & 1] + [6]
        start, cost = 0, 0
        for e in cuts:
            cost += (e - start) * sizes[e - 1] + 5
            start = e
        best = cost if best is None else min(best, cost)
    start, cost = 0, 0
    for e in ends:
        cost += (e - start) * sizes[e - 1] + 5
        start = e
    assert cost == best


def test_layout_rejects_uncovered_and_empty():
    with pytest.raises(ValueError, match="no token"):
        TokenLayout.build([np.array([0, 1])], n_genes=3, overhead=1)
    with pytest.raises(ValueError, match="at least one"):
        TokenLayout.build(
            [np.array([0, 1, 2]), np.array([], dtype=np.int64)], n_genes=3, overhead=1
        )


@pytest.mark.parametrize("overhead", [0, 3, 1000])
@pytest.mark.parametrize("modulation", list(HeadModulation))
@pytest.mark.parametrize("cross", [False, True])
def test_fast_equals_loop_float64(tokens, overhead, modulation, cross):
    cfg = _config(
        bucket_overhead=overhead,
        head_modulation=modulation,
        cross_attention=cross,
        cluster_size_weights=cross,
    )
    model = build_model(tokens, feature_dim=7, n_clusters=5, config=cfg).double()
    _perturb(model)
    gen = torch.Generator().manual_seed(1)
    clusters = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)  # (B, K, D)
    sizes = torch.tensor([[1.0, 2, 0, 3, 4], [0, 0, 0, 0, 0], [5, 1, 1, 1, 1]], dtype=torch.float64)
    x = torch.randn(3, 23, generator=gen, dtype=torch.float64, requires_grad=True)  # (B, G)
    t = torch.rand(3, generator=gen, dtype=torch.float64)  # (B,)

    def run(impl: str):
        model.set_implementation(impl)
        model.zero_grad()
        x.grad = None
        cond = model.encode_condition(clusters, sizes, drop=torch.tensor([False, True, False]))
        v = model(x, t, cond)  # (B, G)
        (v * torch.arange(1, 24, dtype=torch.float64)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return v.detach(), x.grad.clone(), grads

    v_fast, gx_fast, g_fast = run("fast")
    v_loop, gx_loop, g_loop = run("loop")
    torch.testing.assert_close(v_fast, v_loop, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_fast, gx_loop, rtol=1e-10, atol=1e-12)
    assert g_fast.keys() == g_loop.keys()
    for name in g_fast:
        torch.testing.assert_close(g_fast[name], g_loop[name], rtol=1e-10, atol=1e-12, msg=name)


def test_heads_average_and_embed_match_definition(tokens):
    """Direct check of the per-token maths on the original token order, independent of slots."""
    model = build_model(tokens, feature_dim=4, n_clusters=2, config=_config()).double()
    _perturb(model, seed=3)
    embed, heads, layout = model.embed, model.heads, model.layout
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 23, generator=gen, dtype=torch.float64)  # (B, G)
    h = torch.randn(4, len(tokens.members), 12, generator=gen, dtype=torch.float64)  # (B, T, H)
    c = torch.randn(4, 12, generator=gen, dtype=torch.float64)  # (B, H)
    pre = embed._fast(x)  # (B, T, H) slot order
    out = heads(h, c)  # (B, G)
    expected = torch.zeros(4, 23, dtype=torch.float64)
    n_in = torch.zeros(23, dtype=torch.float64)
    slot_of = {int(orig): s for s, orig in enumerate(layout.order)}
    bucket_of = [
        (b, s - start)
        for b, (start, stop, _) in enumerate(layout.buckets)
        for s in range(start, stop)
    ]
    hn = torch.nn.functional.layer_norm(h, (12,), eps=1e-6)
    for orig, m in enumerate(tokens.members):
        s = slot_of[orig]
        b, row = bucket_of[s]
        mt = torch.as_tensor(m)
        w_in = embed.weight[b][row, :, : len(m)]
        torch.testing.assert_close(pre[:, s], x[:, mt] @ w_in.T + embed.bias[b][row])
        mod = torch.nn.functional.silu(c) @ heads.mod_weight[:, s] + heads.mod_bias[s]
        shift, scale = mod.chunk(2, -1)
        y = hn[:, s] * (1 + scale) + shift
        expected[:, mt] += y @ heads.weight[b][row, : len(m)].T + heads.bias[b][row, : len(m)]
        n_in[mt] += 1
    assert n_in[4] == 3 and n_in[13] == 1
    torch.testing.assert_close(out, expected / n_in)


def test_padding_gets_no_gradient(tokens):
    model = build_model(tokens, feature_dim=4, n_clusters=2, config=_config(bucket_overhead=1000))
    _perturb(model)
    cond = model.encode_condition(torch.randn(2, 2, 4))
    model(torch.randn(2, 23), torch.rand(2), cond).pow(2).sum().backward()
    for (start, stop, _), w_in, w_out, b_out in zip(
        model.layout.buckets, model.embed.weight, model.heads.weight, model.heads.bias, strict=True
    ):
        for row, m in enumerate(model.layout.members[start:stop]):
            assert (w_in.grad[row, :, len(m) :] == 0).all()
            assert (w_out.grad[row, len(m) :] == 0).all()
            assert (b_out.grad[row, len(m) :] == 0).all()
    counts = model.parameter_counts()
    assert counts["padding"] > 0 and counts["effective"] + counts["padding"] == counts["total"]
