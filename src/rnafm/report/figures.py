"""Matplotlib figures of the report; each function returns a Figure (the caller saves it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rnafm.evaluate.evaluation import Evaluation

__all__ = [
    "correlation_distribution",
    "top_genes_bar",
    "scatter_genes",
    "reliability_diagram",
    "pathway_heatmap",
    "training_curves",
]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _figure(w: float, h: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def correlation_distribution(evals: Mapping[str, Evaluation]) -> Figure:
    """Distribution of per-gene Pearson r (histogram per model, sorted-r curve beside it)."""
    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    allr = np.concatenate([e.genes["pearson_r"].dropna().to_numpy() for e in evals.values()])
    lo = min(-0.2, float(allr.min())) if allr.size else -1.0
    bins = np.linspace(lo, 1.0, 41)
    for i, (name, ev) in enumerate(evals.items()):
        r = ev.genes["pearson_r"].dropna().to_numpy()
        c = _COLORS[i % len(_COLORS)]
        ax1.hist(
            r,
            bins=bins,
            histtype="step",
            lw=2,
            color=c,
            label=f"{name} (mean {r.mean():.3f})" if r.size else name,
        )
        ax2.plot(np.arange(1, r.size + 1), np.sort(r)[::-1], color=c, lw=2, label=name)
    for ax in (ax1, ax2):
        ax.axvline(0.4, color="grey", ls=":", lw=1) if ax is ax1 else ax.axhline(
            0.4, color="grey", ls=":", lw=1
        )
    ax1.set(
        xlabel="Pearson r per gene (test, over slides)",
        ylabel="genes",
        title="Per-gene correlation",
    )
    ax2.set(
        xlabel="gene rank (by test r)",
        ylabel="Pearson r",
        xscale="log",
        title="Genes sorted by test correlation",
    )
    ax1.legend(fontsize=8)
    return fig


def top_genes_bar(ev: Evaluation, *, n: int = 20, by: str = "pearson_r", label: str = "") -> Figure:
    """Horizontal bars of the ``n`` best genes of one model (ranked by the column ``by``)."""
    t = ev.genes.dropna(subset=[by]).sort_values(by, ascending=False).head(n)
    fig = _figure(6, 0.25 * len(t) + 1.2)
    ax = fig.subplots()
    ax.barh(np.arange(len(t))[::-1], t["pearson_r"], color=_COLORS[0])
    ax.set_yticks(np.arange(len(t))[::-1], [str(g) for g in t.index], fontsize=8)
    ax.set(xlabel="test Pearson r", title=f"Top {len(t)} genes {label}".strip())
    return fig


def scatter_genes(ev: Evaluation, genes: Sequence[str], *, model: str = "") -> Figure:
    """Predicted vs true expression for chosen genes (error bars: predicted std)."""
    genes = [g for g in genes if g in ev.genes.index][:9]
    cols = min(3, max(len(genes), 1))
    rows = int(np.ceil(len(genes) / cols)) or 1
    fig = _figure(3.3 * cols, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    index = {g: j for j, g in enumerate(ev.pred.genes)}
    for ax, g in zip(axes, genes, strict=False):
        j = index[g]
        y, m = ev.y[:, j], ev.pred.mean[:, j]
        if ev.pred.std is not None:
            ax.errorbar(
                y,
                m,
                yerr=ev.pred.std[:, j],
                fmt="o",
                ms=3,
                alpha=0.6,
                lw=0.8,
                color=_COLORS[0],
                ecolor="#9ecae1",
            )
        else:
            ax.plot(y, m, "o", ms=3, alpha=0.6, color=_COLORS[0])
        lim = [min(y.min(), m.min()), max(y.max(), m.max())]
        ax.plot(lim, lim, color="grey", lw=1, ls="--")
        ax.set_title(f"{g}  r={ev.genes.loc[g, 'pearson_r']:.2f}", fontsize=10)
        ax.set_xlabel("true log2(x+1)", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
    for ax in axes[len(genes) :]:
        ax.set_visible(False)
    if model:
        fig.suptitle(f"Predicted vs true ({model})", fontsize=11)
    return fig


def reliability_diagram(evals: Mapping[str, Evaluation]) -> Figure:
    """Observed vs nominal coverage of central intervals for models with uncertainty."""
    fig = _figure(5.2, 4.6)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    for i, (name, ev) in enumerate(evals.items()):
        u = ev.summary.get("uncertainty")
        if not u:
            continue
        c = _COLORS[i % len(_COLORS)]
        rel = u["reliability"]
        ax.plot(
            rel["nominal"],
            rel["observed"],
            "o-",
            color=c,
            ms=3,
            label=f"{name} ({u.get('interval_source', '')})",
        )
        cal = u.get("model_calibrated")
        if cal:
            rel = cal["reliability"]
            ax.plot(
                rel["nominal"],
                rel["observed"],
                "^--",
                color=c,
                ms=3,
                lw=1,
                label=f"{name} (model's calibrated intervals)",
            )
        if "coverage_conformal" in u:
            lv = [float(k) for k in u["coverage_conformal"]]
            ax.plot(
                lv,
                list(u["coverage_conformal"].values()),
                "s",
                color=c,
                mfc="white",
                label=f"{name} (conformal)",
            )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="nominal interval level",
        ylabel="observed coverage",
        title="Reliability of central intervals",
    )
    ax.legend(fontsize=8, loc="upper left")
    return fig


def pathway_heatmap(evals: Mapping[str, Evaluation], *, n: int = 30) -> Figure | None:
    """Pearson r of pathway scores: best ``n`` pathways (by mean r over models) x models."""
    import pandas as pd

    tables = {k: e.pathways["pearson_r"] for k, e in evals.items() if e.pathways is not None}
    if not tables:
        return None
    df = pd.DataFrame(tables)
    df = df.loc[df.mean(1).sort_values(ascending=False).index[:n]]
    fig = _figure(2.2 + 1.1 * df.shape[1], 0.28 * len(df) + 1.6)
    ax = fig.subplots()
    im = ax.imshow(df.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(df.shape[1]), df.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(df)), [str(s)[:45] for s in df.index], fontsize=7)
    for (i, j), v in np.ndenumerate(df.to_numpy()):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if abs(v) > 0.6 else "black",
            )
    fig.colorbar(im, ax=ax, label="Pearson r of pathway score", shrink=0.6)
    ax.set_title("Pathway-level accuracy")
    return fig


def training_curves(histories: Mapping[str, Sequence[dict]]) -> Figure | None:
    """Loss curves (left) and other validation metrics (right) per run / fold."""
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return None
    fig = _figure(10, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    skip = {"epoch", "step", "lr", "time_s"}
    other = False
    groups: dict[str, int] = {}  # "model/fold_0" and "model/fold_1" share a colour and a label
    labelled: set[tuple[str, str]] = set()
    for name, hist in histories.items():
        group = name.split("/")[0]
        c = _COLORS[groups.setdefault(group, len(groups)) % len(_COLORS)]
        keys = sorted(
            {k for r in hist for k, v in r.items() if k not in skip and isinstance(v, int | float)}
        )
        for ki, k in enumerate(keys):
            pts = [(r.get("epoch", j + 1), r[k]) for j, r in enumerate(hist) if k in r]
            x, y = zip(*pts, strict=True)
            ax = ax1 if "loss" in k else ax2
            other |= ax is ax2
            label = None if (group, k) in labelled else f"{group}: {k}"
            labelled.add((group, k))
            ax.plot(
                x,
                y,
                color=c,
                lw=1.2,
                alpha=0.8,
                ls="--" if k.startswith("val") else "-",
                marker="os^vDx+*"[ki % 8],
                ms=3,
                label=label,
            )
    ax1.set(xlabel="epoch", ylabel="loss", title="Training curves")
    ax1.legend(fontsize=7)
    if other:
        ax2.set(xlabel="epoch", title="Validation metrics")
        ax2.legend(fontsize=7)
    else:
        ax2.set_visible(False)
    return fig
