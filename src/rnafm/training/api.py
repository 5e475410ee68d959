"""`train`: reference table + feature folder + gene sets -> a run directory."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from rnafm._io import write_json
from rnafm.cohort.splits import HoldOut, ValidationHoldOut, validation_split
from rnafm.errors import InputError
from rnafm.training.config import TrainConfig, apply_overrides

__all__ = ["train"]

logger = logging.getLogger(__name__)

_MIN_TRAIN_S = 90.0  # training loop time kept even when loading the data ate the budget


def train(
    reference: str | os.PathLike[str],
    features: str | os.PathLike[str],
    *,
    gene_sets: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    **overrides: Any,
) -> Path:
    """Train a model from a reference table and a folder of per-slide feature files.

    Parameters
    ----------
    reference
        Reference CSV (``wsi_file_name``, ``patient_id``, ``rna_<GENE>`` columns), raw or log2.
    features
        Folder of per-slide feature h5 files (TRIDENT, CLAM or SEQUOIA layout).
    gene_sets
        A bundled collection name (``hallmark``, ...) or a ``.gmt`` path; None keeps
        ``config.gene_sets`` (default ``hallmark``).
    out
        Run directory (created; resumed when it holds a checkpoint of the same config).
    config
        Root configuration; defaults to ``TrainConfig()``.
    **overrides
        Config fields to change: ``seed=1``, ``device="cpu"``, ``lr=3e-4``, ``optim__epochs=5``;
        ``None`` sets a field to None (``**{"optim.max_minutes": None}``: no time budget).

    Notes
    -----
    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process joins the process group here (gloo on
    CPU, NCCL on CUDA), rank 0 loads the data first (filling the cluster cache) and writes the
    run directory, training runs with DistributedDataParallel (see :func:`rnafm.fit`), and the
    process group is destroyed on return.
    ``optim.max_minutes`` bounds loading the data (k-means of new slides) plus the training loop
    (at least 90 s of training are kept); calibration comes on top.

    Returns
    -------
    Path
        The run directory, ready for :func:`rnafm.load_model`.
    """
    import torch.distributed as dist

    from rnafm.training import ddp
    from rnafm.training.loop import process_context

    t_start = time.monotonic()
    sets = None if gene_sets is None else str(gene_sets)  # None: the config's gene sets
    cfg = apply_overrides(config or TrainConfig(), {"gene_sets": sets})
    cfg = apply_overrides(cfg, overrides, keep_none=True)  # optim__max_minutes=None: no budget
    owned = not (dist.is_available() and dist.is_initialized())
    ctx = process_context(cfg)  # joins torchrun's process group; one plain process otherwise
    try:
        return _train(reference, features, cfg, Path(out), ctx, t_start)
    finally:
        if owned:
            ddp.shutdown()


def _train(reference, features, cfg: TrainConfig, out: Path, ctx, t_start: float) -> Path:
    """Body of :func:`train` once the configuration and the process context are known."""
    from rnafm.cohort.dataset import load_cohort_data, sites_for
    from rnafm.cohort.reference import load_reference
    from rnafm.pathways import load_gene_sets, select_tokens
    from rnafm.training import ddp
    from rnafm.training.loop import fit

    ddp.quiet_non_main(ctx)
    ref = load_reference(reference, scale=cfg.expression_scale)
    with ddp.main_process_first(ctx):  # rank 0 computes and caches new k-means first
        data = load_cohort_data(features, reference=ref, cluster_config=cfg.clusters)
    for slide, reason in data.skipped:
        logger.warning("skipping slide %s: %s", slide, reason)
    if len(data.slide_ids) < 2:
        raise InputError(
            f"{features}: fewer than 2 slides of {reference} have features "
            f"({len(data.skipped)} skipped); check that the feature files are named by slide id."
        )
    sets = load_gene_sets(cfg.gene_sets)
    tokens = select_tokens(list(data.genes), sets, cfg.tokens)
    v = cfg.validation
    sites = None
    if v.hold_out is not ValidationHoldOut.PATIENT:
        sites = sites_for(data, required=v.hold_out is ValidationHoldOut.SITE)
    tr, va, held = validation_split(
        list(data.patient_ids),
        sites,
        hold_out=v.hold_out,
        fraction=v.fraction,
        min_patients=v.min_patients,
        seed=cfg.seed,
    )
    train_data = data.subset(tr)
    val_data = data.subset(va) if va.size else None
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        write_json(
            out / "split.json",
            {
                "train_patients": sorted(set(train_data.patient_ids)),
                "val_patients": [] if val_data is None else sorted(set(val_data.patient_ids)),
                "hold_out": held.value,
                "val_sites": sorted({sites[i] for i in va}) if held is HoldOut.SITE else None,
                "skipped": [list(s) for s in data.skipped],
                "reference": str(reference),
                "features": str(features),
            },
        )
    logger.info(
        "training on %d slides, validating on %d (%d genes, %d tokens)",
        len(tr),
        len(va),
        len(tokens.genes),
        len(tokens.names),
    )
    limit = None
    if cfg.optim.max_minutes is not None:  # loading the data counts against the budget
        spent = time.monotonic() - t_start
        limit = max(cfg.optim.max_minutes * 60 - spent, _MIN_TRAIN_S)
    return fit(train_data, val=val_data, tokens=tokens, config=cfg, out=out, time_limit_s=limit)
