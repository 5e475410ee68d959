"""Tiny synthetic cohorts for the train/predict tests (odd sizes, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_SLIDES = 23
N_GENES = 37
DIM = 7


def write_tiny_cohort(root: Path, *, seed: int = 0) -> dict:
    """Features (TRIDENT h5), a raw reference CSV and a GMT over N_GENES genes."""
    from rnafm.features.io import write_features

    rng = np.random.default_rng(seed)
    genes = [f"GENE{i}" for i in range(N_GENES)]
    centroids = rng.normal(0, 1, (3, DIM))
    props = rng.dirichlet(np.ones(3), N_SLIDES)  # (n, 3)
    feat_dir = root / "features"
    feat_dir.mkdir(parents=True)
    slides = [f"S{i:02d}" for i in range(N_SLIDES)]
    for i, sid in enumerate(slides):
        n_tiles = int(rng.integers(3, 40))  # some slides have fewer tiles than clusters
        types = rng.choice(3, n_tiles, p=props[i])
        feats = centroids[types] + 0.3 * rng.normal(size=(n_tiles, DIM))
        coords = np.zeros((n_tiles, 2), dtype=np.int64)
        write_features(feat_dir / f"{sid}.h5", feats, coords, {"encoder": "tiny"})
    load = rng.normal(0, 1.5, (3, N_GENES))
    log2 = 4 + props @ load + 0.2 * rng.normal(size=(N_SLIDES, N_GENES))
    raw = np.exp2(np.clip(log2, 0, None)) - 1  # (n, G)
    ref = pd.DataFrame(raw, columns=[f"rna_{g}" for g in genes])
    ref.insert(0, "patient_id", [f"P{i // 2:02d}" for i in range(N_SLIDES)])  # pairs of slides
    ref.insert(0, "wsi_file_name", [f"{s}.svs" for s in slides])
    ref.iloc[:17].to_csv(root / "train.csv", index=False)
    ref.iloc[17:].to_csv(root / "test.csv", index=False)
    ref.to_csv(root / "all.csv", index=False)
    gmt = root / "sets.gmt"
    gmt.write_text(
        "SET_A\tna\t" + "\t".join(genes[:9]) + "\n"
        "SET_B\tna\t" + "\t".join(genes[5:16]) + "\n"
        "SET_C\tna\t" + "\t".join(genes[20:27] + ["NOT_A_GENE"]) + "\n"
    )
    return {"root": root, "genes": genes, "slides": slides, "log2": log2}


TINY = {
    "clusters.k": 5,
    "model.hidden": 16,
    "model.depth": 1,
    "model.heads": 2,
    "model.image_heads": 2,
    "tokens.min_size": 3,
    "tokens.background_chunk_size": 7,
    "optim.epochs": 3,
    "optim.batch_size": 5,
    "optim.warmup_steps": 2,
    "optim.max_minutes": None,
    "validation.min_patients": 2,
    "validation.fraction": 0.25,
    "validation.every": 1,
    "validation.draws": 2,
    "validation.steps": 2,
    "sampler.steps": 3,
    "calibration.draws": 4,
    "prior.folds": 3,
    "prior.ranks": [2],
    "tile_head.tile_epochs": 3,
    "tile_head.tile_hidden": 8,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def tiny_overrides() -> dict:
    """Config overrides for a model that trains in well under a second."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> dict:
    return write_tiny_cohort(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory) -> Path:
    import rnafm

    root = tiny_cohort["root"]
    out = tmp_path_factory.mktemp("run") / "run"
    return rnafm.train(
        root / "train.csv", root / "features", gene_sets=root / "sets.gmt", out=out, **TINY
    )
