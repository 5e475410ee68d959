"""``rnafm cv``, ``rnafm evaluate`` and ``rnafm report``: thin wrappers over rnafm.evaluate/report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger(__name__)

_MODELS = [  # = ModelName values
    "mean",
    "ridge",
    "he2rna",
    "trnasformer",
    "sequoia",
    "attention_mil",
    "prior_gaussian",
    "rnafm",
]
_SCALES = ["auto", "raw", "log2"]  # = ExpressionScale values


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _parse_options(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``MODEL.KEY=VALUE`` (VALUE as JSON when it parses) -> {model: {key: value}}."""
    from rnafm.errors import InputError

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        model, dot, key = head.partition(".")
        if not sep or not dot or model not in _MODELS:
            raise InputError(
                f"--option {item!r}: expected MODEL.KEY=VALUE with MODEL one of {_MODELS}, "
                'e.g. sequoia.max_epochs=50 or rnafm.train={"optim.epochs": 20}'
            )
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(model, {})[key] = parsed
    return out


def _rnafm_options(
    options: dict[str, dict[str, Any]], clusters: Any, gene_sets: str
) -> dict[str, dict[str, Any]]:
    """Give the rnafm model's training config the clusters and gene sets of this run (unless
    ``--option rnafm.train=...`` names them), so its run directory records what was used."""
    train = options.setdefault("rnafm", {}).get("train") or {}
    if not isinstance(train, dict):
        return options
    train = dict(train)
    train.setdefault("clusters", clusters.model_dump(mode="json"))
    if gene_sets != "none":
        train.setdefault("gene_sets", gene_sets)
    options["rnafm"]["train"] = train
    return options


def _load_reference(path: Path, scale: str):
    from rnafm.cohort.reference import ExpressionScale, load_reference

    return load_reference(path, scale=ExpressionScale(scale))


@click.command("cv")
@click.option(
    "--reference",
    "-r",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Reference CSV (wsi_file_name, patient_id, [project], rna_<GENE>...).",
)
@click.option(
    "--features",
    "-f",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Folder of per-slide feature files.",
)
@click.option(
    "--model",
    "-m",
    "models",
    type=click.Choice(_MODELS),
    multiple=True,
    default=("ridge",),
    show_default=True,
    help="Model(s) to cross-validate (repeatable).",
)
@click.option(
    "--folds",
    "n_folds",
    type=click.IntRange(2),
    default=5,
    show_default=True,
    help="Number of patient-level folds.",
)
@click.option(
    "--folds-file",
    type=click.Path(exists=True, path_type=Path),
    help="Reuse folds: an rnafm folds.json or a published TCGA splits .npy.",
)
@click.option(
    "--repair-folds",
    is_flag=True,
    help="Drop test patients from their own fold's train/val splits instead of refusing.",
)
@click.option(
    "--stratify",
    type=click.Choice(["none", "project"]),
    default="none",
    show_default=True,
    help="Stratify the folds by this reference column.",
)
@click.option(
    "--hold-out",
    "hold_out",
    type=click.Choice(["patient", "site"]),
    default="patient",
    show_default=True,
    help="What each test fold holds out whole: patients, or tissue source sites (the "
    "reference's 'site' column, else TCGA-<site>-... barcodes) so that no model is tested on "
    "a site it was trained on.",
)
@click.option(
    "--val-hold-out",
    "val_hold_out",
    type=click.Choice(["auto", "patient", "site"]),
    default="auto",
    show_default=True,
    help="What each training fold's validation split holds out whole: auto mirrors the test "
    "folds (with --hold-out site, whole sites where the training fold spans three sites or "
    "more; else patients).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.15,
    show_default=True,
    help="Share of each training fold's patients used for validation.",
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--clusters",
    "k",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="K-means clusters per slide (K).",
)
@click.option(
    "--gene-sets",
    default="hallmark",
    show_default=True,
    help="Gene sets for pathway-level metrics and the rnafm model's tokens (collection name or "
    ".gmt; 'none' to skip the metrics).",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="MODEL.KEY=VALUE",
    help="Model option, e.g. sequoia.max_epochs=50 (repeatable).",
)
@click.option(
    "--random-baseline/--no-random-baseline",
    default=True,
    show_default=True,
    help="Predict with a random-init twin of neural models (SEQUOIA's test).",
)
@click.option(
    "--per-slide",
    is_flag=True,
    help="Score every slide's own prediction, also where a training fold's slides of one "
    "sample share one expression profile (by default a test sample's slides then get the mean "
    "of their predictions, for every model).",
)
@click.option("--expression-scale", type=click.Choice(_SCALES), default="auto", show_default=True)
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="Output folder.")
def cv_cmd(
    reference,
    features,
    models,
    n_folds,
    folds_file,
    repair_folds,
    stratify,
    hold_out,
    val_hold_out,
    val_fraction,
    seed,
    k,
    gene_sets,
    options,
    random_baseline,
    per_slide,
    expression_scale,
    out,
) -> None:
    """Patient-level cross-validation of one or more models on the same folds."""
    import os

    from rnafm.errors import InputError

    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise InputError(
            "rnafm cv does not run under torchrun (WORLD_SIZE > 1): every process would run "
            "all folds and write the same report. Run `rnafm cv` as one process, or train "
            "each fold's model with `torchrun ... -m rnafm train`."
        )
    from rnafm.cohort.dataset import load_cohort_data
    from rnafm.cohort.splits import HoldOut, Stratify, ValidationHoldOut, load_folds
    from rnafm.evaluate.cv import CVConfig, cross_validate
    from rnafm.features.clusters import ClusterConfig

    ref = _load_reference(reference, expression_scale)
    clusters = ClusterConfig(k=k, seed=seed)
    data = load_cohort_data(features, reference=ref, cluster_config=clusters)
    folds = None
    if folds_file is not None:
        folds = load_folds(folds_file, patient_ids=data.patient_ids, repair=repair_folds)
    config = CVConfig(
        n_folds=n_folds,
        val_fraction=val_fraction,
        stratify=Stratify(stratify),
        hold_out=HoldOut(hold_out),
        val_hold_out=ValidationHoldOut(val_hold_out),
        seed=seed,
        random_baseline=random_baseline,
        per_slide=per_slide,
    )
    result = cross_validate(
        data,
        out=out,
        models=list(dict.fromkeys(models)),
        config=config,
        folds=folds,
        model_options=_rnafm_options(_parse_options(options), clusters, gene_sets),
        gene_sets=None if gene_sets == "none" else gene_sets,
        reference_path=reference,
    )
    for name, m in result.metrics.items():
        g = m["genes"]
        pf = m.get("per_fold") or {}
        per_fold = ""
        if pf.get("mean_pearson_r_sd") is not None:
            per_fold = (
                f" (per fold {_num(pf['mean_pearson_r_mean'])} +- {_num(pf['mean_pearson_r_sd'])})"
            )
        click.echo(
            f"{name:12s} mean r {_num(g['mean_pearson_r'])}{per_fold}  genes r>0.4 "
            f"{g['n_r_above_0.4']}  -> {result.predictions[name]}"
        )
    click.echo(f"summary: {out / 'summary.csv'}")


@click.command("evaluate")
@click.option(
    "--predictions",
    "-p",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Predictions .h5ad (rnafm predict or rnafm cv).",
)
@click.option(
    "--reference",
    "-r",
    type=click.Path(exists=True, path_type=Path),
    help="Reference CSV with the true expression (optional for rnafm cv files, which carry it).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    help="Output folder [default: <predictions stem>_evaluation beside the file].",
)
@click.option(
    "--val-predictions",
    type=click.Path(exists=True, path_type=Path),
    help="Predictions on a validation split: honest gene ranking and conformal intervals.",
)
@click.option(
    "--random-predictions",
    type=click.Path(exists=True, path_type=Path),
    help="Predictions of a random-init model of the same architecture (SEQUOIA's test).",
)
@click.option(
    "--draws",
    type=click.Path(exists=True, path_type=Path),
    help="Draws h5 file (CRPS and intervals from draws).",
)
@click.option(
    "--gene-sets",
    default=None,
    help="Gene sets for pathway-level metrics (collection name or .gmt).",
)
@click.option("--expression-scale", type=click.Choice(_SCALES), default="auto", show_default=True)
@click.option(
    "--per-slide",
    is_flag=True,
    help="Count every slide (by default a sample whose slides share one pooled prediction of "
    "one RNA profile counts once).",
)
def evaluate_cmd(
    predictions,
    reference,
    out,
    val_predictions,
    random_predictions,
    draws,
    gene_sets,
    expression_scale,
    per_slide,
) -> None:
    """Per-gene metrics, significance, top-k, calibration and pathway-level metrics."""
    from rnafm.evaluate.evaluation import evaluate_predictions

    out = out or predictions.with_name(f"{predictions.stem}_evaluation")
    ev = evaluate_predictions(
        predictions,
        _load_reference(reference, expression_scale) if reference else None,
        out=out,
        val_predictions=val_predictions,
        random_predictions=random_predictions,
        draws=draws,
        gene_sets=gene_sets,
        per_slide=per_slide,
    )
    g, s = ev.summary["genes"], ev.summary
    once = (
        f" ({s['n_evaluated']} rows: {s['samples_counted_once']} pooled sample(s) counted once)"
        if s["samples_counted_once"]
        else ""
    )
    click.echo(
        f"{g['n_genes']} genes, {s['n_slides']} slides{once}: mean r "
        f"{_num(g['mean_pearson_r'])}, {g['n_r_above_0.4']} genes with r > 0.4"
    )
    u = ev.summary.get("uncertainty")
    if u:
        stored = u.get("stored_interval") or {}
        if stored.get("coverage") is not None:
            click.echo(
                f"the model's {float(stored['level']):.0%} intervals cover {stored['coverage']:.3f}"
            )
        click.echo(
            f"uncalibrated {u['interval_source']} intervals: coverage "
            + ", ".join(f"{k}: {v:.3f}" for k, v in u["coverage"].items())
            + f"; CRPS {u['crps']:.4f}"
        )
        by_slide = (u.get("std_abs_error_spearman") or {}).get("per_slide")
        if by_slide is not None:
            click.echo(f"the spread ranks the slides' error sizes at Spearman {by_slide:.3f}")
    click.echo(f"wrote {out / 'metrics.json'} and {out / 'per_gene.csv'}")


@click.command("report")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file (PNG figures are written beside it).",
)
@click.option(
    "--reference",
    "-r",
    type=click.Path(exists=True, path_type=Path),
    help="Reference CSV (default: the truth stored in rnafm cv files).",
)
@click.option("--genes", help="Comma-separated genes for the scatter plots (default: best 6).")
@click.option("--gene-sets", default=None, help="Gene sets for the pathway heatmap.")
@click.option("--title", default="rnafm report", show_default=True)
@click.option("--expression-scale", type=click.Choice(_SCALES), default="auto", show_default=True)
def report_cmd(inputs, out, reference, genes, gene_sets, title, expression_scale) -> None:
    """One self-contained HTML report of run directories, CV folders or prediction files."""
    from rnafm.report import make_report

    path = make_report(
        list(inputs),
        out=out,
        reference=_load_reference(reference, expression_scale) if reference else None,
        genes=[g for g in genes.split(",") if g] if genes else None,
        gene_sets=gene_sets,
        title=title,
    )
    click.echo(f"wrote {path}")
