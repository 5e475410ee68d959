"""Worker run by ``torchrun`` in test_ddp_launch.py (also imported there for the 1-process reference).

Each case is a small differentiable step module plus a fixed full batch. Every rank takes its
contiguous slice of the batch, does one SGD step through DDP, saves a checkpoint through the
rank-0 writer, reloads it on every rank, then trains a few AdamW steps with the patient sampler
and an EMA. Each rank writes ``<out>/rank<r>.json`` (its own report) and ``<out>/<case>_rank<r>.pt``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

BATCH = 6  # full batch; each of 2 ranks takes 3
LR = 0.1


def _mlp_case(gen: torch.Generator) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]:
    model = nn.Sequential(nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 5))
    x = torch.randn(BATCH, 7, generator=gen)  # (B, 7)
    y = torch.randn(BATCH, 5, generator=gen)  # (B, 5)
    return model, (x,), y


class _FlowStep(nn.Module):
    """One differentiable flow-matching step: condition encoding and velocity in one forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, clusters: torch.Tensor, sizes: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        # an all-False drop mask still puts the null condition in the graph, so every
        # parameter gets a gradient each step (DDP needs that unless find_unused_parameters)
        drop = torch.zeros(x_t.shape[0], dtype=torch.bool, device=x_t.device)  # (B,)
        cond = self.model.encode_condition(clusters, sizes, drop)  # Condition: vec (B, H)
        return self.model(x_t, t, cond)  # (B, G)


def _rnafm_case(
    gen: torch.Generator,
) -> tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor] | None:
    try:
        from rnafm.model import ModelConfig, build_model
        from rnafm.pathways import PathwayTokens
    except ImportError:
        return None
    n_genes, n_clusters, feat = 23, 5, 9
    tokens = PathwayTokens(
        genes=[f"G{i}" for i in range(n_genes)],
        names=["p0", "p1", "p2", "background_0"],
        members=[np.arange(0, 7), np.arange(5, 12), np.arange(12, 19), np.arange(19, 23)],
        is_background=np.array([False, False, False, True]),
    )
    config = ModelConfig(
        hidden=16, depth=1, heads=2, image_heads=2, cond_dropout=0.0, slide_head=False
    )  # the velocity path only: the slide head has its own loss
    model = build_model(tokens, feature_dim=feat, n_clusters=n_clusters, config=config)
    clusters = torch.randn(BATCH, n_clusters, feat, generator=gen)  # (B, K, D)
    sizes = torch.rand(BATCH, n_clusters, generator=gen) * 10 + 1  # (B, K)
    x0 = torch.randn(BATCH, n_genes, generator=gen)  # (B, G)
    x1 = torch.randn(BATCH, n_genes, generator=gen)  # (B, G)
    t = torch.rand(BATCH, generator=gen)  # (B,)
    x_t = t[:, None] * x1 + (1 - t[:, None]) * x0  # (B, G)
    return _FlowStep(model), (clusters, sizes, x_t, t), x1 - x0


def build_cases() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], torch.Tensor]]:
    """Freshly initialised cases, identical in every process (fixed seeds)."""
    cases = {}
    builders: dict[str, Callable[[torch.Generator], object]] = {
        "mlp": _mlp_case,
        "rnafm": _rnafm_case,
    }
    for i, (name, build) in enumerate(builders.items()):
        torch.manual_seed(100 + i)  # parameter init
        case = build(torch.Generator().manual_seed(200 + i))  # data
        if case is not None:
            cases[name] = case
    return cases


def sgd_step(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, rows: slice
) -> float:
    """One SGD step on ``rows`` of the batch with mean-MSE loss; returns the loss."""
    opt = torch.optim.SGD(module.parameters(), lr=LR)
    opt.zero_grad()
    pred = module(*(x[rows] for x in inputs))  # (b, out)
    loss = torch.mean((pred - target[rows]) ** 2)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _write_checkpoint(tmp: Path, *, state: dict, rank: int) -> None:
    """The rank-0 writer: logs each call beside the checkpoint, so the test can count them."""
    with (tmp.parent / "writes.log").open("a") as log:
        log.write(f"{rank}\n")
    torch.save({"model": state}, tmp)


def main() -> None:
    from rnafm.training import ddp

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ctx = ddp.init_distributed("cpu", timeout_s=60)
    report: dict[str, object] = {"rank": ctx.rank, "world_size": ctx.world_size, "cases": {}}
    per = BATCH // ctx.world_size
    rows = slice(ctx.rank * per, (ctx.rank + 1) * per)
    for name, (module, inputs, target) in build_cases().items():
        model = ddp.wrap_model(module, ctx)
        loss = sgd_step(model, inputs, target, rows)
        plain = ddp.unwrap_model(model)
        torch.save(plain.state_dict(), args.out / f"{name}_rank{ctx.rank}.pt")
        case: dict[str, object] = {"loss": loss, "params_in_sync": ddp.in_sync(plain, ctx)}

        writer = functools.partial(_write_checkpoint, state=plain.state_dict(), rank=ctx.rank)
        ckpt = ddp.write_on_main(args.out / f"{name}.ckpt", writer, ctx)
        loaded = ddp.load_checkpoint(ckpt, ctx)["model"]
        case["resume_matches"] = all(
            torch.equal(loaded[k], v) for k, v in plain.state_dict().items()
        )
        case.update(_short_training(model, inputs, target, ctx, ddp))
        report["cases"][name] = case  # type: ignore[index]
    flow = _flow_training(ctx, ddp, args.out)
    if flow is not None:
        report["flow"] = flow
    with ddp.main_process_first(ctx):
        pass
    report["mean_rank"] = ddp.all_reduce_mean(float(ctx.rank), ctx)
    report["broadcast"] = ddp.broadcast_object({"from": ctx.rank}, ctx)
    (args.out / f"rank{ctx.rank}.json").write_text(json.dumps(report))
    ddp.shutdown()


def _short_training(model, inputs, target, ctx, ddp) -> dict[str, object]:  # noqa: ANN001
    """A few AdamW steps over 11 samples of 5 patients with the patient sampler and an EMA."""
    patients = ["a", "a", "b", "c", "c", "c", "d", "e", "e", "b", "d"]
    n = len(patients)
    reps = math.ceil(n / BATCH)
    data = tuple(torch.cat([x] * reps)[:n] for x in inputs)
    labels = torch.cat([target] * reps)[:n]
    sampler = ddp.PatientDistributedSampler(patients, ctx=ctx, seed=3, batch_size=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    plain = ddp.unwrap_model(model)
    ema = [p.detach().clone() for p in plain.parameters()]
    losses, n_batches, seen = [], 0, set()
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler.batches():
            seen.update(batch)
            opt.zero_grad()
            pred = model(*(x[batch] for x in data))
            loss = torch.mean((pred - labels[batch]) ** 2)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for e, p in zip(ema, plain.parameters(), strict=True):
                    e.lerp_(p, 0.1)
            losses.append(ddp.all_reduce_mean(float(loss.detach()), ctx))
            n_batches += 1
    return {
        "train_losses_finite": all(math.isfinite(v) for v in losses),
        "train_batches": n_batches,
        "train_params_in_sync": ddp.in_sync(plain, ctx),
        "ema_in_sync": ddp.in_sync(ema, ctx),
        "seen_patients": sorted({patients[i] for i in seen}),
    }


def _flow_training(ctx, ddp, out: Path) -> dict[str, object] | None:  # noqa: ANN001
    """The documented recipe: DDP over FlowMatchingStep, dropout, per-rank noise, EMA, resume."""
    built = _rnafm_case(torch.Generator().manual_seed(7))
    if built is None:
        return None
    from rnafm.training.step import FlowMatchingStep

    model = built[0].model
    model.config = model.config.model_copy(update={"cond_dropout": 0.3})
    clusters, sizes = built[1][0], built[1][1]
    x1 = built[2]
    ema = [p.detach().clone() for p in model.parameters()]
    step = ddp.wrap_model(FlowMatchingStep(model), ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    patients = ["a", "b", "b", "c", "d", "d"]
    sampler = ddp.PatientDistributedSampler(patients, ctx=ctx, seed=1, batch_size=2)
    noise = torch.Generator().manual_seed(ddp.rank_seed(5, ctx))
    losses = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in sampler.batches():
            drop = model.draw_dropout(len(batch), generator=noise)  # (b,)
            loss = step(
                clusters[batch],
                sizes[batch],
                drop,
                x1[batch],
                generator=noise,
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for e, p in zip(ema, model.parameters(), strict=True):
                    e.lerp_(p, 0.1)
            losses.append(ddp.all_reduce_mean(float(loss.detach()), ctx))
    state = {"model": model.state_dict(), "ema": ema}
    path = ddp.save_checkpoint(state, out / "flow.ckpt", ctx)
    loaded = ddp.load_checkpoint(path, ctx)
    return {
        "losses_finite": all(math.isfinite(v) for v in losses),
        "params_in_sync": ddp.in_sync(model, ctx),
        "ema_in_sync": ddp.in_sync(ema, ctx),
        "resume_matches": all(torch.equal(a, b) for a, b in zip(loaded["ema"], ema, strict=True)),
    }


if __name__ == "__main__":
    main()
