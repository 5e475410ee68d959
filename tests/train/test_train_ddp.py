"""`torchrun --nproc_per_node 2 -m rnafm train --device cpu` end to end (gloo, 2 CPU processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_SLIDES, N_GENES, DIM = 21, 29, 5
TINY = {
    "clusters": {"k": 3},
    "model": {"hidden": 16, "depth": 1, "heads": 2, "image_heads": 2},
    "tokens": {"min_size": 3, "background_chunk_size": 7},
    "optim": {"epochs": 2, "batch_size": 5, "warmup_steps": 2, "max_minutes": None},
    "validation": {"min_patients": 2, "fraction": 0.25, "every": 1, "draws": 2, "steps": 2},
    "sampler": {"steps": 2},
    "calibration": {"draws": 4},
    "prior": {"folds": 3, "ranks": [2]},
}


def _cohort(root: Path) -> None:
    """TRIDENT feature files, a raw reference CSV (pairs of slides per patient) and a GMT."""
    from rnafm.features.io import write_features

    rng = np.random.default_rng(3)
    genes = [f"GENE{i}" for i in range(N_GENES)]
    centroids = rng.normal(0, 1, (3, DIM))
    props = rng.dirichlet(np.ones(3), N_SLIDES)  # (n, 3)
    (root / "features").mkdir(parents=True)
    slides = [f"S{i:02d}" for i in range(N_SLIDES)]
    for i, sid in enumerate(slides):
        n_tiles = int(rng.integers(4, 30))
        feats = centroids[rng.choice(3, n_tiles, p=props[i])] + 0.3 * rng.normal(
            size=(n_tiles, DIM)
        )
        coords = np.zeros((n_tiles, 2), dtype=np.int64)
        write_features(root / "features" / f"{sid}.h5", feats, coords, {"encoder": "tiny"})
    log2 = 4 + props @ rng.normal(0, 1.5, (3, N_GENES)) + 0.2 * rng.normal(size=(N_SLIDES, N_GENES))
    ref = pd.DataFrame(np.exp2(np.clip(log2, 0, None)) - 1, columns=[f"rna_{g}" for g in genes])
    ref.insert(0, "patient_id", [f"P{i // 2:02d}" for i in range(N_SLIDES)])
    ref.insert(0, "wsi_file_name", [f"{s}.svs" for s in slides])
    ref.to_csv(root / "ref.csv", index=False)
    (root / "sets.gmt").write_text(
        "SET_A\tna\t" + "\t".join(genes[:9]) + "\nSET_B\tna\t" + "\t".join(genes[5:16]) + "\n"
    )
    (root / "cfg.json").write_text(json.dumps(TINY))


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        env.pop(var, None)
    return env


def _torchrun_train(root: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "rnafm", "train", "--reference", str(root / "ref.csv"),
        "--features", str(root / "features"), "--gene-sets", str(root / "sets.gmt"),
        "--out", str(out), "--config", str(root / "cfg.json"), "--device", "cpu",
        "--expression-scale", "raw",
    ]  # fmt: skip
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("ddp_train")
    _cohort(root)
    out = root / "run"
    proc = _torchrun_train(root, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return root, out, proc.stdout


def test_torchrun_train_writes_one_complete_run(ddp_run) -> None:
    import torch

    import rnafm
    from rnafm.training.run import REQUIRED, read_history

    root, out, stdout = ddp_run
    assert stdout.count("run written to") == 1  # rank 1 prints nothing
    for name in (*REQUIRED, "history.jsonl", "val_metrics.json", "split.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or "tmp" in p.name]
    history = read_history(out)
    assert [r["epoch"] for r in history] == [1, 2]  # one line per epoch, not one per rank
    assert all(np.isfinite(r["loss"]) and "val_pcc" in r for r in history)
    metrics = json.loads((out / "val_metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["steps"] == history[-1]["step"] > 0
    blob = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert len(blob["rng_ranks"]) == 2  # per-rank noise streams for resuming
    assert not torch.equal(blob["rng_ranks"][0][1], blob["rng_ranks"][1][1])  # ranks draw apart
    assert blob["state"]["finished"] and blob["state"]["epoch"] == 2
    predictor = rnafm.load_model(out)
    assert predictor.genes == json.loads((out / "genes.json").read_text())
    assert predictor.n_clusters == json.loads((out / "config.json").read_text())["n_clusters"]


def test_torchrun_resume_and_predict(ddp_run, tmp_path: Path) -> None:
    import torch

    from rnafm.training.run import read_history

    root, out, _ = ddp_run
    first = read_history(out)[0]
    ckpt = out / "checkpoint.pt"
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    blob["state"].update(epoch=1, step=first["step"], finished=False)  # as if stopped mid-run
    torch.save(blob, ckpt)
    proc = _torchrun_train(root, out)  # both ranks resume and run epoch 2 again
    assert proc.returncode == 0, proc.stderr[-4000:]
    history = read_history(out)
    assert [r["epoch"] for r in history] == [1, 2] and history[0] == first
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["state"]["finished"]
    pred = tmp_path / "pred.h5ad"
    cmd = [
        sys.executable, "-m", "rnafm", "predict", "--model", str(out),
        "--features", str(root / "features"), "--draws", "2", "--steps", "2",
        "--device", "cpu", "--out", str(pred),
    ]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pred.is_file() and f"predicted {N_SLIDES} slides" in r.stdout


def test_cv_refuses_torchrun(ddp_run) -> None:
    root, _, _ = ddp_run
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "0"}
    cmd = [
        sys.executable, "-m", "rnafm", "cv", "--reference", str(root / "ref.csv"),
        "--features", str(root / "features"), "--out", str(root / "cv"),
    ]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not run under torchrun" in r.stderr
