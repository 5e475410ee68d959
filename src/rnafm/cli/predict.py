"""``rnafm predict``: a thin wrapper over :meth:`rnafm.Predictor.predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rnafm.flow.options import Solver
from rnafm.runtime import Device


@click.command("predict")
@click.option(
    "--model",
    "-m",
    "model_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run directory written by `rnafm train`.",
)
@click.option(
    "--features",
    "-f",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of per-slide feature h5 files.",
)
@click.option(
    "--reference",
    "-r",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Reference CSV listing the slides to predict (its values are not used).",
)
@click.option(
    "--slides",
    default=None,
    help="Comma-separated slide ids, or 'all' (default when there is no --reference).",
)
@click.option("--draws", type=int, default=16, show_default=True, help="Draws per slide.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions .h5ad to write.",
)
@click.option(
    "--save-draws",
    is_flag=True,
    help="Also write the draws to <out>.draws.h5 (n slides x draws x genes).",
)
@click.option(
    "--device", type=click.Choice([d.value for d in Device]), default="auto", show_default=True
)
@click.option("--steps", type=int, default=None, help="Solver steps (default: the run's).")
@click.option("--guidance", type=float, default=None, help="Guidance scale (default: the run's).")
@click.option(
    "--solver",
    type=click.Choice([s.value for s in Solver]),
    default=None,
    help="ODE solver (default: the run's).",
)
@click.option(
    "--level",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Interval level (default: the calibrated level of the run, 0.9).",
)
@click.option(
    "--per-slide",
    is_flag=True,
    help="Predict every slide alone, also where the run's training slides of one sample shared "
    "one expression profile (by default such slides get their sample's pooled prediction).",
)
def predict_cmd(
    model_dir: Path,
    features: Path,
    reference: Path | None,
    slides: str | None,
    draws: int,
    seed: int,
    out: Path,
    save_draws: bool,
    device: str,
    steps: int | None,
    guidance: float | None,
    solver: str | None,
    level: float | None,
    per_slide: bool,
) -> None:
    """Predict expression with uncertainty for slides -> .h5ad."""
    from rnafm.errors import InputError
    from rnafm.predict.predictor import load_model

    if reference is not None and slides is not None:
        raise InputError("pass either --reference or --slides, not both.")
    predictor = load_model(model_dir, device=device)
    update: dict[str, Any] = {"steps": steps, "guidance": guidance, "solver": solver}
    update = {k: v for k, v in update.items() if v is not None}
    sampler = None
    if update:
        try:
            sampler = type(predictor.config.sampler).model_validate(
                {**predictor.config.sampler.model_dump(mode="json"), **update}
            )
        except ValueError as e:
            raise InputError(f"invalid sampler option: {e}") from e
    draws_out = out.with_name(out.name.removesuffix(".h5ad") + ".draws.h5") if save_draws else None
    adata = predictor.predict(
        features,
        reference=reference,
        slides=slides if reference is None else None,
        draws=draws,
        seed=seed,
        sampler=sampler,
        level=level,
        out=out,
        draws_out=draws_out,
        per_slide=per_slide,
    )
    skipped = adata.uns.get("skipped")
    n_skipped = 0 if isinstance(skipped, str) else len(skipped)
    click.echo(
        f"predicted {adata.n_obs} slides x {adata.n_vars} genes -> {out}"
        + (f" (draws: {draws_out})" if draws_out else "")
        + (f"; {n_skipped} slides skipped (see uns['skipped'])" if n_skipped else "")
    )
    n_pooled = int((adata.obs["pooled_slides"] > 1).sum())
    if n_pooled:
        click.echo(
            f"{n_pooled} slides share their sample's pooled prediction (the run's training "
            "slides of one sample shared one expression profile; --per-slide to predict each "
            "alone)"
        )
