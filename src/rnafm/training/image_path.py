"""Direct supervision of the image path: the condition encoder as an attention-MIL regressor.

Before the flow learns, the model's image encoder (cluster tokens, gated attention pooling with
a log-size bias) and its slide head are trained to predict the z-scored expression of each
training slide (mean squared error), early-stopped on the validation split's mean per-gene PCC.
They are then frozen (``image.freeze_image``), so the flow is conditioned on a slide embedding
that already encodes the slide's expression, and the head's estimate is a candidate for the
predictive mean (its weight is chosen on validation).

Under a time budget (``deadline``) the regression stops after the epoch that crosses it, with a
last validation when that epoch was not validated, and keeps the best validated weights.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from rnafm.metrics import mean_pcc
from rnafm.training.optim import regression_step

__all__ = ["fit_image_path", "image_state"]

logger = logging.getLogger(__name__)

_PREFIXES = ("image.", "slide_head.")


def image_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the image encoder's and slide head's weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(_PREFIXES)}


def _val_pcc(model, val: tuple[torch.Tensor, torch.Tensor, np.ndarray]) -> float:
    model.eval()
    with torch.no_grad():
        est = model.predict_slide(model.encode_condition(val[0], val[1]))  # (m, G)
    return mean_pcc(est.float().cpu().numpy(), val[2])


def _train_epoch(model, opt, clusters, sizes, z, gen, batch: int, epoch: int) -> None:
    """One pass of the regression over the training slides in a seeded order."""
    model.train()
    for idx in torch.randperm(clusters.shape[0], generator=gen).split(batch):
        idx = idx.to(clusters.device)  # (B,)
        est = model.predict_slide(model.encode_condition(clusters[idx], sizes[idx]))  # (B, G)
        loss = torch.mean((est.float() - z[idx]) ** 2)  # ()
        regression_step(opt, loss, "the image-path regression", epoch, "image.head_lr")


def fit_image_path(
    model: torch.nn.Module,
    clusters: torch.Tensor,
    sizes: torch.Tensor,
    z: torch.Tensor,
    *,
    val: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None,
    config,
    seed: int,
    deadline: float | None = None,
) -> dict:
    """Train ``model.image`` and ``model.slide_head`` to regress z (n, G) on the slides.

    Parameters
    ----------
    model
        An :class:`rnafm.model.RNAFM` with a slide head.
    clusters, sizes, z
        Training cluster means (n, K, D), sizes (n, K) and z-scored expression (n, G).
    val
        Validation (clusters, sizes, z as numpy) for early stopping, or None (all epochs).
    config
        :class:`rnafm.training.config.TrainConfig`; uses ``image`` and ``optim.batch_size``.
    seed
        Seed of the batch order.
    deadline
        ``time.monotonic()`` value after which no new epoch starts (None: no time limit).

    Returns
    -------
    dict
        ``{"epochs": run, "best_epoch": ..., "val_pcc": best validation PCC or None,
        "time_limited": whether the deadline ended it}``.
    """
    c = config.image
    params = [p for n, p in model.named_parameters() if n.startswith(_PREFIXES)]
    opt = torch.optim.AdamW(params, lr=c.head_lr, weight_decay=c.head_weight_decay)
    gen = torch.Generator().manual_seed(seed)
    batch = config.optim.batch_size
    best, best_epoch, bad, state, epoch, late = -math.inf, c.head_epochs, 0, None, 0, False
    for epoch in range(1, c.head_epochs + 1):
        _train_epoch(model, opt, clusters, sizes, z, gen, batch, epoch)
        late = deadline is not None and time.monotonic() >= deadline and epoch < c.head_epochs
        if val is not None and (late or epoch % c.head_every == 0):
            score = _val_pcc(model, val)
            logger.info("image path: epoch %d, validation PCC %.4f", epoch, score)
            if score > best:
                best, best_epoch, bad, state = score, epoch, 0, image_state(model)
            else:
                bad += 1
                if bad >= c.head_patience:
                    break
        if late:
            logger.info("image path: time budget reached after epoch %d", epoch)
            break
    if state is not None:
        model.load_state_dict(state, strict=False)
    if c.freeze_image:
        model.image.requires_grad_(False)
        model.slide_head.requires_grad_(False)
    model.eval()
    return {
        "epochs": epoch,
        "best_epoch": best_epoch,
        "val_pcc": None if val is None else float(best),
        "time_limited": late,
    }
