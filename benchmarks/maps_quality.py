"""Map quality: per-tile maps of a trained run against the planted per-tile truth.

A ``localized`` synthetic feature cohort (:func:`rnafm.synth.features.make_feature_cohort`)
plants programmes around rare tile types: interferon-gamma, allograft rejection and
inflammatory response around lymphoid aggregates, hypoxia on a ring around necrosis,
proliferation (E2F targets, G2M checkpoint) in tumour. Every tile's programme activity is
written as truth. Slides are split by patient; a run is trained on the training patients'
bulk expression only (no tile truth), then the test slides are mapped.

For each programme it prints the mean over test slides of the per-slide Spearman correlation
between the map (the programme's pathway score) and the tile truth, for

- ``rnafm``: rnafm maps with the default settings (the run's tile head on every tile, anchored
  to the run's full prediction for the slide; ``--maps`` changes them);
- ``readout``: the slide head's per-tile read-out (``method="readout"``), unless ``rnafm``
  already is;
- ``local`` (with ``--local``): the run's full prediction for a window of ``radius`` tiles at
  every lattice point; ``blend`` (with ``--local``): the mean of the default and ``local`` maps;
- ``cluster``: naive baseline, every tile gets the run's prediction for its own cluster alone;
- ``tile_ridge``: naive baseline, ridge from mean-pooled features to bulk log2 expression fitted
  on the training slides, applied to each tile's own feature vector;
- ``oracle``: a ceiling, not a method: the generator's true log2 expression of every tile
  (:class:`rnafm.synth.feature_localized.TileExpression`, its tissue type's profile plus its
  programmes) scored like a map. A pathway score carries its genes' tissue baselines and the
  programmes that share its genes, which the activity truth does not, so even this map stays
  below 1.

It also times mapping a slide of about ``--speed-tiles`` tiles for 5 pathways (two test slides
placed side by side) with the default settings. Prints one JSON line.

    python benchmarks/maps_quality.py --slides 160 --genes 600 --dim 64 --minutes 4
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("maps_quality")

PROGRAMMES = (
    "HALLMARK_INTERFERON_GAMMA_RESPONSE",
    "HALLMARK_ALLOGRAFT_REJECTION",
    "HALLMARK_INFLAMMATORY_RESPONSE",
    "HALLMARK_HYPOXIA",
    "HALLMARK_E2F_TARGETS",
    "HALLMARK_G2M_CHECKPOINT",
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--slides", type=int, default=160, help="slides in the synthetic cohort")
    p.add_argument("--genes", type=int, default=600)
    p.add_argument("--dim", type=int, default=64, help="tile feature dimension")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of test patients")
    p.add_argument("--max-test-slides", type=int, default=16, help="test slides mapped")
    p.add_argument("--minutes", type=float, default=4.0, help="training time limit")
    p.add_argument("--train", default="{}", help="JSON of TrainConfig overrides")
    p.add_argument("--maps", default="{}", help="JSON of MapConfig overrides (rnafm method)")
    p.add_argument("--local", action="store_true",
                   help="also score the local-window and blend methods")  # fmt: skip
    p.add_argument("--speed-tiles", type=int, default=4000)
    p.add_argument("--work", type=Path, default=None, help="keep cohort and run here (reused)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    return p.parse_args()


def split(cohort, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train / test slide indices, split by patient."""
    patients = sorted(set(cohort.patient_ids))
    rng = np.random.default_rng(seed)
    test_p = set(rng.choice(patients, size=max(1, round(fraction * len(patients))), replace=False))
    test = [i for i, p in enumerate(cohort.patient_ids) if p in test_p]
    train = [i for i, p in enumerate(cohort.patient_ids) if p not in test_p]
    return train, test


def train_run(cohort, train_idx: list[int], work: Path, minutes: float, overrides: dict) -> Path:
    import rnafm
    from rnafm.cohort.reference import ExpressionScale, load_reference, write_reference

    run = work / "run"
    if (run / "calibration.json").is_file():
        return run
    ref = load_reference(cohort.reference, scale=ExpressionScale.RAW)
    ids = [cohort.slide_ids[i] for i in train_idx]
    sub = ref.subset(ids)
    write_reference(work / "train_reference.csv", sub, raw=True)
    opts = {"device": "cpu", "optim.max_minutes": minutes, "expression_scale": "raw", **overrides}
    return rnafm.train(work / "train_reference.csv", cohort.features_dir, out=run, **opts)


def tile_ridge(cohort, train_idx: list[int], predictor):
    """Ridge from mean-pooled tile features to log2 expression of the run's genes (train slides)."""
    from rnafm.cohort.reference import ExpressionScale, load_reference
    from rnafm.features.io import read_features
    from rnafm.training.prior import fit_ridge

    ref = load_reference(cohort.reference, scale=ExpressionScale.RAW)
    col = {g: j for j, g in enumerate(ref.genes)}
    pos = {s: i for i, s in enumerate(ref.slide_ids)}
    ids = [cohort.slide_ids[i] for i in train_idx]
    x = np.stack([read_features(cohort.feature_path(s)).features.mean(0) for s in ids])  # (n, D)
    y = ref.values[[pos[s] for s in ids]][:, [col[g] for g in predictor.genes]]  # (n, G)
    return fit_ridge(x, y, (1e-3, 1e-2, 1e-1, 1.0, 10.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def score_slides(cohort, test_ids, predictor, ridge, map_config, programmes, *,
                 local: bool = False) -> dict:  # fmt: skip
    from rnafm.features.io import read_features
    from rnafm.maps.compute import map_slide
    from rnafm.maps.config import MapMethod
    from rnafm.maps.names import resolve_columns
    from rnafm.synth.tile_truth import read_tile_truth

    cols = resolve_columns(predictor.tokens, predictor.genes, pathways=list(programmes),
                           symbols=[], source="benchmark")  # fmt: skip
    others = {"cluster": map_config.model_copy(update={"method": MapMethod.CLUSTER})}
    if map_config.method is not MapMethod.READOUT:
        others["readout"] = map_config.model_copy(update={"method": MapMethod.READOUT})
    if local:
        others["local"] = map_config.model_copy(update={"method": MapMethod.LOCAL})
        others["blend"] = map_config.model_copy(update={"method": MapMethod.BLEND})
    from rnafm.synth.feature_localized import TileExpression

    oracle = TileExpression(cohort.config, list(predictor.genes))
    methods = ("rnafm", *others, "tile_ridge", "oracle")
    out = {m: {p: [] for p in programmes} for m in methods}
    seconds, cpu, tiles = [], [], []
    for sid in test_ids:
        path = cohort.feature_path(sid)
        truth = read_tile_truth(cohort.truth_path(sid))
        t0, c0 = time.perf_counter(), time.process_time()
        ours = map_slide(predictor, path, cols, map_config)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        tiles.append(len(ours.coords))
        if not np.array_equal(ours.coords, truth.coords):
            raise SystemExit(f"{sid}: map coords differ from the truth coords")
        maps = {name: map_slide(predictor, path, cols, cfg) for name, cfg in others.items()}
        feats = read_features(path).features
        ridge_scores = cols.apply(ridge.predict(feats))  # (N, M)
        true_log2 = oracle.log2(truth.tile_type, truth.activity, truth.names)  # (N, G)
        oracle_scores = cols.apply(true_log2)  # (N, M)
        log.warning("%s: %d tiles mapped in %.1f s", sid, len(ours.coords), seconds[-1])
        for j, prog in enumerate(programmes):
            t = truth.column(prog)
            out["rnafm"][prog].append(spearman(ours.scores[:, j], t))
            for name, smap in maps.items():
                out[name][prog].append(spearman(smap.scores[:, j], t))
            out["tile_ridge"][prog].append(spearman(ridge_scores[:, j], t))
            out["oracle"][prog].append(spearman(oracle_scores[:, j], t))
    summary = {
        m: {p: float(np.nanmean(v)) if np.isfinite(v).any() else None for p, v in per.items()}
        for m, per in out.items()
    }
    return {"spearman": summary, "seconds_per_slide": float(np.mean(seconds)),
            "cpu_seconds_per_slide": float(np.mean(cpu)),
            "tiles_per_slide": float(np.mean(tiles))}  # fmt: skip


def speed(cohort, test_ids, predictor, map_config, n_tiles: int, work: Path) -> dict:
    """Time one slide of about ``n_tiles`` tiles (test slides side by side) for 5 pathways."""
    from rnafm.features.io import read_features, write_features
    from rnafm.maps.compute import map_slide
    from rnafm.maps.names import resolve_columns

    feats, coords, shift = [], [], 0
    for sid in test_ids * 4:
        sf = read_features(cohort.feature_path(sid))
        feats.append(sf.features)
        coords.append(sf.coords + np.array([shift, 0]))
        shift = int(coords[-1][:, 0].max()) + 2 * int(sf.attrs.get("patch_size_level0", 256))
        if sum(len(f) for f in feats) >= n_tiles:
            break
    big = work / "speed" / "SPEED.h5"
    f, c = np.concatenate(feats)[:n_tiles], np.concatenate(coords)[:n_tiles]
    write_features(big, f, c, dict(sf.attrs))
    cols = resolve_columns(predictor.tokens, predictor.genes, pathways=list(PROGRAMMES[:5]),
                           symbols=[], source="benchmark")  # fmt: skip
    map_slide(predictor, big, cols, map_config)  # cluster cache and warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    smap = map_slide(predictor, big, cols, map_config)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # cpu / threads is the wall time on an idle machine (the benchmark host may be shared)
    return {"tiles": int(len(f)), "pathways": 5, "seconds": wall, "cpu_seconds": cpu,
            "distinct_windows": int(smap.attrs["n_conditions"]),
            "method": smap.attrs.get("method")}  # fmt: skip


def main() -> None:
    import torch

    import rnafm
    from rnafm.maps.config import MapConfig
    from rnafm.synth.features import load_feature_cohort, make_feature_cohort

    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="rnafm_maps_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = work / "cohort"
    if (root / "cohort.json").is_file():
        cohort = load_feature_cohort(root)
    else:
        cohort = make_feature_cohort(root, design="localized", n_slides=args.slides,
                                     n_genes=args.genes, dim=args.dim, seed=args.seed)  # fmt: skip
    train_idx, test_idx = split(cohort, args.test_fraction, args.seed)
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = train_run(cohort, train_idx, work, args.minutes, json.loads(args.train))
    t_train = time.perf_counter() - t0
    predictor = rnafm.load_model(run, device="cpu")
    ridge = tile_ridge(cohort, train_idx, predictor)
    config = MapConfig(**json.loads(args.maps))
    test_ids = [cohort.slide_ids[i] for i in test_idx][: args.max_test_slides]
    programmes = [p for p in PROGRAMMES if p in predictor.tokens.pathway_names]
    result = score_slides(cohort, test_ids, predictor, ridge, config, programmes,
                          local=args.local)  # fmt: skip
    sp = result["spearman"]
    result["beats_baselines"] = {
        p: bool(sp["rnafm"][p] is not None and sp["rnafm"][p] > max(
            v for v in (sp["cluster"][p], sp["tile_ridge"][p], -1.0) if v is not None))
        for p in programmes
    }  # fmt: skip
    result.update(
        benchmark="maps_quality",
        rnafm_version=rnafm.__version__,
        cohort={"slides": len(cohort.slide_ids), "train_slides": len(train_idx),
                "test_slides_mapped": len(test_ids), "genes": args.genes, "dim": args.dim,
                "seed": args.seed},
        map_config=config.model_dump(mode="json"),
        run_model=predictor.config.model.model_dump(mode="json"),
        run_sampler=predictor.config.sampler.model_dump(mode="json"),
        speed=speed(cohort, test_ids, predictor, config, args.speed_tiles, work),
        threads=args.threads,
        seconds={"synth": t_synth, "train": t_train},
        missing_programmes=[p for p in PROGRAMMES if p not in programmes],
    )  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
