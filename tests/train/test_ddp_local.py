"""Single-process behaviour of the DDP helpers and the patient-grouped sampler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnafm.errors import InputError
from rnafm.training import ddp

PATIENTS = ["p0", "p0", "p1", "p2", "p2", "p2", "p3", "p4", "p4", "p1", "p5", "p6", "p6"]


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_context_is_a_no_op(no_launcher: None, tmp_path: Path) -> None:
    ctx = ddp.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert ctx.device == torch.device("cpu")
    model = nn.Linear(3, 2)
    assert ddp.wrap_model(model, ctx) is model
    assert ddp.unwrap_model(model) is model
    value = torch.tensor([1.0, 3.0])
    assert ddp.all_reduce_mean(value, ctx) is value
    assert ddp.all_reduce_mean(2.5, ctx) == 2.5
    assert ddp.broadcast_object({"a": 1}, ctx) == {"a": 1}
    assert ddp.all_gather_object(7, ctx) == [7]
    assert ddp.in_sync(model, ctx)
    with ddp.main_process_first(ctx):
        ddp.barrier(ctx)
    path = ddp.save_checkpoint({"w": torch.arange(3)}, tmp_path / "c.pt", ctx)
    assert torch.equal(ddp.load_checkpoint(path, ctx)["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    ddp.shutdown()


def test_world_size_one_env_does_not_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    ctx = ddp.init_distributed("auto")
    assert not ctx.distributed
    assert not torch.distributed.is_initialized()


def test_bad_launcher_env_is_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE"):
        ddp.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(InputError, match="MASTER_ADDR"):
        ddp.init_distributed("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_gpu_is_input_error(no_launcher: None) -> None:
    with pytest.raises(InputError, match="no CUDA GPU"):
        ddp.init_distributed("cuda")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    ctx = ddp.DistContext()

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ddp.write_on_main(tmp_path / "x.pt", broken, ctx)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="not found"):
        ddp.load_checkpoint(tmp_path / "x.pt", ctx)


def _plans(world: int, **kwargs: object) -> list[list[int]]:
    samplers = [
        ddp.PatientDistributedSampler(PATIENTS, num_replicas=world, rank=r, **kwargs)
        for r in range(world)
    ]
    return [list(s) for s in samplers]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_sampler_keeps_patients_together_and_pads_equally(
    world: int, batch_size: int | None
) -> None:
    plans = _plans(world, seed=5, batch_size=batch_size)
    lengths = {len(p) for p in plans}
    assert len(lengths) == 1  # every rank the same number of samples (and batches)
    if batch_size:
        assert lengths.pop() % batch_size == 0
    owners: dict[str, set[int]] = {}
    for rank, plan in enumerate(plans):
        for i in plan:
            owners.setdefault(PATIENTS[i], set()).add(rank)
    assert all(len(r) == 1 for r in owners.values())  # one rank per patient
    covered = set().union(*map(set, plans))
    assert covered == set(range(len(PATIENTS)))  # nothing dropped
    for plan in plans:  # padding repeats the rank's own samples only
        counts = Counter(plan)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_sampler_is_balanced_and_epoch_aware() -> None:
    first = _plans(2, seed=1)
    again = _plans(2, seed=1)
    assert first == again  # every rank computes the same plan
    # 13 samples over 2 ranks: largest-first dealing gives 7 + 6, padded to 7
    assert [len(p) for p in first] == [7, 7]
    sampler = ddp.PatientDistributedSampler(PATIENTS, num_replicas=2, rank=0, seed=1)
    orders = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert len({tuple(o) for o in orders}) > 1  # reshuffled across epochs


def test_sampler_subset_unshuffled_and_drop_last() -> None:
    idx = [0, 1, 2, 3, 4, 5, 9]
    plans = _plans(2, seed=0, shuffle=False, drop_last=True, indices=idx)
    assert len(plans[0]) == len(plans[1])
    assert set().union(*map(set, plans)) <= set(idx)
    flat = np.concatenate(plans)
    assert len(set(flat.tolist())) == len(flat)  # drop_last never repeats
    sampler = ddp.PatientDistributedSampler(PATIENTS, seed=0, batch_size=4)
    batches = list(sampler.batches())
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # 13 padded to 16


def test_sampler_refuses_more_ranks_than_patients() -> None:
    with pytest.raises(InputError, match="7 patients cannot be split across 8"):
        ddp.PatientDistributedSampler(PATIENTS, num_replicas=8, rank=0)


def test_rank_seed_differs_per_rank() -> None:
    seeds = {
        ddp.rank_seed(3, ddp.DistContext(rank=r, world_size=4, is_main=r == 0)) for r in range(4)
    }
    assert len(seeds) == 4


def test_flow_matching_step_equals_the_two_calls() -> None:
    from rnafm.flow import flow_matching_loss
    from rnafm.model import ModelConfig, build_model
    from rnafm.pathways import PathwayTokens
    from rnafm.training.step import FlowMatchingStep

    tokens = PathwayTokens(
        genes=[f"G{i}" for i in range(11)],
        names=["p0", "p1", "background_0"],
        members=[np.arange(0, 5), np.arange(3, 8), np.arange(8, 11)],
        is_background=np.array([False, False, True]),
    )
    torch.manual_seed(0)
    model = build_model(
        tokens,
        feature_dim=5,
        n_clusters=3,
        config=ModelConfig(hidden=8, depth=1, heads=2, image_heads=2),
    )
    gen = torch.Generator().manual_seed(1)
    clusters, sizes = torch.randn(4, 3, 5, generator=gen), torch.rand(4, 3, generator=gen) + 1
    drop = torch.tensor([False, True, False, False])
    x1 = torch.randn(4, 11, generator=gen)
    z = torch.randn(4, 11, generator=gen)
    step = FlowMatchingStep(model)
    got = step(clusters, sizes, drop, x1, generator=torch.Generator().manual_seed(2), head_target=z)
    cond = model.encode_condition(clusters, sizes, drop)
    want = flow_matching_loss(model, x1, cond, generator=torch.Generator().manual_seed(2))
    est = model.predict_slide(model.encode_condition(clusters, sizes))  # (B, G)
    want = want + torch.mean((est - z) ** 2)  # the slide head's direct supervision
    torch.testing.assert_close(got, want)
    got.backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every parameter used


def test_end_worker_flushes_then_leaves_only_under_torchrun(
    no_launcher: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging
    import os

    exits: list[int] = []

    class Left(Exception):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Left

    class Counting(logging.Handler):
        flushed = 0

        def emit(self, record: logging.LogRecord) -> None:
            pass

        def flush(self) -> None:
            Counting.flushed += 1

    monkeypatch.setattr(os, "_exit", fake_exit)
    handler = Counting()
    logging.getLogger("rnafm").addHandler(handler)
    try:
        ddp.end_worker(0)  # one plain process: returns, the interpreter ends as usual
        assert exits == [] and Counting.flushed == 0
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(Left):
            ddp.end_worker(0)
        assert exits == [0] and Counting.flushed == 1  # logs flushed before leaving
    finally:
        logging.getLogger("rnafm").removeHandler(handler)
