"""The run directory: file names, normalisation statistics and the version check.

A run directory holds everything ``predict`` needs on another machine::

    config.json          TrainConfig + rnafm version + data shapes (feature_dim, n_clusters)
    model.safetensors    EMA weights of the selected model
    genes.json           model genes in output order
    tokens.json          resolved pathway tokens (PathwayTokens.to_dict)
    normalisation.npz    per-gene mean and std of the log2(x+1) training targets
    prior.npz            ridge prior (only with prior.kind = ridge)
    history.jsonl        one JSON line per validation / epoch: loss, lr, val metrics, time
    val_metrics.json     metrics of the selected model on the validation split
    calibration.json     interval calibration (level, multiplier, raw and calibrated coverage)
    checkpoint.pt        last training state (model, EMA, optimiser, step, RNG) for resuming
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnafm._io import atomic_path, read_json, write_json
from rnafm.errors import IncompatibleRunError

__all__ = [
    "CONFIG",
    "WEIGHTS",
    "GENES",
    "TOKENS",
    "NORMALISATION",
    "PRIOR",
    "HISTORY",
    "VAL_METRICS",
    "CALIBRATION",
    "CHECKPOINT",
    "REQUIRED",
    "Normalisation",
    "append_history",
    "read_history",
    "truncate_history",
    "check_run",
    "write_config",
    "read_config",
]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
GENES = "genes.json"
TOKENS = "tokens.json"
NORMALISATION = "normalisation.npz"
PRIOR = "prior.npz"
HISTORY = "history.jsonl"
VAL_METRICS = "val_metrics.json"
CALIBRATION = "calibration.json"
CHECKPOINT = "checkpoint.pt"
REQUIRED = (CONFIG, WEIGHTS, GENES, TOKENS, NORMALISATION, CALIBRATION)


@dataclass
class Normalisation:
    """Per-gene z-scoring of log2(x+1) expression with training statistics."""

    mean: np.ndarray  # float64 (G,)
    std: np.ndarray  # float64 (G,), at least ``floor``

    @classmethod
    def fit(cls, values: np.ndarray, *, floor: float = 1e-2) -> Normalisation:
        """Statistics of training values (n, G); constant genes get std ``floor``."""
        v = np.asarray(values, dtype=np.float64)  # (n, G)
        return cls(mean=v.mean(axis=0), std=np.maximum(v.std(axis=0), floor))

    def forward(self, values: np.ndarray) -> np.ndarray:
        """log2(x+1) (n, G) -> z-scores (n, G)."""
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """z-scores (..., G) -> log2(x+1) (..., G)."""
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def save(self, path: Path) -> None:
        """Write ``mean`` and ``std`` as ``.npz`` atomically."""
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(f, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: Path) -> Normalisation:
        """Read statistics written by :meth:`save`."""
        with np.load(path) as z:
            return cls(mean=z["mean"], std=z["std"])


def append_history(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to the run's history (a torn last line is dropped on reading)."""
    path = Path(run_dir) / HISTORY
    with path.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """All records of the run's history."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_history(run_dir: Path, step: int) -> None:
    """Drop history records after ``step`` (used when resuming from an older checkpoint)."""
    records = [r for r in read_history(run_dir) if r.get("step", 0) <= step]
    path = Path(run_dir) / HISTORY
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in records))


def major(version: str) -> str:
    """Major part of a version string."""
    return str(version).split(".")[0]


def check_run(run_dir: Path) -> dict[str, Any]:
    """Check a run directory is complete and from a compatible version; return its config.json.

    Raises
    ------
    IncompatibleRunError
        A required file is missing or the run was written by another major version.
    """
    from rnafm import __version__

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise IncompatibleRunError(
            f"{run_dir}: no such run directory; pass the --out folder of `rnafm train`."
        )
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise IncompatibleRunError(
            f"{run_dir}: incomplete run, missing {', '.join(missing)}; training may have been "
            "interrupted: run `rnafm train` again with the same --out to resume it."
        )
    meta = read_json(run_dir / CONFIG)
    version = str(meta.get("rnafm_version", "?"))
    if major(version) != major(__version__):
        raise IncompatibleRunError(
            f"{run_dir / CONFIG}: written by rnafm {version}, this is rnafm {__version__} "
            f"(major versions differ); retrain with this version or install rnafm=={version}."
        )
    return meta


def write_config(run_dir: Path, config_dump: dict[str, Any], **extra: Any) -> None:
    """Write config.json: version, the TrainConfig and data shapes."""
    from rnafm import __version__

    write_json(
        Path(run_dir) / CONFIG, {"rnafm_version": __version__, **extra, "config": config_dump}
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read config.json."""
    return read_json(Path(run_dir) / CONFIG)
