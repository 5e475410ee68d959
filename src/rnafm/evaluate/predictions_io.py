"""Read and write prediction files (.h5ad, the layout of DESIGN.md) for evaluation.

``X`` predictive mean (log2(x+1)), layers ``std``/``lower``/``upper`` (central interval at
``uns['rnafm']['interval_level']``), ``obs['patient_id']``; cross-validation adds ``obs['fold']``,
a ``random_mean`` layer (a random-init model of the same architecture, for SEQUOIA's test) and
``uns['rnafm_cv']`` (per-fold validation correlations and conformal multipliers) and an
``observed`` layer (the log2(x+1) truth of the cohort, so the file can be evaluated and
reported on its own). Draws, when
saved, live in a separate h5 file written and read by :mod:`rnafm.predict.writer`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnafm import __version__
from rnafm._io import atomic_path
from rnafm.errors import InputError

__all__ = ["PredictionFile", "write_predictions", "read_predictions"]

logger = logging.getLogger(__name__)


@dataclass
class PredictionFile:
    """Predictions read from (or to be written to) an .h5ad file."""

    slide_ids: list[str]
    genes: list[str]
    mean: np.ndarray  # (n, G)
    patient_ids: list[str] | None = None
    std: np.ndarray | None = None  # (n, G)
    lower: np.ndarray | None = None  # (n, G)
    upper: np.ndarray | None = None  # (n, G)
    random_mean: np.ndarray | None = None  # (n, G)
    observed: np.ndarray | None = None  # (n, G) the truth the predictions were made for (cv)
    folds: np.ndarray | None = None  # int (n,)
    samples: list[str] | None = None  # obs['sample']: the RNA sample of each slide (rnafm predict)
    info: dict[str, Any] = field(default_factory=dict)  # uns['rnafm']
    cv: dict[str, Any] | None = None  # uns['rnafm_cv']
    path: Path | None = None

    @property
    def level(self) -> float | None:
        """Nominal level of the stored [lower, upper] interval."""
        v = self.info.get("interval_level")
        try:
            return float(v) if v is not None else None
        except (TypeError, ValueError):
            return None


def _clean(obj: Any) -> Any:
    """uns-safe: drop None values (h5ad cannot store them)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return np.asarray(obj)
    return obj


def write_predictions(path: str | os.PathLike[str], pred: PredictionFile) -> Path:
    """Write predictions as .h5ad atomically."""
    import anndata as ad

    obs = pd.DataFrame(index=pd.Index(list(pred.slide_ids), name="slide_id"))
    if pred.patient_ids is not None:
        obs["patient_id"] = list(pred.patient_ids)
    if pred.samples is not None:
        obs["sample"] = list(pred.samples)
    if pred.folds is not None:
        obs["fold"] = np.asarray(pred.folds, dtype=np.int64)
    var = pd.DataFrame(index=pd.Index(list(pred.genes), name="gene"))
    layers = {
        k: np.asarray(v, dtype=np.float32)
        for k in ("std", "lower", "upper", "random_mean", "observed")
        if (v := getattr(pred, k)) is not None
    }
    uns: dict[str, Any] = {"rnafm": _clean({"version": __version__, **pred.info})}
    if pred.cv:
        uns["rnafm_cv"] = _clean(pred.cv)
    adata = ad.AnnData(
        X=np.asarray(pred.mean, dtype=np.float32), obs=obs, var=var, layers=layers, uns=uns
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def _to_py(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_py(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_predictions(path: str | os.PathLike[str]) -> PredictionFile:
    """Read an .h5ad prediction file (rnafm predict, rnafm cv, or any AnnData with the layout)."""
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: predictions file not found")
    try:
        a = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{path}: not a readable .h5ad predictions file ({e})") from e
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    layer = lambda k: np.asarray(a.layers[k]) if k in a.layers else None  # noqa: E731
    obs = a.obs
    info = _to_py(dict(a.uns.get("rnafm", {})))
    info = {k: v for k, v in info.items() if not (isinstance(v, str) and v == "none")}
    if "interval_level" in a.uns and "interval_level" not in info:  # rnafm predict files
        info["interval_level"] = float(a.uns["interval_level"])
    cv = _to_py(dict(a.uns["rnafm_cv"])) if "rnafm_cv" in a.uns else None
    return PredictionFile(
        slide_ids=[str(s) for s in a.obs_names],
        genes=[str(g) for g in a.var_names],
        mean=x.astype(np.float64),
        patient_ids=[str(p) for p in obs["patient_id"]] if "patient_id" in obs else None,
        std=layer("std"),
        lower=layer("lower"),
        upper=layer("upper"),
        random_mean=layer("random_mean"),
        observed=layer("observed"),
        folds=obs["fold"].to_numpy().astype(np.int64) if "fold" in obs else None,
        samples=[str(k) for k in obs["sample"]] if "sample" in obs else None,
        info=info,
        cv=cv,
        path=path,
    )
