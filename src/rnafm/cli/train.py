"""``rnafm train``: a thin wrapper over :func:`rnafm.train`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from rnafm.cohort.reference import ExpressionScale
from rnafm.runtime import Device
from rnafm.training.options import PriorKind
from rnafm.training.presets import PRESETS


def _values(enum) -> list[str]:
    return [e.value for e in enum]


def _parse_sets(items: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE as JSON when it parses, else a string)."""
    from rnafm.errors import InputError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-4")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _read_config(path: Path | None):
    """A TrainConfig from a JSON file: a (partial) TrainConfig or a run's config.json."""
    from rnafm.errors import InputError
    from rnafm.training.config import TrainConfig

    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "config" in data and "rnafm_version" in data:
            data = data["config"]
        return TrainConfig.model_validate(data)
    except (json.JSONDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a valid training config ({e}).") from e


@click.command("train")
@click.option(
    "--reference",
    "-r",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference CSV: wsi_file_name, patient_id, [project], rna_<GENE> columns.",
)
@click.option(
    "--features",
    "-f",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of per-slide feature h5 files (TRIDENT, CLAM or SEQUOIA layout).",
)
@click.option(
    "--gene-sets",
    "-g",
    default=None,
    help="Bundled collection name (hallmark, go_mf, go_bp, reactome) or a .gmt path "
    "[default: gene_sets of --config, else hallmark].",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to write (resumed when it holds a checkpoint of the same config).",
)
@click.option(
    "--expression-scale",
    type=click.Choice(_values(ExpressionScale)),
    default=None,
    help="Scale of the reference values [default: auto].",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON TrainConfig (partial is fine) or a run's config.json.",
)
@click.option("--seed", type=int, default=None, help="Seed [default: 0].")
@click.option("--device", type=click.Choice(_values(Device)), default=None, help="[default: auto]")
@click.option("--epochs", type=int, default=None, help="Maximum epochs (optim.epochs).")
@click.option(
    "--max-minutes", type=float, default=None, help="Training time budget (optim.max_minutes)."
)
@click.option(
    "--prior", type=click.Choice(_values(PriorKind)), default=None, help="[default: ridge]"
)
@click.option("--resume/--no-resume", default=None, help="Resume from a checkpoint [default: on].")
@click.option(
    "--preset",
    type=click.Choice(["none", *sorted(PRESETS)]),
    default=None,
    help="Named set of overrides applied before --set: 'published' (the published RNA-FM "
    "recipe, for comparison) or 'published-cpu' (that recipe at the CPU model size).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any config field, e.g. --set optim.lr=3e-4 --set model.depth=2 (repeatable).",
)
def train_cmd(
    reference: Path,
    features: Path,
    gene_sets: str | None,
    out: Path,
    expression_scale: str | None,
    config_path: Path | None,
    seed: int | None,
    device: str | None,
    epochs: int | None,
    max_minutes: float | None,
    prior: str | None,
    resume: bool | None,
    preset: str | None,
    sets: tuple[str, ...],
) -> None:
    """Train a model: reference + features + gene sets -> run directory."""
    from rnafm._io import read_json
    from rnafm.training.api import train
    from rnafm.training.ddp import end_worker
    from rnafm.training.presets import preset_overrides

    options = {
        "expression_scale": expression_scale,
        "seed": seed,
        "device": device,
        "optim.epochs": epochs,
        "optim.max_minutes": max_minutes,
        "prior.kind": prior,
        "resume": resume,
        **_parse_sets(sets),
    }
    # a preset first; options the user actually gave (not None) win over it
    overrides = {
        **(preset_overrides(preset) if preset else {}),
        **{k: v for k, v in options.items() if v is not None},
    }
    run = train(
        reference,
        features,
        gene_sets=gene_sets,
        out=out,
        config=_read_config(config_path),
        **overrides,
    )
    if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun only rank 0 reports
        metrics = read_json(run / "val_metrics.json")
        shown = {k: v for k, v in metrics.items() if v is not None and not isinstance(v, dict)}
        click.echo(f"run written to {run}")
        click.echo(json.dumps(shown))
    end_worker(0)  # a torchrun worker leaves here (the run is written; no-op otherwise)
