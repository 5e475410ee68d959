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
    spread.npz           per-gene scale, flow shape and novelty of the interval (optional)
    tile_head.safetensors  the tile head the maps read (optional; rnafm.model.tile_head)
"""

from __future__ import annotations

import json
import logging
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
    "SPREAD",
    "CHECKPOINT",
    "REQUIRED",
    "RUN_FORMAT",
    "data_record",
    "Normalisation",
    "append_history",
    "read_history",
    "truncate_history",
    "check_run",
    "write_config",
    "read_config",
    "run_cluster_config",
    "check_features",
    "check_calibrated_for",
]

logger = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
GENES = "genes.json"
TOKENS = "tokens.json"
NORMALISATION = "normalisation.npz"
PRIOR = "prior.npz"
HISTORY = "history.jsonl"
VAL_METRICS = "val_metrics.json"
CALIBRATION = "calibration.json"
SPREAD = "spread.npz"  # per-gene scale, flow shape and novelty of the interval (optional)
TILE_HEAD = "tile_head.safetensors"  # the maps' per-tile expression model (optional)
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


RUN_FORMAT = 2  # 2: gated-attention image path with a slide head, spread.npz
"""Version of the run-directory format; raise it whenever a reader of an older run would
misread a newer one (or the other way round). ``check_run`` refuses other formats."""


def data_record(train: Any) -> dict[str, Any]:
    """What the training data came from, for ``config.json`` (see :func:`write_config`).

    ``cluster_config``: the k-means settings that produced ``train.clusters`` (prediction must
    cluster new slides the same way); ``features``: the encoder and tiling attributes of the
    feature files (``encoder``, ``encoder_id``, ``patch_size``, ``target_mpp``, ...), None when
    the files carry none. Both are None for data built in memory without them.
    """
    cluster_config = getattr(train, "cluster_config", None)
    return {
        "cluster_config": None
        if cluster_config is None
        else cluster_config.model_dump(mode="json"),
        "features": getattr(train, "feature_attrs", None),
    }


def major(version: str) -> str:
    """Major part of a version string."""
    return str(version).split(".")[0]


def check_run(run_dir: Path) -> dict[str, Any]:
    """Check a run directory is complete and from a compatible version; return its config.json.

    Raises
    ------
    IncompatibleRunError
        A required file is missing or the run has another run format (``RUN_FORMAT``).
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
    fmt = meta.get("run_format")
    if fmt is None and major(version) == major(__version__):
        fmt = 1  # runs written before the format number existed (rnafm 0.1.0)
    if fmt != RUN_FORMAT:
        raise IncompatibleRunError(
            f"{run_dir / CONFIG}: run format {fmt} written by rnafm {version}; this is rnafm "
            f"{__version__}, which reads run format {RUN_FORMAT}. Retrain with this version "
            f"or install rnafm=={version}."
        )
    return meta


def write_config(run_dir: Path, config_dump: dict[str, Any], **extra: Any) -> None:
    """Write config.json: version, the TrainConfig and data shapes."""
    from rnafm import __version__

    write_json(
        Path(run_dir) / CONFIG,
        {"rnafm_version": __version__, "run_format": RUN_FORMAT, **extra, "config": config_dump},
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read config.json."""
    return read_json(Path(run_dir) / CONFIG)


def run_cluster_config(meta: dict[str, Any], config: Any) -> Any:
    """The k-means settings that produced the run's training clusters (prediction clusters new
    slides the same way): ``cluster_config`` of config.json, else the run's
    ``TrainConfig.clusters`` (runs written before it was recorded)."""
    from rnafm.features.clusters import ClusterConfig

    recorded = meta.get("cluster_config")
    return config.clusters if recorded is None else ClusterConfig.model_validate(recorded)


_IDENTITY_KEYS = ("encoder", "encoder_id", "patch_size", "target_magnification", "target_mpp")


def check_features(meta: dict[str, Any], attrs: dict[str, Any] | None, run_dir: Path) -> None:
    """Refuse features from another encoder or tiling than the run's training features.

    Compares the ``encoder``, ``encoder_id``, ``patch_size``, ``target_magnification`` and
    ``target_mpp`` attributes both sides know; logs a warning when either side has none.

    Raises
    ------
    InputError
        An attribute differs (both values are named).
    """
    from rnafm.errors import InputError

    if "features" not in meta:  # a run written before the feature attributes were recorded
        logger.info("%s: the run does not record its features' encoder; not checked", run_dir)
        return
    trained = meta["features"]
    if not trained and not attrs:  # neither side knows (loading the files already warned)
        logger.info("%s: no encoder/tiling attributes to compare", run_dir)
        return
    if not trained or not attrs:
        side = "the run's training features" if not trained else "these feature files"
        logger.warning(
            "%s: cannot check that the features come from the training encoder and tiling "
            "(%s carry no encoder/tiling attributes)",
            run_dir,
            side,
        )
        return
    for key in _IDENTITY_KEYS:
        if key in trained and key in attrs and trained[key] != attrs[key]:
            raise InputError(
                f"{run_dir}: the model was trained on features with {key} = {trained[key]!r} "
                f"but these feature files have {key} = {attrs[key]!r}. Extract the features "
                "with the training encoder and tiling (`rnafm extract`), or train a model on "
                "these features."
            )


def check_calibrated_for(calibration: dict[str, Any], *, draws: int, sampler: Any) -> None:
    """Warn when prediction samples otherwise than the interval calibration did.

    The conformal multiplier of ``calibration.json`` holds for the number of draws and the
    sampler (solver, steps, guidance) it was fitted with; other settings change the spread of
    the draws, so the stated interval level no longer holds.
    """
    changed = []
    cal_draws = calibration.get("draws")
    if cal_draws is not None and int(cal_draws) != int(draws):
        changed.append(f"draws {draws} (calibrated with {cal_draws})")
    cal_sampler = calibration.get("sampler") or {}
    ours = sampler.model_dump(mode="json") if hasattr(sampler, "model_dump") else {}
    for key in sorted(set(cal_sampler) & set(ours)):
        if cal_sampler[key] != ours[key]:
            changed.append(f"sampler {key} {ours[key]!r} (calibrated with {cal_sampler[key]!r})")
    if changed:
        logger.warning(
            "the intervals were calibrated for other sampling settings: %s. Their coverage "
            "is not the stated level; predict with the calibrated settings for calibrated "
            "intervals.",
            "; ".join(changed),
        )
