"""The flow with the real (tiny) network: every solver x every model switch."""

from __future__ import annotations

import pytest
import torch

from rnafm.flow import SamplerConfig, Solver, flow_matching_loss, sample
from rnafm.model import ModelConfig, build_model

SWITCHES = [
    {},
    {"cross_attention": True},
    {"cluster_size_weights": True, "cross_attention": True},
    {"use_pathway_mask": False, "head_modulation": "shared"},
    {"cluster_index_embedding": True, "implementation": "loop"},
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(s) or "default")
@pytest.mark.parametrize("solver", list(Solver))
def test_train_and_sample_every_solver_and_switch(tokens, switches, solver):
    cfg = ModelConfig(hidden=12, depth=1, heads=3, image_heads=3, **switches)
    torch.manual_seed(0)
    model = build_model(tokens, feature_dim=5, n_clusters=3, config=cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    clusters, sizes = torch.randn(3, 3, 5), torch.tensor([[1.0, 0, 2]] * 3)
    x1 = torch.randn(3, 23)
    for _ in range(2):  # second step runs with non-zero adaLN heads
        cond = model.encode_condition(clusters, sizes, drop=model.draw_dropout(3, generator=gen))
        loss = flow_matching_loss(model, x1, cond, generator=gen)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
    with torch.no_grad():
        cond = model.encode_condition(clusters, sizes).repeat(2)  # 2 draws per slide
        null = model.null_condition(cond.batch_size)
        cfg_s = SamplerConfig(solver=solver, steps=2, guidance=1.7, atol=1e-3, rtol=1e-3)
        out = sample(model, cond, null, n_genes=23, config=cfg_s, generator=gen)
    assert out.shape == (6, 23) and torch.isfinite(out).all()
