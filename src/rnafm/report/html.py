"""``rnafm report``: one self-contained HTML page (figures inlined as base64 PNG).

Inputs can be prediction files (.h5ad), ``rnafm cv`` folders (one model per sub-folder) and
training run directories (config, history, validation metrics). PNG copies of the figures are
written to ``<report stem>_figures/`` beside the HTML file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnafm import __version__
from rnafm._io import atomic_path
from rnafm.errors import InputError
from rnafm.report.maps_section import find_maps_folders, is_maps_folder, maps_section

__all__ = ["make_report"]

logger = logging.getLogger(__name__)


@dataclass
class _Inputs:
    predictions: dict[str, Path] = field(default_factory=dict)  # model label -> .h5ad
    histories: dict[str, list[dict]] = field(default_factory=dict)  # "model/fold_i" -> records
    configs: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # folds, val metrics, summaries


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line
    return out


def _read_run(run: Path, label: str, found: _Inputs) -> None:
    if (run / "history.jsonl").is_file():
        found.histories[label] = _read_jsonl(run / "history.jsonl")
    if (run / "config.json").is_file() and label.split("/")[0] not in found.configs:
        found.configs[label.split("/")[0]] = json.loads((run / "config.json").read_text())
    if (run / "val_metrics.json").is_file():
        found.notes[f"{label} validation metrics"] = json.loads(
            (run / "val_metrics.json").read_text()
        )


def _pooled_folds(cv_dir: Path) -> list[bool] | str:
    """Per fold, whether the test slides of one sample got their pooled prediction (the
    ``pooled_samples`` record of an out-of-fold file); "n/a" for files without it."""
    import h5py

    for oof in sorted(cv_dir.glob("*/oof_predictions.h5ad")):
        try:
            with h5py.File(oof, "r") as f:
                raw = f["uns/rnafm/pooled_samples"][()]
        except (OSError, KeyError):
            continue
        return [s is not None for s in json.loads(raw.decode() if isinstance(raw, bytes) else raw)]
    return "n/a"


def _collect(inputs: Sequence[str | os.PathLike[str]]) -> _Inputs:
    found = _Inputs()
    for item in map(Path, inputs):
        if item.is_file() and item.suffix == ".h5ad":
            found.predictions[item.stem if item.stem != "oof_predictions" else item.parent.name] = (
                item
            )
        elif item.is_dir() and (item / "folds.json").is_file():  # a cv folder
            for oof in sorted(item.glob("*/oof_predictions.h5ad")):
                model = oof.parent.name
                if model in found.predictions:  # the same model from two cv folders
                    model = f"{item.name}/{model}"
                found.predictions[model] = oof
                for fold in sorted(oof.parent.glob("fold_*")):
                    _read_run(fold, f"{model}/{fold.name}", found)
            folds = json.loads((item / "folds.json").read_text())
            found.notes["folds"] = {k: v for k, v in folds.items() if k != "folds"} | {
                "patients per test fold": [len(f["test"]) for f in folds["folds"]],
                "patients per validation split": [len(f["val"]) for f in folds["folds"]],
                "validation holds out": [f.get("val_hold_out", "patient") for f in folds["folds"]],
                "slides of one sample pooled": _pooled_folds(item),
            }
        elif is_maps_folder(item):
            continue  # rnafm maps output: shown in the spatial-maps section
        elif item.is_dir() and (
            (item / "config.json").is_file() or (item / "history.jsonl").is_file()
        ):
            _read_run(item, item.name, found)
            found.predictions.update({p.stem: p for p in sorted(item.glob("*.h5ad"))})
        else:
            raise InputError(
                f"{item}: not a predictions .h5ad, an rnafm cv folder (with folds.json), a run "
                "directory (with config.json) or an rnafm maps folder (with maps.json); pass one "
                "of those"
            )
    return found


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.3f}" if abs(v) < 1000 else f"{v:.3g}"
    return html.escape(str(v))


def _table(rows: Sequence[Mapping[str, Any]], *, cls: str = "") -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary_rows(evals: Mapping[str, Any]) -> list[dict[str, Any]]:
    from rnafm.evaluate.baselines.base import model_label

    rows = []
    for name, ev in evals.items():
        g, u = ev.summary["genes"], ev.summary.get("uncertainty")
        tk = g["top_k_pearson_r"]
        row = {
            "model": model_label(name),  # prior_gaussian is the rnafm_no_flow ablation
            "slides": ev.summary["n_slides"],
            # a pooled sample's slides are scored once (rnafm.evaluate.evaluate_predictions)
            "rows scored": ev.summary.get("n_evaluated", ev.summary["n_slides"]),
            "genes": g["n_genes"],
            "mean r": g["mean_pearson_r"],
            "median r": g["median_pearson_r"],
            "genes r>0.4": g["n_r_above_0.4"],
            "well predicted": g.get("n_well_predicted"),
            "mean RMSE": g["mean_rmse"],
        }
        pf = ev.summary.get("per_fold") or {}
        if pf.get("mean_pearson_r_sd") is not None:
            row["mean r per fold (sd)"] = (
                f"{pf['mean_pearson_r_mean']:.3f} ({pf['mean_pearson_r_sd']:.3f})"
            )
        done = [k for k, v in tk["ranked_by_test"].items() if v is not None]
        key = "top_100" if "top_100" in done else (done[-1] if done else "top_100")
        label = key.replace("_", "-")
        if pf.get("top_k_pearson_r_ranked_by_validation"):
            row[f"{label} r (val-ranked, per fold)"] = pf[
                "top_k_pearson_r_ranked_by_validation"
            ].get(key)
        elif "ranked_by_validation" in tk:
            row[f"{label} r (val-ranked)"] = tk["ranked_by_validation"].get(key)
        row[f"{label} r (test-ranked)"] = tk["ranked_by_test"].get(key)
        row["coverage 90%"] = u["coverage"].get("0.9") if u else None
        cal = (u or {}).get("model_calibrated") or {}
        row["coverage 90% (model intervals)"] = cal.get("coverage", {}).get("0.9")
        row["coverage 90% (conformal)"] = (
            (u.get("coverage_conformal") or {}).get("0.9") if u else None
        )
        row["CRPS"] = u["crps"] if u else None
        rows.append(row)
    return rows


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{border-bottom:2px solid #1f77b4}h2{margin-top:1.6em;color:#1f4e79}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#eef3f8}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.3em 0}pre{background:#f6f8fa;padding:.8em;
font-size:12px;overflow:auto;max-height:24em}.note{color:#555;font-size:13px}
"""


def make_report(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] = "report.html",
    reference: Any = None,
    genes: Sequence[str] | None = None,
    gene_sets: str | Mapping[str, Sequence[str]] | None = None,
    title: str = "rnafm report",
) -> Path:
    """Write one self-contained HTML report of predictions, CV folders and run directories.

    Parameters
    ----------
    inputs
        Prediction files (.h5ad), ``rnafm cv`` output folders, training run directories or
        ``rnafm maps`` folders (one path or several). The maps of a few slides are shown when a
        maps folder is given or sits beside an input as ``maps/``.
    out
        The HTML file; PNG figures go to ``<stem>_figures/`` beside it.
    reference
        Reference CSV / ``Reference`` / ``CohortData`` with the true expression (default: the
        ``observed`` layer ``rnafm cv`` stores in its prediction files).
    genes
        Genes for the predicted-vs-true scatter plots (default: the six best of the best model,
        ranked on validation data when available).
    gene_sets
        Gene sets for the pathway heatmap (default: those recorded in the predictions).

    Returns
    -------
    Path
        The HTML file.
    """
    from rnafm.evaluate.evaluation import evaluate_predictions
    from rnafm.report import figures

    out = Path(out)
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    found = _collect(inputs)
    evals = {}
    for name, path in found.predictions.items():
        from rnafm.evaluate.predictions_io import read_predictions

        pf = read_predictions(path)
        if reference is None and pf.observed is None:
            logger.warning("%s: no true expression in the file; pass --reference", path)
            continue
        evals[name] = evaluate_predictions(pf, reference, gene_sets=gene_sets)
    fig_dir = out.with_name(f"{out.stem}_figures")
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []

    def add_figure(fig, name: str, caption: str) -> None:
        if fig is None:
            return
        data = _png(fig)
        with atomic_path(fig_dir / f"{name}.png") as tmp:
            tmp.write_bytes(data)
            tmp.chmod(0o644)  # a report is for sharing (temporary files are created 0600)
        b64 = base64.b64encode(data).decode()
        sections.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
            f'{b64}"><figcaption class="note">{html.escape(caption)}</figcaption></figure>'
        )

    if evals:
        sections.append("<h2>Summary</h2>" + _table(_summary_rows(evals)))
        sections.append(
            '<p class="note">Per-gene Pearson r over slides of the test (out-of-fold) predictions. '
            "<b>Test-ranked</b> top-k picks the genes on the test data themselves (as most papers "
            "report; optimistic). <b>Validation-ranked</b> picks them on each fold's validation "
            "split (honest). Coverage: share of true values inside the central interval.</p>"
        )
        sections.append("<h2>Per-gene correlation</h2>")
        add_figure(
            figures.correlation_distribution(evals),
            "correlation_distribution",
            "Distribution of per-gene test correlations, per model.",
        )
        best = max(evals, key=lambda k: evals[k].summary["genes"]["mean_pearson_r"] or -np.inf)
        ev = evals[best]
        by = "val_pearson_r" if "val_pearson_r" in ev.genes else "pearson_r"
        ranking = "validation r" if by == "val_pearson_r" else "test r"
        sections.append(f"<h2>Top genes ({html.escape(best)}, ranked by {ranking})</h2>")
        add_figure(
            figures.top_genes_bar(ev, by=by, label=f"of {best} by {ranking}"),
            "top_genes",
            f"Test correlation of the best genes of {best}, ranked by {ranking}.",
        )
        chosen = (
            list(genes)
            if genes
            else list(ev.genes.dropna(subset=[by]).sort_values(by, ascending=False).index[:6])
        )
        sections.append("<h2>Predicted vs true</h2>")
        add_figure(
            figures.scatter_genes(ev, chosen, model=best),
            "scatter",
            "Each point is a slide; bars show the predicted std when the model has one.",
        )
        if any(e.summary.get("uncertainty") for e in evals.values()):
            sections.append("<h2>Uncertainty calibration</h2>")
            add_figure(
                figures.reliability_diagram(evals),
                "reliability",
                "Observed coverage of central intervals against their nominal level.",
            )
            sections.append(
                _table(
                    [
                        {
                            "model": k,
                            **{
                                f"coverage {lv}": v
                                for lv, v in e.summary["uncertainty"]["coverage"].items()
                            },
                            "CRPS": e.summary["uncertainty"]["crps"],
                            "Spearman(std, |error|)": e.summary["uncertainty"][
                                "std_abs_error_spearman"
                            ]["pooled"],
                            "its per-gene ceiling": e.summary["uncertainty"][
                                "std_abs_error_spearman"
                            ].get("gene_ceiling"),
                            "Spearman over slides": e.summary["uncertainty"][
                                "std_abs_error_spearman"
                            ].get("per_slide"),
                        }
                        for k, e in evals.items()
                        if e.summary.get("uncertainty")
                    ]
                )
            )
        fig = figures.pathway_heatmap(evals)
        if fig is not None:
            sections.append("<h2>Pathway level</h2>")
            add_figure(fig, "pathways", "Pearson r of pathway scores (mean of member genes).")
    sections.append(maps_section(find_maps_folders([Path(i) for i in inputs])))
    if found.histories:
        sections.append("<h2>Training curves</h2>")
        add_figure(
            figures.training_curves(found.histories),
            "training_curves",
            "Per epoch; dashed lines are validation values.",
        )
    data_rows = [
        {
            "model": k,
            "slides": e.summary["n_slides"],
            "patients": e.summary["n_patients"],
            "genes": e.summary["genes"]["n_genes"],
            "pathways": (e.summary.get("pathways") or {}).get("n_pathways"),
            "predictions": str(found.predictions[k]),
        }
        for k, e in evals.items()
    ]
    sections.append("<h2>Data and configuration</h2>" + _table(data_rows))
    for key, value in {
        **found.notes,
        **{f"config: {k}": v for k, v in found.configs.items()},
    }.items():
        sections.append(
            f"<h3>{html.escape(key)}</h3><pre>"
            f"{html.escape(json.dumps(value, indent=2, default=str))}</pre>"
        )
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f'</title><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="note">rnafm {__version__}. Inputs: '
        f"{html.escape(', '.join(str(i) for i in inputs))}</p>{''.join(sections)}</body></html>"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)
    logger.info("wrote %s and %s", out, fig_dir)
    return out
