"""Quality benchmark: default `rnafm train` + `predict` against ridge on a synthetic cohort.

The cohort comes from :func:`rnafm.synth.features.make_feature_cohort` (``--design``, see
docs/synthetic.md). ``mixture`` (default): tiles from a few latent tissue types with per-slide
proportions, a per-slide stain shift and tile noise; bulk expression is the raw-scale mixture of
tissue-type profiles times gene-set programme activities (nonlinear in the proportions) times
patient noise that no image predicts. ``localized``: tile grids where rare, clustered tiles
(lymphoid aggregates, necrosis) drive programmes around them, adjacent normal tissue outside the
RNA sample and a nonlinear tile encoder. Expression is written raw (counts-like), features in the
TRIDENT layout. Slides are split by patient into train and test; rnafm never sees the test
expression.

Prints one JSON line: mean per-gene PCC over test slides for rnafm, ridge on mean tile features
and ``oracle_ridge_pcc`` (ridge on the true per-slide tile-type shares and programme activities: a
ceiling for models of the image), 90% interval coverage, and wall times; ``oracle_gaussian``
scores that oracle ridge with a cross-fitted per-gene Gaussian (the CRPS a perfect image model
with a per-gene spread would reach). ``"models"`` scores
the ``rnafm cv`` registry baselines ``ridge``, ``attention_mil`` and ``prior_gaussian`` (rnafm
without the flow), fitted on the run's own training and validation patients, next to the rnafm
run on the test slides: per-gene PCC (mean, top-100 ranked by test r and by validation r), CRPS
(closed-form Gaussian; from the draws for rnafm; absolute error for point predictions), pooled
Spearman(std, |error|) next to its per-gene ceiling (``std_abs_error_spearman_gene_ceiling``:
a std per gene equal to that gene's root mean square test error), 90% coverage and wall time.
``--baseline-published`` also trains the published RNA-FM recipe
(``rnafm.training.presets.PRESETS["published"]``) on the same split and reports it under
``"published"``; ``--preset`` applies a preset to the main run instead of the defaults.

    python benchmarks/quality.py --slides 300 --genes 5000 --dim 512 --baseline-published
    python benchmarks/quality.py --design localized --slides 400 --genes 2000 --dim 256
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from rnafm.synth.features import Design


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
    design: str = "mixture",
    **extra,
) -> dict:
    """Write ``root/features/*.h5`` and ``root/reference.csv`` (raw values); return metadata.

    Delegates to :func:`rnafm.synth.features.make_feature_cohort` (``design`` picks the
    :class:`rnafm.synth.features.Design`; ``n_types``, ``tiles`` apply to mixture designs;
    ``extra`` sets any other :class:`rnafm.synth.features.FeatureCohortConfig` field).
    """
    import pandas as pd

    from rnafm.synth.features import make_feature_cohort

    c = make_feature_cohort(
        root, design=design, n_slides=n_slides, n_genes=n_genes, dim=dim, seed=seed,
        n_types=n_types, tiles=tiles, noise=noise, **extra,
    )  # fmt: skip
    ref = pd.read_csv(c.reference, dtype={"wsi_file_name": str, "patient_id": str, "site": str})
    return {
        "slide_ids": c.slide_ids,
        "patients": c.patient_ids,
        "sites": c.sites,
        "genes": c.genes,
        "log2": c.log2.astype(np.float64),
        "tile_means": c.tile_means.astype(np.float64),
        "oracle": c.oracle_features().astype(np.float64),
        "reference": ref,
        "cohort": c,
    }


def split_reference(
    root: Path,
    meta: dict,
    *,
    test_fraction: float = 0.2,
    seed: int = 1,
    test_site: str | None = None,
):
    """Write train.csv / test.csv split by patient; return (train_idx, test_idx).

    With ``test_site`` every slide of that site is a test slide and no other is: training
    never sees the site's stain (a held-out tissue-source site).
    """
    if test_site is not None:
        sites = np.asarray(meta["sites"])
        if test_site not in set(sites.tolist()):
            raise ValueError(
                f"--test-site {test_site!r}: the cohort's sites are {sorted(set(sites))}"
            )
        is_test = sites == test_site
        if is_test.all():
            raise ValueError(f"--test-site {test_site!r} holds every slide; nothing to train on")
    else:
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
    per_slide: bool = False,
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
        root / "features", reference=root / "test.csv", draws=draws, per_slide=per_slide
    )
    t_pred = time.perf_counter() - t2
    truth = meta["log2"][te][:, [meta["genes"].index(g) for g in adata.var_names]]
    order = [meta["slide_ids"].index(s) for s in adata.obs_names]
    assert order == list(te), "prediction order differs from the test reference"
    rows = np.arange(len(te))
    if not per_slide:  # a sample whose slides share one pooled prediction counts once
        from rnafm.predict.pooling import sample_rows

        rows = sample_rows(list(adata.obs["sample"]), np.asarray(adata.X), truth)
    lo, hi, truth = adata.layers["lower"][rows], adata.layers["upper"][rows], truth[rows]
    cover = float(np.mean((truth >= lo) & (truth <= hi)))
    val = json.loads((run / "val_metrics.json").read_text())
    return {
        "pcc": pcc_mean(np.asarray(adata.X)[rows], truth),
        "coverage90": cover,
        "draws": draws,
        "val": val,
        "train_s": round(t_train, 1),
        "predict_s": round(t_pred, 1),
        "overrides": overrides,
        "genes": list(adata.var_names),
    }


BASELINES = ("ridge", "attention_mil", "prior_gaussian")  # registry names (rnafm cv models)


def split_data(root: Path, run: Path, meta: dict, te: np.ndarray, overrides: dict, genes):
    """The cohort as ``CohortData`` (cluster cache of the run), restricted to the run's genes,
    split into the run's training and validation patients (``split.json``) and the test slides.

    Baselines fitted on these see exactly the patients the rnafm run saw.
    """
    from dataclasses import replace

    from rnafm.cohort.dataset import load_cohort_data
    from rnafm.cohort.reference import load_reference
    from rnafm.training.config import TrainConfig, apply_overrides

    cfg = apply_overrides(TrainConfig(), overrides, keep_none=True)
    ref = load_reference(root / "reference.csv", scale=cfg.expression_scale)
    data = load_cohort_data(root / "features", reference=ref, cluster_config=cfg.clusters)
    col = [data.genes.index(g) for g in genes]
    data = replace(data, genes=list(genes), expression=data.expression[:, col])
    split = json.loads((run / "split.json").read_text())
    row = {s: i for i, s in enumerate(data.slide_ids)}
    pids = np.asarray(data.patient_ids)
    train = data.subset(np.flatnonzero(np.isin(pids, split["train_patients"])))
    val = data.subset(np.flatnonzero(np.isin(pids, split["val_patients"])))
    test = data.subset([row[meta["slide_ids"][i]] for i in te])
    return train, (val if len(val.slide_ids) else None), test


def score(truth, mean, *, std=None, lower=None, upper=None, level=None, draws=None, val_r=None):
    """Per-gene PCC (mean, top-100), CRPS, pooled Spearman(std, |error|), 90% coverage.

    Top-100 follows ``rnafm.metrics.top_k_summary``: ranked by test r, and by validation r
    when ``val_r`` is given. CRPS: closed-form Gaussian of the mean and std (with draws, their
    fair CRPS too, as ``crps_draws``); a model without a std is a point mass (CRPS = absolute
    error).
    """
    from rnafm.evaluate.calibration import crps_draws, gaussian_interval, std_error_spearman
    from rnafm.metrics import coverage, crps_gaussian, per_gene_pcc, top_k_summary

    truth = np.asarray(truth, dtype=np.float64)
    r = per_gene_pcc(mean, truth)
    by_val = None if val_r is None else top_k_summary(r, val_r, (100,))["top_100"]
    out = {
        "pcc_mean": float(np.nanmean(r)),
        "pcc_top100_test_ranked": top_k_summary(r, r, (100,))["top_100"],
        "pcc_top100_val_ranked": by_val,
    }
    if std is None:
        out.update(crps=float(np.abs(truth - mean).mean()), crps_source="point")
        out.update(std_abs_error_spearman=None, coverage90=None)
        return out
    # every model's stated mean and std (rnafm's draws are rescaled to them, which makes the
    # fair CRPS of the draws too small: rnafm.evaluate.calibration.crps_draws)
    out.update(crps=float(crps_gaussian(truth, mean, std).mean()), crps_source="gaussian")
    if draws is not None:
        out["crps_draws"] = float(crps_draws(truth, draws, fair=True).mean())
    ranking = std_error_spearman(truth, mean, std)
    out["std_abs_error_spearman"] = ranking["pooled"]
    out["std_abs_error_spearman_gene_ceiling"] = ranking["gene_ceiling"]
    out["std_abs_error_spearman_slides"] = ranking["per_slide"]
    if lower is None or level is None or abs(level - 0.9) > 1e-9:
        lower, upper = gaussian_interval(mean, std, 0.9)
    out["coverage90"] = coverage(truth, lower, upper)
    return out


def oracle_gaussian(x_tr, y_tr, x_te, truth, *, pool: Pool | None = None, folds: int = 5) -> dict:
    """The CRPS reference of a model that knew the image: ridge on the true per-slide shares and
    activities (per-gene alpha) with a per-gene Gaussian whose std is the root mean square of its
    ``folds``-fold cross-fitted training residuals, scored like the Gaussian models.

    Not a strict bound (a std that varies within a gene can beat it), but the CRPS a perfect
    image model with a per-gene spread would reach.
    """
    from sklearn.model_selection import KFold

    from rnafm.evaluate.baselines.base import Predictions

    oof = np.zeros_like(y_tr)
    for a, b in KFold(folds, shuffle=True, random_state=0).split(x_tr):
        oof[b] = ridge_baseline(x_tr[a], y_tr[a], x_tr[b], per_gene=True)
    sd = np.sqrt(np.mean((oof - y_tr) ** 2, axis=0))  # (G,)
    mean = ridge_baseline(x_tr, y_tr, x_te, per_gene=True)  # (n_te, G)
    p = Predictions(mean=mean, std=np.broadcast_to(sd, mean.shape).astype(np.float32))
    return score(truth, p.mean, std=p.std) if pool is None else pool.score(truth, pool(p))


class Pool:
    """Pools test predictions of slides of one sample when the run detected shared sample
    expression (``rnafm.predict.pooling``); a no-op otherwise."""

    def __init__(self, shared, test) -> None:
        from rnafm.cohort.samples import sample_keys_of

        self.shared = shared
        self.keys = sample_keys_of(test)

    def __call__(self, p):
        from rnafm.predict.pooling import pool_predictions

        return p if self.shared is None else pool_predictions(p, self.keys, self.shared)

    def mean(self, mean: np.ndarray) -> np.ndarray:
        from rnafm.evaluate.baselines.base import Predictions

        return self(Predictions(mean=mean)).mean

    def rows(self, mean: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Test rows to score: a sample whose slides share one pooled prediction of one truth
        once (``rnafm.predict.pooling.sample_rows``, as ``rnafm evaluate``), else every slide."""
        from rnafm.predict.pooling import sample_rows

        if self.shared is None:
            return np.arange(len(mean))
        return sample_rows(self.keys, np.asarray(mean), np.asarray(truth))

    def score(self, truth, p, *, draws=None, val_r=None) -> dict:
        """:func:`score` of the pooled predictions ``p`` on :meth:`rows`."""
        rows = self.rows(p.mean, truth)
        sub = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
        return score(np.asarray(truth)[rows], p.mean[rows], std=sub(p.std), lower=sub(p.lower),
                     upper=sub(p.upper), level=getattr(p, "level", None), draws=sub(draws),
                     val_r=val_r)  # fmt: skip

    def pcc(self, mean: np.ndarray, truth: np.ndarray) -> float:
        """:func:`pcc_mean` of the pooled ``mean`` on :meth:`rows`."""
        mean = self.mean(mean)
        rows = self.rows(mean, truth)
        return pcc_mean(mean[rows], np.asarray(truth)[rows])


def run_baseline(name: str, train, val, test, *, seed: int, pool: Pool) -> dict:
    """Fit a ``rnafm cv`` registry model as cv does (``fit(train, val)``) and score it."""
    from rnafm.evaluate.baselines import build_regressor
    from rnafm.metrics import per_gene_pcc

    t0 = time.perf_counter()
    reg = build_regressor(name)
    reg.fit(train, val, seed=seed, out=None)
    p = pool(reg.predict(test))
    wall = time.perf_counter() - t0
    val_r = None
    if val is not None:
        pv = getattr(reg, "val_predictions", None) or reg.predict(val)
        val_r = per_gene_pcc(pv.mean, val.expression)
    res = pool.score(test.expression, p, val_r=val_r)
    return {**res, "wall_s": round(wall, 2)}


def rnafm_scores(
    run: Path, val, test, *, draws: int, seed: int, train_s: float, pool: Pool
) -> dict:
    """Score the trained run on the test slides (CRPS of its mean and std; of its draws too).

    ``pcc_top100_val_ranked`` ranks genes by r on the run's validation slides, which the
    ridge prior was refitted on (a slightly optimistic ranking for rnafm).
    """
    import rnafm
    from rnafm.metrics import per_gene_pcc

    t0 = time.perf_counter()
    model = rnafm.load_model(run)
    p = pool(model.predict_data(test, draws=draws, seed=seed, keep_draws=True))
    wall = time.perf_counter() - t0
    val_r = None
    if val is not None:
        val_r = per_gene_pcc(model.predict_data(val, draws=draws, seed=seed).mean, val.expression)
    res = pool.score(test.expression, p, draws=p.draws, val_r=val_r)
    return {**res, "wall_s": round(train_s + wall, 2), "predict_s": round(wall, 2)}


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
    ap.add_argument(
        "--design",
        default="mixture",
        choices=[d.value for d in Design],
        help="Synthetic cohort design (rnafm.synth.features.Design).",
    )
    ap.add_argument(
        "--cohort-set",
        action="append",
        default=[],
        help="Synthetic cohort setting key=json-value (FeatureCohortConfig field, e.g. "
        "state_noise=0.6 or read_depth=2e5 for error sizes that depend on the slide).",
    )
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the cohort here (reused).")
    ap.add_argument(
        "--test-site",
        default=None,
        help="Test on every slide of this site (e.g. SITE-B) and train on the others: a "
        "held-out tissue-source site (localized design; default: random 20%% of patients).",
    )
    ap.add_argument(
        "--preset",
        default="none",
        help="Training preset of the main rnafm run (rnafm.training.presets; none: defaults).",
    )
    ap.add_argument("--set", action="append", default=[], help="Config override key=json-value.")
    ap.add_argument(
        "--epochs",
        type=int,
        default=40,
        help="Training epochs of every rnafm run (a preset or --set may change them); the default "
        "budget is by epochs, so results do not depend on the machine's load.",
    )
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="Wall-clock budget of every rnafm training instead (optim.max_minutes; default none).",
    )
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
    ap.add_argument(
        "--per-slide",
        action="store_true",
        help="Score every test slide's own prediction, also where the run found that slides of "
        "one sample share expression (default: every model's predictions of a sample's slides "
        "are pooled then, as `rnafm predict` and `rnafm cv` do, and such a sample is scored "
        "once, as `rnafm evaluate` does).",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    import rnafm
    from rnafm.training.presets import preset_overrides

    torch.set_num_threads(args.threads)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="rnafm_quality_"))
    t0 = time.perf_counter()
    meta = make_cohort(
        root,
        n_slides=args.slides,
        n_genes=args.genes,
        dim=args.dim,
        seed=args.seed,
        design=args.design,
        **_parse_sets(args.cohort_set),
    )
    tr, te = split_reference(root, meta, test_site=args.test_site)
    t_data = time.perf_counter() - t0
    budget = {"optim.epochs": args.epochs, "optim.max_minutes": args.max_minutes}
    overrides = {**budget, **preset_overrides(args.preset), **_parse_sets(args.set)}
    train_and_score = functools.partial(
        run_rnafm, root, meta, te, reuse=args.reuse_run, per_slide=args.per_slide
    )
    main_run = train_and_score(overrides, name="run", draws=args.draws)
    genes = main_run.pop("genes")
    gi = [meta["genes"].index(g) for g in genes]
    x, y = meta["tile_means"], meta["log2"][:, gi]
    truth = y[te]
    train, val, test = split_data(root, root / "run", meta, te, overrides, genes)
    shared = None if args.per_slide else rnafm.load_model(root / "run").shared_expression
    pool = Pool(shared, test)
    out = {
        "slides": args.slides,
        "train_slides": len(tr),
        "test_slides": len(te),
        "test_site": args.test_site,
        "genes": len(genes),
        "dim": args.dim,
        "seed": args.seed,
        "design": args.design,
        "cohort_settings": _parse_sets(args.cohort_set),
        "preset": args.preset,
        "rnafm_pcc": main_run["pcc"],
        "pooled_samples": None if shared is None else shared.to_dict(),
        "ridge_pcc": pool.pcc(ridge_baseline(x[tr], y[tr], x[te], per_gene=False), truth),
        "ridge_pergene_pcc": pool.pcc(ridge_baseline(x[tr], y[tr], x[te], per_gene=True), truth),
        "oracle_ridge_pcc": pool.pcc(
            ridge_baseline(meta["oracle"][tr], y[tr], meta["oracle"][te], per_gene=True), truth
        ),
        "coverage90": main_run["coverage90"],
        "val": main_run["val"],
        "data_s": round(t_data, 1),
        "train_s": main_run["train_s"],
        "predict_s": main_run["predict_s"],
        "overrides": overrides,
    }
    out["models"] = {
        name: run_baseline(name, train, val, test, seed=args.seed, pool=pool) for name in BASELINES
    }
    out["oracle_gaussian"] = oracle_gaussian(
        meta["oracle"][tr], y[tr], meta["oracle"][te], truth, pool=pool
    )
    out["models"]["rnafm"] = rnafm_scores(
        root / "run",
        val,
        test,
        draws=args.draws,
        seed=args.seed,
        train_s=main_run["train_s"],
        pool=pool,
    )
    if args.baseline_published:
        print(json.dumps(out), flush=True)  # the main run's line, before the slow baseline
        pub_over = {**budget, **preset_overrides("published"), **_parse_sets(args.published_set)}
        pub = train_and_score(pub_over, name="run_published", draws=args.published_draws)
        pub.pop("genes")
        out["published"] = pub
    print(json.dumps(out))


if __name__ == "__main__":
    main()
