"""``rnafm synth`` and ``rnafm demo``: the built-in synthetic cohort and the end-to-end demo."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["synth_cmd", "demo_cmd"]


def _slide_size(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    if value is None:
        return None
    from rnafm.synth.config import parse_slide_size

    try:
        return parse_slide_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


@click.command("synth")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (slides/, reference.csv, latent.npz, ...).",
)
@click.option(
    "--patients", type=click.IntRange(2), default=60, show_default=True, help="Number of patients."
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed.")
@click.option(
    "--slide-size",
    callback=_slide_size,
    default=None,
    help="Level-0 slide size WIDTHxHEIGHT in pixels [default: 4000x3000].",
)
@click.option(
    "--mpp",
    type=click.FloatRange(0.05, 10.0),
    default=0.5,
    show_default=True,
    help="Microns per level-0 pixel (0.5 is 20x).",
)
@click.option(
    "--genes",
    "n_genes",
    type=click.IntRange(20),
    default=None,
    help="Number of genes (a seeded subset of the gene sets) [default: all].",
)
@click.option(
    "--gene-sets",
    default="hallmark",
    show_default=True,
    help="Collection the genes come from: a bundled name or a .gmt path.",
)
@click.option("--gdc", is_flag=True, help="Also write GDC STAR-counts TSVs and a GDC sample sheet.")
def synth_cmd(out: Path, patients: int, seed: int, slide_size: tuple[int, int] | None, mpp: float,
              n_genes: int | None, gene_sets: str, gdc: bool) -> None:  # fmt: skip
    """Generate a synthetic cohort: pyramidal TIFF slides, expression and the hidden truth."""
    from rich.console import Console

    from rnafm.synth import make_cohort

    extra = (
        {} if slide_size is None else {"slide_width": slide_size[0], "slide_height": slide_size[1]}
    )
    cohort = make_cohort(out, n_patients=patients, seed=seed, mpp=mpp, n_genes=n_genes,
                         gene_sets=gene_sets, gdc=gdc, **extra)  # fmt: skip
    console = Console()
    console.print(
        f"[bold]{len(cohort.patient_ids)}[/] patients, [bold]{len(cohort.slides)}[/] slides, "
        f"[bold]{len(cohort.genes)}[/] genes in {cohort.root}"
    )
    console.print(f"reference: {cohort.reference}")
    if cohort.gdc_dir is not None:
        console.print(f"GDC files: {cohort.gdc_dir} (sample sheet {cohort.sample_sheet})")


def _fmt(v: object) -> str:
    return "-" if v is None else f"{float(v):.3f}"


@click.command("demo")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--slides",
    "n_slides",
    type=click.IntRange(12),
    default=None,
    help="About this many slides [default: 140, --quick 70].",
)
@click.option("--quick", is_flag=True, help="The small size the test suite runs (about 2 minutes).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed.")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Wall-clock budget of each RNA-FM training [default: none, a fixed number of epochs, "
    "so results do not depend on the machine's load].",
)
def demo_cmd(
    out: Path, n_slides: int | None, quick: bool, seed: int, max_minutes: float | None
) -> None:
    """Run everything on a built-in synthetic cohort: synth, preprocess, cohort, cross-validate
    RNA-FM and baselines, predict with uncertainty, evaluate, report."""
    from rich.console import Console
    from rich.table import Table

    from rnafm.demo import run_demo

    result = run_demo(out, n_slides=n_slides, quick=quick, seed=seed, max_minutes=max_minutes)
    table = Table(title="rnafm demo: patient-level cross-validation, out-of-fold")
    for col in ("model", "mean per-gene PCC", "top-100 PCC", "RMSE", "90% interval coverage"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, row in result.summary.items():
        table.add_row(name, _fmt(row["mean_pearson"]), _fmt(row["top100_pearson"]), _fmt(row["rmse"]),
                      _fmt(row["coverage_90"]))  # fmt: skip
    console = Console()
    console.print(table)
    ranks = sorted({str(r["top_rank"]) for r in result.summary.values() if r["top_rank"]})
    rows = sorted({r["n_evaluated"] for r in result.summary.values() if r["n_evaluated"]})
    n = len(result.cohort.slides)
    scored = f" scored as {rows[0]} samples" if rows and rows != [n] else ""
    console.print(f"top-100 genes ranked by {' / '.join(ranks) or '-'} correlation; "
                  f"{n} slides{scored}, {result.seconds['total']:.0f} s")  # fmt: skip
    if result.report is not None:
        console.print(f"report: [bold]{result.report}[/]")
    else:
        console.print(f"metrics: {result.cv_dir / 'summary.csv'}")
