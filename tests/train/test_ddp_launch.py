"""Two CPU processes under torchrun (gloo) against one process on the full batch."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("rnafm_test_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_two_ranks_report_in_sync(launched: Path) -> None:
    reports = [json.loads((launched / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    for report in reports:
        assert report["mean_rank"] == pytest.approx(0.5)
        assert report["broadcast"] == {"from": 0}
        assert "mlp" in report["cases"]
        assert "rnafm" in report["cases"]  # the real network, wrapped as one step module
        flow = report["flow"]  # DDP(FlowMatchingStep) with dropout and per-rank noise
        assert flow["losses_finite"] and flow["params_in_sync"]
        assert flow["ema_in_sync"] and flow["resume_matches"]
        for case in report["cases"].values():
            assert case["params_in_sync"]
            assert case["resume_matches"]
            assert case["train_losses_finite"]
            assert case["train_params_in_sync"]
            assert case["ema_in_sync"]
    # same number of batches on both ranks; together they cover every patient
    for name in reports[0]["cases"]:
        counts = {r["cases"][name]["train_batches"] for r in reports}
        assert len(counts) == 1
        seen = set().union(*(r["cases"][name]["seen_patients"] for r in reports))
        assert seen == {"a", "b", "c", "d", "e"}


def test_half_batches_match_full_batch(launched: Path) -> None:
    worker = _load_worker()
    cases = worker.build_cases()
    for name, (module, inputs, target) in cases.items():
        before = {k: v.clone() for k, v in module.state_dict().items()}
        worker.sgd_step(module, inputs, target, slice(0, worker.BATCH))
        for rank in range(2):
            got = torch.load(launched / f"{name}_rank{rank}.pt", weights_only=True)
            moved = 0.0
            for key, ref in module.state_dict().items():
                torch.testing.assert_close(got[key], ref, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
                moved = max(moved, float((ref - before[key]).abs().max()))
            assert moved > 1e-3, "the step must actually change parameters"


def test_checkpoint_written_once_by_rank_zero(launched: Path) -> None:
    writes = (launched / "writes.log").read_text().split()
    n_cases = len(json.loads((launched / "rank0.json").read_text())["cases"])
    assert writes == ["0"] * n_cases
    names = sorted(p.name for p in launched.iterdir())
    assert not [n for n in names if ".tmp" in n], names  # no temporary file left behind
    assert "mlp.ckpt" in names
