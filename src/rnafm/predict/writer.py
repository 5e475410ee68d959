"""Predictions as AnnData (.h5ad) and draws as a separate h5 file (DESIGN.md).

This module owns the draws file: dataset ``draws`` float32 (n, S, G) on log2(x+1), string
datasets ``slide_ids`` and ``genes``, attributes ``scale`` and ``rnafm_version``. Prediction and
cross-validation write it with :func:`write_draws`; evaluation reads it with :func:`read_draws`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rnafm._io import atomic_path
from rnafm.errors import InputError

__all__ = ["to_anndata", "write_predictions", "write_draws", "read_draws"]


def _plain(value: Any) -> Any:
    """Make a value h5ad-safe (no None, enums as strings)."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


def to_anndata(predictor, data, arrays, *, draws: int, seed: int, sampler=None):
    """Build the predictions AnnData of DESIGN.md from :class:`PredictionArrays`."""
    import anndata as ad
    import pandas as pd

    from rnafm import __version__
    from rnafm.pathways import pathway_scores

    sampler = sampler or predictor.config.sampler
    obs = pd.DataFrame({"patient_id": list(data.patient_ids)}, index=list(data.slide_ids))
    obs.index.name = "slide_id"
    var = pd.DataFrame(index=list(predictor.genes))
    var.index.name = "gene"
    adata = ad.AnnData(
        X=arrays.mean.astype(np.float32),
        obs=obs,
        var=var,
        layers={
            "std": arrays.std.astype(np.float32),
            "lower": arrays.lower.astype(np.float32),
            "upper": arrays.upper.astype(np.float32),
        },
    )
    tokens = predictor.tokens
    adata.obsm["pathway_scores"] = pathway_scores(arrays.mean, tokens)  # (n, P)
    adata.uns["pathways"] = list(tokens.pathway_names)
    adata.uns["interval_level"] = float(arrays.level)
    adata.uns["scale"] = "log2(x+1)"
    adata.uns["rnafm"] = _plain(
        {
            "version": __version__,
            "model": str(predictor.run_dir),
            "model_config": predictor.config.model.model_dump(mode="json"),
            "prior": predictor.config.prior.kind.value,
            "sampler": sampler.model_dump(mode="json"),
            "solver": sampler.solver.value,
            "steps": int(sampler.steps),
            "guidance": float(sampler.guidance),
            "draws": int(draws),
            "seed": int(seed),
            "antithetic": bool(predictor.config.antithetic),
            "interval_multiplier": float(predictor.calibration["multiplier"]),
        }
    )
    adata.uns["skipped"] = [[str(s), str(r)] for s, r in data.skipped] or "none"
    return adata


def write_predictions(adata, path: str | os.PathLike[str]) -> None:
    """Write the predictions AnnData to ``path`` (.h5ad) atomically."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def write_draws(path: str | os.PathLike[str], slide_ids, genes, draws: np.ndarray) -> None:
    """Write draws (n, S, G) on log2(x+1) with slide ids and genes to an h5 file atomically."""
    import h5py

    from rnafm import __version__

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("draws", data=draws.astype(np.float32), compression="gzip")
        f.create_dataset(
            "slide_ids", data=np.asarray(slide_ids, dtype=object), dtype=h5py.string_dtype()
        )
        f.create_dataset("genes", data=np.asarray(genes, dtype=object), dtype=h5py.string_dtype())
        f.attrs["scale"] = "log2(x+1)"
        f.attrs["rnafm_version"] = __version__


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_draws(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Read draws (n, S, G), slide ids and genes written by :func:`write_draws`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return (
                np.asarray(f["draws"]),
                [_text(s) for s in f["slide_ids"][()]],
                [_text(g) for g in f["genes"][()]],
            )
    except (OSError, KeyError) as e:
        raise InputError(
            f"{path}: not a draws file with 'draws', 'slide_ids', 'genes' ({e})"
        ) from e
