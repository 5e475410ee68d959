"""Loop state, weights and resumable checkpoints of a training run (``checkpoint.pt``)."""

from __future__ import annotations

import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rnafm._io import atomic_path
from rnafm.errors import InputError
from rnafm.training import ddp
from rnafm.training.config import TrainConfig

__all__ = ["LoopState", "Trainables", "save_weights", "save_checkpoint", "load_checkpoint"]


@dataclass
class LoopState:
    """Loop counters saved in the checkpoint."""

    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0
    best: float = -math.inf
    best_step: int = -1
    best_epoch: int = -1
    bad: int = 0
    plan_epochs: int = 0
    every: int = 1
    planned: bool = False
    finished: bool = False
    image_path: dict | None = None  # the image-path regression's summary (fit_image_path)


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """The module's weights as float32 safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


@dataclass
class Trainables:
    """What a checkpoint holds besides the loop state: weights, optimiser and RNG streams."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gens: tuple[torch.Generator, torch.Generator]  # (batch order, noise)


def save_checkpoint(
    path: Path,
    parts: Trainables,
    state: LoopState,
    config: TrainConfig,
    data_key: dict[str, Any],
    ctx: ddp.DistContext,
) -> None:
    """Write the training state (rank 0, atomically); collective under DDP."""
    blob = {
        "data": data_key,
        "model": parts.model.state_dict(),
        "ema": parts.ema.state_dict(),
        "optimizer": parts.opt.state_dict(),
        "state": asdict(state),
        "rng": [g.get_state() for g in parts.gens],
        "config": config.model_dump(mode="json"),
    }
    if not ctx.distributed:
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
        return
    blob["rng_ranks"] = ddp.all_gather_object(blob["rng"], ctx)  # per-rank noise streams
    ddp.save_checkpoint(blob, path, ctx)


def load_checkpoint(
    path: Path,
    parts: Trainables,
    config: TrainConfig,
    data_key: dict[str, Any],
    ctx: ddp.DistContext,
) -> LoopState:
    """Restore ``parts`` from ``path``; refuse a checkpoint of another config or data.

    Raises
    ------
    InputError
        The checkpoint is unreadable (e.g. truncated by a crash during a copy) or was written
        with another configuration or other training data.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise InputError(
            f"{path}: cannot read the training checkpoint ({e}); it may be truncated. Restart "
            "the run afresh with --no-resume (resume=False), or delete this file."
        ) from e
    for what, ours, theirs in (
        ("configuration", config.model_dump(mode="json"), blob.get("config")),
        ("training data", data_key, blob.get("data")),
    ):
        if ours != theirs:
            raise InputError(
                f"{path}: the checkpoint was written with a different {what}; use another "
                "--out folder, or pass resume=False (--no-resume) to start this one afresh."
            )
    parts.model.load_state_dict(blob["model"])
    parts.ema.load_state_dict(blob["ema"])
    parts.opt.load_state_dict(blob["optimizer"])
    state = LoopState(**blob["state"])
    rng = blob["rng"]
    if ctx.distributed:
        ranks = blob.get("rng_ranks")
        if ranks is not None and len(ranks) == ctx.world_size:
            rng = ranks[ctx.rank]
        else:  # another world size: fresh per-rank noise (batches come from the sampler)
            parts.gens[1].manual_seed(ddp.rank_seed(config.seed + 1 + state.step, ctx))
            rng = rng[:1]
    for g, s in zip(parts.gens[: len(rng)], rng, strict=True):
        g.set_state(s)
    return state
