"""`fit`: train the flow-matching model on cohort data, select it on a multi-draw val metric.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop runs with DistributedDataParallel: slides
are sharded by patient, ``optim.batch_size`` stays the global batch, gradients are averaged,
the EMA is updated identically on every rank, rank 0 validates, decides (early stop, time
budget) and broadcasts its decisions, and only rank 0 writes the run directory. One process
runs exactly the single-process code path.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rnafm._io import atomic_path, write_json
from rnafm.errors import InputError
from rnafm.runtime import autocast, resolve_device
from rnafm.training import ddp
from rnafm.training.config import Schedule, TrainConfig
from rnafm.training.run import (
    CALIBRATION,
    CHECKPOINT,
    GENES,
    HISTORY,
    TOKENS,
    VAL_METRICS,
    WEIGHTS,
    append_history,
    truncate_history,
    write_config,
)
from rnafm.training.targets import aligned_expression, prepare_targets
from rnafm.training.validate import Validator, uncalibrated

__all__ = ["fit"]

logger = logging.getLogger(__name__)


@dataclass
class _State:
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


def _lr_factor(step: int, plan_steps: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine (to ``min_lr_ratio``) or constant."""
    o = config.optim
    warm = min(o.warmup_steps, max(plan_steps // 5, 1))
    if step < warm:
        return (step + 1) / warm
    if o.schedule is Schedule.CONSTANT:
        return 1.0
    prog = min((step - warm) / max(plan_steps - warm, 1), 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1 - d)


def _save_weights(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def process_context(config: TrainConfig) -> ddp.DistContext:
    """The process group of ``torchrun`` (joined here if needed), or one plain process."""
    import torch.distributed as dist

    world = ddp._env_int("WORLD_SIZE", 1)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return ddp.DistContext()  # one process: the device is resolved as before
    return ddp.init_distributed(config.device.value)


def _save_checkpoint(path, model, ema, opt, state, gens, config, data_key, ctx) -> None:
    """Write the training state (rank 0, atomically); collective under DDP."""
    blob = {
        "data": data_key,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": opt.state_dict(),
        "state": asdict(state),
        "rng": [g.get_state() for g in gens],
        "config": config.model_dump(mode="json"),
    }
    if not ctx.distributed:
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
        return
    blob["rng_ranks"] = ddp.all_gather_object(blob["rng"], ctx)  # per-rank noise streams
    ddp.save_checkpoint(blob, path, ctx)


def _load_checkpoint(path, model, ema, opt, gens, config, data_key, ctx) -> _State:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    for what, ours, theirs in (
        ("configuration", config.model_dump(mode="json"), blob.get("config")),
        ("training data", data_key, blob.get("data")),
    ):
        if ours != theirs:
            raise InputError(
                f"{path}: the checkpoint was written with a different {what}; use another "
                "--out folder, or pass resume=False (--no-resume) to start this one afresh."
            )
    model.load_state_dict(blob["model"])
    ema.load_state_dict(blob["ema"])
    opt.load_state_dict(blob["optimizer"])
    state = _State(**blob["state"])
    rng = blob["rng"]
    if ctx.distributed:
        ranks = blob.get("rng_ranks")
        if ranks is not None and len(ranks) == ctx.world_size:
            rng = ranks[ctx.rank]
        else:  # another world size: fresh per-rank noise (batches come from the sampler)
            gens[1].manual_seed(ddp.rank_seed(config.seed + 1 + state.step, ctx))
            rng = rng[:1]
    for g, s in zip(gens[: len(rng)], rng, strict=True):
        g.set_state(s)
    return state


def _plan(state: _State, config: TrainConfig, t_epoch: float, t_val: float, limit: float) -> None:
    """Fix the number of epochs and the validation cadence once the first epoch is timed.

    Without a binding time budget the plan is ``optim.epochs`` (deterministic). Otherwise
    validations get at most a quarter of the budget (at least 2, at most ``evaluations``) and the
    epochs the rest. ``limit`` is the training budget in seconds (inf: none).
    """
    o, v = config.optim, config.validation
    epochs, n_val = o.epochs, v.evaluations
    if math.isfinite(limit):
        budget = 0.95 * limit - state.elapsed
        if t_val > 0:
            n_val = int(min(v.evaluations, max(2, 0.25 * budget // t_val)))
        fits = int((budget - n_val * t_val) / max(t_epoch, 1e-6)) + state.epoch
        if fits < epochs:
            epochs = max(fits, state.epoch + 1)
            logger.info(
                "time budget: planning %d epochs (%.2f s each), %d validations (%.1f s each)",
                epochs,
                t_epoch,
                n_val,
                t_val,
            )
    state.plan_epochs = epochs
    state.every = v.every or max(1, epochs // max(n_val, 1))
    state.planned = True


def _batches(n: int, batch_gen, sampler, state: _State, config, spe) -> list[torch.Tensor]:
    """This process's batches of slide indices for the next epoch.

    One process: a seeded permutation cut into ``spe`` batches. Under DDP: the patient sampler's
    share of this rank (the same number of batches on every rank).
    """
    if sampler is None:
        perm = torch.randperm(n, generator=batch_gen)  # (n,)
        b = config.optim.batch_size
        return [perm[i * b : (i + 1) * b] for i in range(spe)]  # (B,) each
    sampler.set_epoch(state.epoch)
    return [torch.as_tensor(batch, dtype=torch.long) for batch in sampler.batches()]  # (B/W,)


def _train_epoch(step_fn, ema, opt, tensors, gens, state: _State, config, spe, sampler=None):
    """One pass over the training slides; returns (mean loss of this rank, last lr).

    ``step_fn`` is :class:`FlowMatchingStep` (wrapped in DDP under ``torchrun``); ``sampler`` is
    the patient sampler under DDP, None for one process.
    """
    xs, ss, ys = tensors
    batch_gen, noise_gen = gens
    model = ddp.unwrap_model(step_fn).model
    o = config.optim
    n = xs.shape[0]
    step_fn.train()
    losses, lr = [], o.lr
    for batch in _batches(n, batch_gen, sampler, state, config, spe):
        idx = batch.to(xs.device)  # (B,)
        lr = o.lr * _lr_factor(state.step, state.plan_epochs * spe, config)
        for group in opt.param_groups:
            group["lr"] = lr
        drop = model.draw_dropout(idx.numel(), generator=noise_gen)  # (B,) always passed
        with autocast(xs.device):
            loss = step_fn(xs[idx], ss[idx], drop, ys[idx], generator=noise_gen)  # ()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        _ema_update(ema, model, o.ema_decay, state.step)
        state.step += 1
        losses.append(float(loss.detach()))
    state.epoch += 1
    return float(np.mean(losses)), lr


def fit(train, *, val, tokens, config: TrainConfig, out, time_limit_s: float | None = None) -> Path:
    """Train a model on ``train``, select and calibrate it on ``val``; write the run directory.

    Parameters
    ----------
    train
        :class:`rnafm.cohort.dataset.CohortData` with expression (the only data fitted).
    val
        Validation data (patients disjoint from ``train``) for early stopping, model choice and
        interval calibration, or None (train for the full budget, Gaussian intervals).
    tokens
        :class:`rnafm.pathways.PathwayTokens`; its genes are the model's outputs.
    config
        The root :class:`TrainConfig`.
    out
        Run directory; resumed from its checkpoint when ``config.resume`` and one exists.
    time_limit_s
        Further cap, in seconds from now, on this session's training loop (``rnafm.train``
        passes what is left of ``optim.max_minutes`` after loading the data); not part of the
        config, so a resumed run is not refused for it.

    Returns
    -------
    Path
        The run directory.
    """
    from rnafm.model import build_model
    from rnafm.training.step import FlowMatchingStep

    ctx = process_context(config)
    ddp.quiet_non_main(ctx)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    genes = list(tokens.genes)
    y_tr = aligned_expression(train, genes, "training")  # (n, G)
    if val is not None and len(val.slide_ids) == 0:
        val = None
    if len(train.slide_ids) < 2:
        raise InputError("training needs at least 2 slides with features and expression.")
    device = ctx.device if ctx.distributed else resolve_device(config.device)
    torch.manual_seed(config.seed)
    prepared = prepare_targets(train, y_tr, config) if ctx.is_main else None
    targets, y_model = ddp.broadcast_object(prepared, ctx)  # (n, G) model-space targets
    n, k, d = train.clusters.shape
    if ctx.is_main:
        targets.save(out)
        write_json(out / GENES, genes)
        write_json(out / TOKENS, tokens.to_dict())
        write_config(
            out,
            config.model_dump(mode="json"),
            feature_dim=int(d),
            n_clusters=int(k),
            n_genes=len(genes),
            n_train=int(n),
            n_val=0 if val is None else len(val.slide_ids),
        )
    validator = None
    if val is not None and ctx.is_main:  # validation runs on rank 0 only
        validator = Validator(
            val, aligned_expression(val, genes, "validation"), targets, config, device
        )

    model = build_model(tokens, feature_dim=d, n_clusters=k, config=config.model).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    step_fn = ddp.wrap_model(FlowMatchingStep(model), ctx)  # DDP for several ranks
    o = config.optim
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=o.lr,
        betas=o.betas,
    )
    gens = (
        torch.Generator().manual_seed(config.seed),
        torch.Generator(device=device).manual_seed(ddp.rank_seed(config.seed + 1, ctx)),
    )
    spe = math.ceil(n / o.batch_size)
    sampler = None
    if ctx.distributed:  # global batch split across ranks; slides sharded by patient
        per_rank = max(1, o.batch_size // ctx.world_size)
        sampler = ddp.PatientDistributedSampler(
            list(train.patient_ids), ctx=ctx, seed=config.seed, batch_size=per_rank
        )
        spe = math.ceil(len(sampler) / per_rank)
    state = _State(plan_epochs=o.epochs)
    data_key = {
        "train": list(train.slide_ids),
        "val": [] if val is None else list(val.slide_ids),
        "shape": [int(n), int(k), int(d), len(genes)],
    }
    ckpt = out / CHECKPOINT
    resume = ddp.broadcast_object(config.resume and ckpt.is_file(), ctx)  # rank 0's view
    if resume:
        state = _load_checkpoint(ckpt, model, ema, opt, gens, config, data_key, ctx)
        if ctx.is_main:
            truncate_history(out, state.step)
        logger.info("resuming %s at epoch %d (step %d)", out, state.epoch, state.step)
    elif ctx.is_main:
        for stale in (HISTORY, WEIGHTS, CALIBRATION, VAL_METRICS, CHECKPOINT):
            (out / stale).unlink(missing_ok=True)
    tensors = (
        torch.as_tensor(train.clusters, device=device),  # (n, K, D)
        torch.as_tensor(train.sizes, device=device),  # (n, K)
        torch.as_tensor(y_model, device=device),  # (n, G)
    )
    limit = config.optim.max_minutes * 60 if config.optim.max_minutes else math.inf
    if time_limit_s is not None:
        limit = min(limit, state.elapsed + time_limit_s)
    checkpoint = (ckpt, data_key, limit)
    run = (ctx, sampler, val is not None)
    _run_loop(out, step_fn, ema, opt, tensors, gens, state, config, spe, validator, checkpoint, run)
    if not ctx.is_main:
        ddp.barrier(ctx)  # wait for rank 0 to select, calibrate and write the run
        return out
    try:
        cal = _finish(out, ema, validator, config, device, state)
        if (
            validator is not None
            and targets.prior is not None
            and config.prior.refit_with_validation
        ):
            _refit_prior(out, targets, train, y_tr, validator, config)
    finally:
        ddp.barrier(ctx)
    return cal


def _run_loop(
    out, step_fn, ema, opt, tensors, gens, state, config, spe, validator, checkpoint, run
):
    """Epochs, validations and checkpoints until early stop, budget or plan end.

    Under DDP every rank trains; rank 0 validates, writes, takes every decision (plan, early
    stop, time budget, checkpoint due) and broadcasts its state, so the ranks never disagree.
    """
    ckpt, data_key, budget = checkpoint  # path, fingerprint of the training data, seconds
    ctx, sampler, has_val = run  # DistContext, patient sampler (DDP only), validation split?
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    model = ddp.unwrap_model(step_fn).model
    o = config.optim
    start = time.perf_counter() - state.elapsed
    last_ckpt = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=not ctx.is_main) as bar:
        task = bar.add_task("training", total=state.plan_epochs, completed=state.epoch)
        while not state.finished:
            t0 = time.perf_counter()
            loss, lr = _train_epoch(step_fn, ema, opt, tensors, gens, state, config, spe, sampler)
            loss = ddp.all_reduce_mean(loss, ctx)  # mean over ranks (one process: unchanged)
            t_epoch = time.perf_counter() - t0
            record = {"epoch": state.epoch, "step": state.step, "loss": loss, "lr": lr}
            due = state.planned and (
                state.epoch % state.every == 0 or state.epoch >= state.plan_epochs
            )
            t_val = 0.0
            if has_val and ctx.is_main and (not state.planned or due):
                t1 = time.perf_counter()
                scores = validator.score(ema)
                t_val = time.perf_counter() - t1
                record.update(scores, val_prior_pcc=validator.prior_pcc)
                if scores["val_pcc"] > state.best + o.min_delta:
                    state.best, state.best_step, state.best_epoch = (
                        scores["val_pcc"],
                        state.step,
                        state.epoch,
                    )
                    state.bad = 0
                    _save_weights(ema, out / WEIGHTS)
                elif state.planned and state.step >= o.warmup_steps:
                    state.bad += 1
                bar.update(task, description=f"training (val PCC {scores['val_pcc']:.3f})")
            state.elapsed = time.perf_counter() - start
            if not state.planned:
                _plan(state, config, t_epoch, t_val, budget)
            record["time_s"] = round(state.elapsed, 2)
            if ctx.is_main:
                append_history(out, record)
            bar.update(task, completed=state.epoch, total=state.plan_epochs)
            state.finished = (
                state.bad >= o.patience
                or state.elapsed >= budget
                or state.epoch >= state.plan_epochs
            )
            save = state.finished or time.perf_counter() - last_ckpt > 60 or "val_pcc" in record
            if ctx.distributed:  # rank 0 decides for all (times and scores differ per rank)
                shared = ddp.broadcast_object((asdict(state), save), ctx)
                for key, value in shared[0].items():
                    setattr(state, key, value)
                save = shared[1]
            if save:
                _save_checkpoint(ckpt, model, ema, opt, state, gens, config, data_key, ctx)
                last_ckpt = time.perf_counter()


def _refit_prior(out: Path, targets, train, y_tr, validator: Validator, config) -> None:
    """Refit the ridge prior on training + validation slides and save it (prior.npz)."""
    from rnafm.training.prior import pool_clusters, refit_ridge

    val = validator.val
    x = pool_clusters(
        np.concatenate([train.clusters, val.clusters]), np.concatenate([train.sizes, val.sizes])
    )  # (n + m, D)
    y = np.concatenate([y_tr, validator.y])  # (n + m, G) log2(x+1)
    targets.prior = refit_ridge(targets.prior, x, targets.norm.forward(y), config.prior.alphas)
    targets.save(out)
    logger.info("ridge prior refitted on %d training + validation slides", len(x))


def _finish(out, ema, validator, config, device, state) -> Path:
    """Select the best EMA weights, calibrate, write val_metrics.json and calibration.json."""
    from safetensors.torch import load_file

    if validator is None or not (out / WEIGHTS).is_file():
        _save_weights(ema, out / WEIGHTS)
        cal = uncalibrated(config, "no validation split: Gaussian interval, not calibrated")
    else:
        ema.load_state_dict(load_file(str(out / WEIGHTS), device=str(device)))
        cal = validator.calibrate(ema)
    write_json(out / CALIBRATION, cal)
    metrics = {
        "val_pcc": None if validator is None else state.best,
        "val_prior_pcc": None if validator is None else validator.prior_pcc,
        "best_step": state.best_step,
        "best_epoch": state.best_epoch,
        "steps": state.step,
        "epochs": state.epoch,
        "train_seconds": round(state.elapsed, 1),
        "n_val": 0 if validator is None else len(validator.val.slide_ids),
        **{
            k: cal[k]
            for k in ("blend", "pcc_mean", "coverage_raw", "coverage_calibrated")
            if k in cal
        },
    }
    write_json(out / VAL_METRICS, metrics)
    logger.info("trained %d steps in %.0f s; %s", state.step, state.elapsed, metrics)
    return out
