"""Optimiser, learning-rate schedule and EMA of the training loop."""

from __future__ import annotations

import math

import torch

from rnafm.training.config import Schedule, TrainConfig

__all__ = ["make_optimizer", "lr_factor", "set_lr", "ema_update", "regression_step"]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms and embeddings' 1-d params).

    The fused implementation (one pass over all parameters instead of several per tensor; at the
    paper's scale 1.5-2 s less CPU per step, see docs/benchmarks.md) is used where torch offers
    it for the parameters' device, else the default one.
    """
    o = config.optim
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0},
    ]
    floating = all(p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
                   for p in model.parameters())  # fmt: skip
    if floating:
        try:
            return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, fused=True)
        except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device
            pass
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)


def lr_factor(step: int, plan_steps: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine (to ``min_lr_ratio``) or constant."""
    o = config.optim
    warm = min(o.warmup_steps, max(plan_steps // 5, 1))
    if step < warm:
        return (step + 1) / warm
    if o.schedule is Schedule.CONSTANT:
        return 1.0
    prog = min((step - warm) / max(plan_steps - warm, 1), 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


def set_lr(opt: torch.optim.Optimizer, step: int, plan_steps: int, config: TrainConfig) -> float:
    """Set the learning rate of ``step`` on every parameter group; return it."""
    lr = config.optim.lr * lr_factor(step, plan_steps, config)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``ema <- d ema + (1 - d) model`` with ``d = min(decay, (1 + step) / (10 + step))``."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1 - d)


def regression_step(opt: torch.optim.Optimizer, loss: torch.Tensor, what: str, epoch: int,
                    lr_option: str) -> None:  # fmt: skip
    """One optimiser step on ``loss``; a non-finite loss raises :class:`RnafmError` naming
    ``what`` diverged at ``epoch`` and the ``lr_option`` to lower."""
    from rnafm.errors import RnafmError

    if not torch.isfinite(loss):
        raise RnafmError(
            f"{what} diverged (loss {float(loss.detach())}) at epoch {epoch}; lower {lr_option} or "
            "check the features for extreme values."
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
