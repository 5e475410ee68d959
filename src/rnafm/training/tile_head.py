"""Fit the tile head (:class:`rnafm.model.tile_head.TileHead`) of a run on its cluster means.

Each training slide is the mixture of its K clusters (their means, weighted by their sizes and
the head's weight logits); the head is fitted so that the mixture matches the slide's bulk
log2 expression, with the squared error measured per gene in units of the training std (the
same z-scale the flow learns on), for a fixed number of epochs. Its mean per-gene PCC on the
validation slides is recorded, not used to pick an epoch: the slide-level PCC peaks early,
while the per-tile profiles of rare tissue (a rim around necrosis) keep sharpening for
tens of epochs after it (docs/maps.md). The run saves it as ``tile_head.safetensors``; the maps
read it out on single tiles.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from rnafm.metrics import mean_pcc
from rnafm.training.optim import regression_step
from rnafm.training.run import TILE_HEAD

__all__ = ["fit_tile_head", "build_tile_head", "load_tile_head"]

logger = logging.getLogger(__name__)


def build_tile_head(feature_dim: int, n_genes: int, config) -> torch.nn.Module:
    """An untrained :class:`TileHead` of :class:`rnafm.training.config.TileHeadConfig`."""
    from rnafm.model.tile_head import TileHead

    return TileHead(feature_dim, n_genes, hidden=config.tile_hidden, dropout=config.tile_dropout)


def load_tile_head(run_dir: Path, feature_dim: int, n_genes: int, config):
    """The run's fitted tile head (eval mode, CPU), or None when the run has none."""
    from safetensors.torch import load_file

    path = Path(run_dir) / TILE_HEAD
    if not path.is_file():
        return None
    head = build_tile_head(feature_dim, n_genes, config)
    head.load_state_dict(load_file(str(path)))
    return head.eval().requires_grad_(False)


def _val_pcc(head, val) -> float:
    head.eval()
    with torch.no_grad():
        est = head.slide_log2(val[0], val[1])  # (m, G)
    return mean_pcc(est.numpy(), val[2])


def fit_tile_head(
    clusters: np.ndarray,
    sizes: np.ndarray,
    y_log2: np.ndarray,
    *,
    std: np.ndarray,
    val: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    config,
    seed: int,
    deadline: float | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Fit a tile head to the slides' bulk expression.

    Parameters
    ----------
    clusters, sizes
        float32 (n, K, D) training cluster means and (n, K) their sizes.
    y_log2
        (n, G) log2(x+1) expression of the training slides.
    std
        (G,) per-gene training std (the loss is measured in its units).
    val
        Validation (clusters, sizes, log2 expression) for the record, or None.
    config
        :class:`rnafm.training.config.TileHeadConfig`.
    seed
        Seed of the initialisation and the batch order.
    deadline
        ``time.monotonic()`` value after which no new epoch starts (None: only the config's
        ``tile_max_minutes``).

    Notes
    -----
    With more genes than ``tile_genes`` each step fits a random subset of that many genes
    (the mixture of one gene does not depend on the others; the shared layers see every gene
    over the steps), which bounds a step's cost at the paper's 20,820 genes.

    Returns
    -------
    head, record
        The fitted head (eval mode, CPU) and ``{"epochs", "best_epoch", "val_pcc",
        "seconds", "time_limited"}``.
    """
    t0 = time.monotonic()
    torch.manual_seed(seed)
    n, _, d = clusters.shape
    head = build_tile_head(d, y_log2.shape[1], config)
    x = torch.as_tensor(np.asarray(clusters, dtype=np.float32))  # (n, K, D)
    s = torch.as_tensor(np.asarray(sizes, dtype=np.float32))  # (n, K)
    y = torch.as_tensor(np.asarray(y_log2, dtype=np.float32))  # (n, G)
    scale = torch.as_tensor(1.0 / np.maximum(np.asarray(std, dtype=np.float32), 1e-3))  # (G,)
    head.init_level(y.mean(0))
    val_t = None
    if val is not None and len(val[0]):
        val_t = (
            torch.as_tensor(np.asarray(val[0], dtype=np.float32)),
            torch.as_tensor(np.asarray(val[1], dtype=np.float32)),
            np.asarray(val[2], dtype=np.float64),
        )
    opt = torch.optim.AdamW(
        head.parameters(), lr=config.tile_lr, weight_decay=config.tile_weight_decay
    )
    gen = torch.Generator().manual_seed(seed)
    n_genes = y.shape[1]
    sub = config.tile_genes is not None and n_genes > config.tile_genes
    if config.tile_max_minutes is not None:
        own = t0 + 60.0 * config.tile_max_minutes
        deadline = own if deadline is None else min(deadline, own)
    epoch, late = 0, False
    for epoch in range(1, config.tile_epochs + 1):
        head.train()
        for idx in torch.randperm(n, generator=gen).split(config.tile_batch_size):
            g = torch.randperm(n_genes, generator=gen)[: config.tile_genes] if sub else None
            est = head.slide_log2(x[idx], s[idx], g)  # (B, G) or (B, g)
            err = est - (y[idx] if g is None else y[idx][:, g])  # (B, G) or (B, g)
            loss = torch.mean((err * (scale if g is None else scale[g])) ** 2)  # ()
            regression_step(opt, loss, "the tile head", epoch, "tile_head.tile_lr")
        if deadline is not None and time.monotonic() >= deadline and epoch < config.tile_epochs:
            logger.info("tile head: time budget reached after epoch %d", epoch)
            late = True
            break
    head.eval().requires_grad_(False)
    score = None if val_t is None else _val_pcc(head, val_t)
    record = {
        "epochs": epoch,
        "val_pcc": score,
        "seconds": round(time.monotonic() - t0, 1),
        "time_limited": late,
    }
    return head, record
