"""Quality benchmark: default `rnafm train` + `predict` against ridge on a synthetic cohort.

The cohort has real structure: tiles come from a few latent tissue types with per-slide
proportions, a per-slide stain shift and tile noise; bulk expression is the raw-scale mixture of
tissue-type profiles times gene-set programme activities (nonlinear in the proportions) times
patient noise that no image predicts. Expression is written raw (counts-like), features in the
TRIDENT layout. Slides are split by patient into train and test; rnafm never sees the test
expression.

Prints one JSON line: mean per-gene PCC over test slides for rnafm and ridge, 90% interval
coverage, and wall times. ``--baseline-published`` also trains the published RNA-FM recipe
(``rnafm.train.presets.PRESETS["published"]``) on the same split and reports it under
``"published"``; ``--preset`` applies a preset to the main run instead of the defaults.

    python benchmarks/quality.py --slides 300 --genes 5000 --dim 512 --baseline-published
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def make_cohort(
    root: Path,
    *,
    n_slides: int = 300,
    n_genes: int = 5000,
    dim: int = 512,
    n_types: int = 6,
    tiles: tuple[int, int] = (100, 600),
    noise: float = 0.35,
    seed: int = 0,
) -> dict:
    """Write ``root/features/*.h5`` and ``root/reference.csv`` (raw values); return metadata."""
    import pandas as pd

    from rnafm.features.io import write_features
    from rnafm.pathways import load_gene_sets

    rng = np.random.default_rng(seed)
    sets = load_gene_sets("hallmark")
    hallmark = sorted(set().union(*sets.values()))
    genes = list(rng.permutation(hallmark)[: int(0.6 * n_genes)])
    genes += [f"SYNTH{i:05d}" for i in range(n_genes - len(genes))]
    g_index = {g: i for i, g in enumerate(genes)}
    n_sets = len(sets)

    centroids = rng.normal(0, 1, (n_types, dim)).astype(np.float32)  # (T, D)
    base = rng.normal(3.0, 2.0, n_genes)  # (G,) log2 baseline
    type_fc = rng.normal(0, 1.2, (n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.3)
    load = np.zeros((n_sets, n_genes))  # (S, G) programme loadings
    for s, members in enumerate(sets.values()):
        idx = [g_index[g] for g in members if g in g_index]
        load[s, idx] = rng.normal(0.6, 0.3, len(idx)) * rng.choice([-1, 1])
    w_prog = rng.normal(0, 1.5, (n_types, n_sets))  # (T, S)
    w_pair = rng.normal(0, 3.0, (n_types, n_types, n_sets)) * (rng.random((1, 1, n_sets)) < 0.5)

    n_patients = int(n_slides * 0.9)
    patient_of = np.concatenate(
        [np.arange(n_patients), rng.integers(0, n_patients, n_slides - n_patients)]
    )
    concentration = rng.uniform(0.3, 2.0, n_types)
    props = rng.dirichlet(concentration, n_slides)  # (n, T)
    latent = rng.normal(0, 0.6, (n_patients, n_sets))[patient_of]  # (n, S) not in the image
    act = np.tanh(props @ w_prog + np.einsum("ni,nj,ijs->ns", props, props, w_pair)) + latent
    log_prof = base[None, None, :] + type_fc[None]  # (1, T, G)
    mix = np.einsum(
        "nt,ntg->ng", props, np.broadcast_to(2.0**log_prof, (n_slides,) + log_prof.shape[1:])
    )
    raw = mix * 2.0 ** (act @ load) * 2.0 ** rng.normal(0, noise, (n_slides, n_genes))  # (n, G)

    feat_dir = root / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    slide_ids = [f"SYN-{i:04d}" for i in range(n_slides)]
    tile_means = np.zeros((n_slides, dim), dtype=np.float64)
    for i, sid in enumerate(slide_ids):
        n_tiles = int(rng.integers(*tiles))
        types = rng.choice(n_types, n_tiles, p=props[i])
        stain = rng.normal(0, 0.3, dim)
        feats = centroids[types] + stain + rng.normal(0, 0.8, (n_tiles, dim))  # (N, D)
        feats = feats.astype(np.float32)
        tile_means[i] = feats.mean(0)
        coords = np.stack([np.arange(n_tiles) * 256, np.zeros(n_tiles)], 1).astype(np.int64)
        write_features(
            feat_dir / f"{sid}.h5", feats, coords, {"encoder": "synthetic", "patch_size": 256}
        )
    ref = pd.DataFrame(
        {
            "wsi_file_name": [f"{s}.svs" for s in slide_ids],
            "patient_id": [f"P{p:04d}" for p in patient_of],
        }
    )
    expr = pd.DataFrame(raw.astype(np.float32), columns=[f"rna_{g}" for g in genes])
    ref = pd.concat([ref, expr], axis=1)
    ref.to_csv(root / "reference.csv", index=False)
    return {
        "slide_ids": slide_ids,
        "patients": [f"P{p:04d}" for p in patient_of],
        "genes": genes,
        "log2": np.log2(raw + 1.0),
        "tile_means": tile_means,
        "reference": ref,
    }


def split_reference(root: Path, meta: dict, *, test_fraction: float = 0.2, seed: int = 1):
    """Write train.csv / test.csv split by patient; return (train_idx, test_idx)."""
    rng = np.random.default_rng(seed)
    patients = sorted(set(meta["patients"]))
    test_p = set(rng.permutation(patients)[: int(round(test_fraction * len(patients)))])
    is_test = np.array([p in test_p for p in meta["patients"]])
    ref = meta["reference"]
    ref[~is_test].to_csv(root / "train.csv", index=False)
    ref[is_test].to_csv(root / "test.csv", index=False)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def pcc_mean(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean per-gene Pearson correlation (genes with constant values skipped)."""
    pc, tc = pred - pred.mean(0), true - true.mean(0)
    den = np.sqrt((pc**2).sum(0) * (tc**2).sum(0))
    ok = den > 1e-12
    return float(((pc * tc).sum(0)[ok] / den[ok]).mean())


def ridge_baseline(x_tr, y_tr, x_te, *, per_gene: bool) -> np.ndarray:
    """Ridge on mean-pooled tile features, alpha by leave-one-out CV (sklearn RidgeCV)."""
    from sklearn.linear_model import RidgeCV

    m = RidgeCV(alphas=np.logspace(-2, 5, 15), alpha_per_target=per_gene)
    return m.fit(x_tr, y_tr).predict(x_te)


def run_rnafm(
    root: Path,
    meta: dict,
    te: np.ndarray,
    overrides: dict,
    *,
    name: str,
    draws: int,
    reuse: bool = False,
) -> dict:
    """Train with ``overrides`` into ``root/<name>``, predict the test slides, score them."""
    import rnafm

    t1 = time.perf_counter()
    run = root / name
    if not (reuse and (run / "calibration.json").is_file()):
        run = rnafm.train(root / "train.csv", root / "features", out=run, resume=False, **overrides)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    adata = rnafm.load_model(run).predict(
        root / "features", reference=root / "test.csv", draws=draws
    )
    t_pred = time.perf_counter() - t2
    truth = meta["log2"][te][:, [meta["genes"].index(g) for g in adata.var_names]]
    order = [meta["slide_ids"].index(s) for s in adata.obs_names]
    assert order == list(te), "prediction order differs from the test reference"
    cover = float(np.mean((truth >= adata.layers["lower"]) & (truth <= adata.layers["upper"])))
    val = json.loads((run / "val_metrics.json").read_text())
    return {
        "pcc": pcc_mean(adata.X, truth),
        "coverage90": cover,
        "draws": draws,
        "val": val,
        "train_s": round(t_train, 1),
        "predict_s": round(t_pred, 1),
        "overrides": overrides,
        "genes": list(adata.var_names),
    }


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, value = item.split("=", 1)
        out[key] = json.loads(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slides", type=int, default=300)
    ap.add_argument("--genes", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the cohort here (reused).")
    ap.add_argument(
        "--preset",
        default="none",
        help="Training preset of the main rnafm run (rnafm.train.presets; none: defaults).",
    )
    ap.add_argument("--set", action="append", default=[], help="Config override key=json-value.")
    ap.add_argument(
        "--baseline-published",
        action="store_true",
        help="Also train the 'published' preset on the same split and score it.",
    )
    ap.add_argument(
        "--published-set",
        action="append",
        default=[],
        help="Override of the published run, applied after the preset (key=json-value).",
    )
    ap.add_argument(
        "--published-draws", type=int, default=8, help="Draws averaged for the published run."
    )
    ap.add_argument(
        "--reuse-run",
        action="store_true",
        help="Score a finished run already in --workdir instead of training it again.",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from rnafm.train.presets import preset_overrides

    torch.set_num_threads(args.threads)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="rnafm_quality_"))
    t0 = time.perf_counter()
    meta = make_cohort(root, n_slides=args.slides, n_genes=args.genes, dim=args.dim, seed=args.seed)
    tr, te = split_reference(root, meta)
    t_data = time.perf_counter() - t0
    overrides = {**preset_overrides(args.preset), **_parse_sets(args.set)}
    main_run = run_rnafm(
        root, meta, te, overrides, name="run", draws=args.draws, reuse=args.reuse_run
    )
    genes = main_run.pop("genes")
    gi = [meta["genes"].index(g) for g in genes]
    x, y = meta["tile_means"], meta["log2"][:, gi]
    truth = y[te]
    out = {
        "slides": args.slides,
        "train_slides": len(tr),
        "test_slides": len(te),
        "genes": len(genes),
        "dim": args.dim,
        "seed": args.seed,
        "preset": args.preset,
        "rnafm_pcc": main_run["pcc"],
        "ridge_pcc": pcc_mean(ridge_baseline(x[tr], y[tr], x[te], per_gene=False), truth),
        "ridge_pergene_pcc": pcc_mean(ridge_baseline(x[tr], y[tr], x[te], per_gene=True), truth),
        "coverage90": main_run["coverage90"],
        "val": main_run["val"],
        "data_s": round(t_data, 1),
        "train_s": main_run["train_s"],
        "predict_s": main_run["predict_s"],
        "overrides": overrides,
    }
    if args.baseline_published:
        print(json.dumps(out), flush=True)  # the main run's line, before the slow baseline
        pub_over = {**preset_overrides("published"), **_parse_sets(args.published_set)}
        pub = run_rnafm(
            root,
            meta,
            te,
            pub_over,
            name="run_published",
            draws=args.published_draws,
            reuse=args.reuse_run,
        )
        pub.pop("genes")
        out["published"] = pub
    print(json.dumps(out))


if __name__ == "__main__":
    main()
