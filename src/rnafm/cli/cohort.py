"""`rnafm cohort` (GDC/TCGA expression -> reference CSV) and `rnafm genesets list|show`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from rnafm.cohort.gdc import GdcValue
from rnafm.cohort.reference import ExpressionScale

logger = logging.getLogger(__name__)


def _csv_list(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> list[str] | None:
    items = [x.strip() for v in value for x in v.split(",") if x.strip()]
    return items or None


@click.command("cohort")
@click.option(
    "--expression",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of GDC 'STAR - Counts' TSVs, one such TSV, a samples x genes CSV/TSV, or an .h5ad.",
)
@click.option(
    "--slides",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of slides (or feature .h5 files), or a text/CSV list of slide names.",
)
@click.option(
    "--sample-sheet",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GDC sample sheet of the expression files (maps file names to TCGA samples).",
)
@click.option(
    "--value",
    type=click.Choice([v.value for v in GdcValue]),
    default=GdcValue.TPM.value,
    show_default=True,
    help="Value column of the GDC files.",
)
@click.option(
    "--sample-type",
    "sample_types",
    multiple=True,
    callback=_csv_list,
    help="TCGA sample type(s) kept, e.g. 01 (default) or 01,11; repeatable.",
)
@click.option(
    "--min-mean",
    type=float,
    default=1.0,
    show_default=True,
    help="Minimum mean raw value of a gene.",
)
@click.option(
    "--genes",
    "gene_types",
    multiple=True,
    callback=_csv_list,
    help="Gene types kept, e.g. protein_coding (default when known) or 'all'; repeatable.",
)
@click.option("--top-variable", type=int, default=None, help="Keep the N most variable genes.")
@click.option(
    "--expression-scale",
    type=click.Choice([s.value for s in ExpressionScale]),
    default=ExpressionScale.AUTO.value,
    show_default=True,
    help="Scale of table/.h5ad values (GDC files are raw).",
)
@click.option(
    "--gene-map",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ensembl id -> symbol map for tables with Ensembl ids (e.g. any GDC STAR-counts TSV).",
)
@click.option("--layer", default=None, help=".h5ad layer to read instead of X.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference CSV to write (raw values); a .summary.json is written beside it.",
)
def cohort_cmd(
    expression: Path,
    slides: Path,
    sample_sheet: Path | None,
    value: str,
    sample_types: list[str] | None,
    min_mean: float,
    gene_types: list[str] | None,
    top_variable: int | None,
    expression_scale: str,
    gene_map: Path | None,
    layer: str | None,
    out: Path,
) -> None:
    """Match expression files to slides by TCGA barcode and write the reference table."""
    from rnafm.cohort.build import CohortConfig, build_cohort, summary_path

    config = CohortConfig(
        value=GdcValue(value),
        sample_types=sample_types or ["01"],
        gene_types=gene_types,
        min_mean=min_mean,
        top_variable=top_variable,
        expression_scale=ExpressionScale(expression_scale),
    )
    result = build_cohort(
        expression,
        slides,
        out=out,
        sample_sheet=sample_sheet,
        gene_map=gene_map,
        layer=layer,
        config=config,
    )
    s = result.summary
    click.echo(
        f"{s['n_slides_matched']} of {s['n_slides']} slides matched ({s['n_patients']} patients), "
        f"{s['genes']['final']} genes -> {out}"
    )
    if s["slides_without_expression"]:
        click.echo(f"{len(s['slides_without_expression'])} slides without expression (see summary)")
    if s["expression_without_slides"]:
        click.echo(f"{len(s['expression_without_slides'])} expression samples without slides")
    if s["averaged_samples"]:
        click.echo(f"{len(s['averaged_samples'])} samples with several files were averaged")
    click.echo(f"summary: {summary_path(out)}")


@click.group("genesets")
def genesets_group() -> None:
    """Bundled gene-set collections (MSigDB v7.5.1, CC BY 4.0) and GMT files."""


@genesets_group.command("list")
def genesets_list() -> None:
    """List the bundled collections with their number of sets."""
    from rnafm.pathways.collections import COLLECTIONS, load_gene_sets

    for name, desc in COLLECTIONS.items():
        sets = load_gene_sets(name)
        click.echo(f"{name:<10} {len(sets):>5} sets  {desc}")


@genesets_group.command("show")
@click.argument("name")
@click.option("--genes", "show_genes", is_flag=True, help="Print the genes of every set.")
@click.option("--json", "as_json", is_flag=True, help="Print {set: [genes]} as JSON.")
def genesets_show(name: str, show_genes: bool, as_json: bool) -> None:
    """Show the sets of a bundled collection NAME or a GMT file."""
    from rnafm.pathways.collections import load_gene_sets

    sets = load_gene_sets(name)
    if as_json:
        click.echo(json.dumps(sets, indent=1))
        return
    sizes = [len(v) for v in sets.values()]
    click.echo(
        f"{name}: {len(sets)} sets, {len(set().union(*map(set, sets.values())))} genes, "
        f"sizes {min(sizes)}-{max(sizes)}"
    )
    for set_name, genes in sets.items():
        line = f"{set_name}\t{len(genes)}"
        if show_genes:
            line += "\t" + " ".join(genes)
        click.echo(line)
