"""`fit`: train the flow-matching model on cohort data, select it on a multi-draw val metric.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same loop runs with DistributedDataParallel: slides
are sharded by patient, ``optim.batch_size`` stays the global batch, gradients are averaged,
the EMA is updated identically on every rank, rank 0 validates, decides (early stop, time
budget) and broadcasts its decisions, and only rank 0 writes the run directory. One process
runs exactly the single-process code path. The optimiser, schedule and EMA live in
:mod:`rnafm.training.optim`, the loop state and checkpoints in :mod:`rnafm.training.checkpoint`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnafm._io import read_json, write_json
from rnafm.errors import InputError, RnafmError
from rnafm.runtime import autocast, resolve_device
from rnafm.training import ddp
from rnafm.training.checkpoint import (
    LoopState,
    Trainables,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from rnafm.training.config import TrainConfig
from rnafm.training.optim import ema_update, make_optimizer, set_lr
from rnafm.training.run import (
    CALIBRATION,
    CHECKPOINT,
    GENES,
    HISTORY,
    SPREAD,
    TOKENS,
    VAL_METRICS,
    WEIGHTS,
    append_history,
    data_record,
    truncate_history,
    write_config,
)
from rnafm.training.targets import aligned_expression, prepare_targets
from rnafm.training.validate import Validator, uncalibrated

__all__ = ["fit"]

logger = logging.getLogger(__name__)

# Under a time budget the ridge prior and the image-path regression count against it too: the
# image path may take this share of what is left when it starts, and the flow loop what is
# left after it, each at least the given seconds.
_IMAGE_SHARE = 0.5
_MIN_IMAGE_S = 30.0
_MIN_LOOP_S = 30.0


@dataclass
class _Session:
    """Everything the epoch loop works with, built once by :func:`fit`."""

    out: Path
    config: TrainConfig
    ctx: ddp.DistContext
    step_fn: torch.nn.Module  # FlowMatchingStep, wrapped in DDP under torchrun
    parts: Trainables  # model, EMA, optimiser, (batch, noise) generators
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (n, K, D), (n, K), (n, G)
    steps_per_epoch: int
    sampler: Any  # PatientDistributedSampler under DDP, None for one process
    validator: Validator | None  # rank 0 with a validation split only
    ckpt: Path
    data_key: dict[str, Any]  # fingerprint of the training data stored in the checkpoint
    budget: float = math.inf  # seconds of training loop (inf: none)
    head_target: torch.Tensor | None = None  # (n, G) z, while the slide head still trains


def process_context(config: TrainConfig) -> ddp.DistContext:
    """The process group of ``torchrun`` (joined here if needed), or one plain process."""
    import torch.distributed as dist

    world = ddp._env_int("WORLD_SIZE", 1)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return ddp.DistContext()  # one process: the device is resolved as before
    return ddp.init_distributed(config.device.value)


def _plan(
    state: LoopState, config: TrainConfig, t_epoch: float, t_val: float, limit: float
) -> None:
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


def _batches(n: int, batch_gen, sampler, state: LoopState, config, spe) -> list[torch.Tensor]:
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


def _train_epoch(s: _Session, state: LoopState) -> tuple[float, float]:
    """One pass over the training slides; returns (mean loss of this rank, last lr)."""
    xs, ss, ys = s.tensors
    batch_gen, noise_gen = s.parts.gens
    model, opt, o = s.parts.model, s.parts.opt, s.config.optim
    plan_steps = state.plan_epochs * s.steps_per_epoch
    s.step_fn.train()
    losses, lr = [], o.lr
    for batch in _batches(xs.shape[0], batch_gen, s.sampler, state, s.config, s.steps_per_epoch):
        idx = batch.to(xs.device)  # (B,)
        lr = set_lr(opt, state.step, plan_steps, s.config)
        drop = model.draw_dropout(idx.numel(), generator=noise_gen)  # (B,) always passed
        head = None if s.head_target is None else s.head_target[idx]  # (B, G)
        with autocast(xs.device):
            loss = s.step_fn(
                xs[idx], ss[idx], drop, ys[idx], generator=noise_gen, head_target=head
            )  # ()
        if not torch.isfinite(loss):
            raise RnafmError(
                f"the training loss is {float(loss)} at step {state.step} (epoch {state.epoch}); "
                "lower optim.lr (e.g. --lr 3e-4), check the features and expression for extreme "
                "values, and restart with --no-resume."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        ema_update(s.parts.ema, model, o.ema_decay, state.step)
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
        Further cap, in seconds from now, on this session's training (``rnafm.train`` passes
        what is left of ``optim.max_minutes`` after loading the data); not part of the config,
        so a resumed run is not refused for it.

    Notes
    -----
    Under a time budget (``optim.max_minutes`` or ``time_limit_s``) the ridge prior and the
    image-path regression of this call count against it: the image path stops once it has
    used half of what is left when it starts, and the flow loop gets the rest (at least 30 s
    each; an epoch and a validation always run). Calibration and the prior refit come on top.

    Returns
    -------
    Path
        The run directory.
    """
    t_fit = time.monotonic()
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
    targets, y_model = _targets_and_run_files(out, train, val, y_tr, tokens, config, ctx)
    validator = None
    if val is not None and ctx.is_main:  # validation runs on rank 0 only
        validator = Validator(
            val, aligned_expression(val, genes, "validation"), targets, config, device
        )
    s = _session(out, train, val, tokens, y_model, validator, config, ctx, device)
    state = _start(s, time_limit_s, targets.norm.forward(y_tr), t_fit)
    _run_loop(s, state)
    if not ctx.is_main:
        ddp.barrier(ctx)  # wait for rank 0 to select, calibrate and write the run
        return out
    try:
        cal = _finish(out, s.parts.ema, validator, config, device, state, train, y_model)
        if (
            validator is not None
            and targets.prior is not None
            and config.prior.refit_with_validation
        ):
            _refit_prior(out, targets, train, y_tr, validator, config)
        if config.tile_head.fit_tile_head:
            _fit_tile_head(out, train, y_tr, validator, targets, config)
    finally:
        ddp.barrier(ctx)
    return cal


def _fit_tile_head(out: Path, train, y_tr, validator, targets, config) -> None:
    """Fit the tile head on the training clusters (its validation PCC is recorded); save it as
    tile_head.safetensors and its record in val_metrics.json. Skipped when the run has one."""
    from rnafm.training.run import TILE_HEAD
    from rnafm.training.tile_head import fit_tile_head

    if (out / TILE_HEAD).is_file():
        return
    val = None
    if validator is not None:
        val = (validator.val.clusters, validator.val.sizes, validator.y)
    head, record = fit_tile_head(
        train.clusters,
        train.sizes,
        y_tr,
        std=targets.norm.std,
        val=val,
        config=config.tile_head,
        seed=config.seed,
    )
    save_weights(head, out / TILE_HEAD)
    metrics = read_json(out / VAL_METRICS) if (out / VAL_METRICS).is_file() else {}
    write_json(out / VAL_METRICS, {**metrics, "tile_head": record})
    logger.info("tile head: %s", record)


def _targets_and_run_files(out: Path, train, val, y_tr, tokens, config: TrainConfig, ctx):
    """Model-space targets (rank 0 computes, all receive) and the run's genes/tokens/config."""
    prepared = prepare_targets(train, y_tr, config) if ctx.is_main else None
    targets, y_model = ddp.broadcast_object(prepared, ctx)  # (n, G) model-space targets
    n, k, d = train.clusters.shape
    if ctx.is_main:
        targets.save(out)
        write_json(out / GENES, list(tokens.genes))
        write_json(out / TOKENS, tokens.to_dict())
        write_config(
            out,
            config.model_dump(mode="json"),
            feature_dim=int(d),
            n_clusters=int(k),
            n_genes=len(tokens.genes),
            n_train=int(n),
            n_val=0 if val is None else len(val.slide_ids),
            **data_record(train),
        )
    return targets, y_model


def _session(out, train, val, tokens, y_model, validator, config, ctx, device) -> _Session:
    """Model, EMA, optimiser, generators, batching and data on ``device``."""
    from rnafm.model import build_model
    from rnafm.training.step import FlowMatchingStep

    n, k, d = train.clusters.shape
    model = build_model(tokens, feature_dim=d, n_clusters=k, config=config.model).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    # wrapped in DDP by _start, once the image path is set
    step_fn = FlowMatchingStep(model, config.time_sampling)
    opt = make_optimizer(model, config)
    gens = (
        torch.Generator().manual_seed(config.seed),
        torch.Generator(device=device).manual_seed(ddp.rank_seed(config.seed + 1, ctx)),
    )
    o = config.optim
    spe = math.ceil(n / o.batch_size)
    sampler = None
    if ctx.distributed:  # global batch split across ranks; slides sharded by patient
        per_rank = max(1, o.batch_size // ctx.world_size)
        sampler = ddp.PatientDistributedSampler(
            list(train.patient_ids), ctx=ctx, seed=config.seed, batch_size=per_rank
        )
        spe = math.ceil(len(sampler) / per_rank)
    data_key = {
        "train": list(train.slide_ids),
        "val": [] if val is None else list(val.slide_ids),
        "shape": [int(n), int(k), int(d), len(tokens.genes)],
    }
    tensors = (
        torch.as_tensor(train.clusters, device=device),  # (n, K, D)
        torch.as_tensor(train.sizes, device=device),  # (n, K)
        torch.as_tensor(y_model, device=device),  # (n, G)
    )
    return _Session(
        out=out, config=config, ctx=ctx, step_fn=step_fn, parts=Trainables(model, ema, opt, gens),
        tensors=tensors, steps_per_epoch=spe, sampler=sampler, validator=validator,
        ckpt=out / CHECKPOINT, data_key=data_key,
    )  # fmt: skip


def _start(s: _Session, time_limit_s: float | None, z_train: np.ndarray, t_fit: float) -> LoopState:
    """Resume from the checkpoint (or clear a stale run, then train the image path) and fix
    the time budget; ``t_fit`` (``time.monotonic()`` when :func:`fit` began) dates the time
    this session already spent, which counts against the budget."""
    config, ctx, out = s.config, s.ctx, s.out
    state = LoopState(plan_epochs=config.optim.epochs)
    resume = ddp.broadcast_object(config.resume and s.ckpt.is_file(), ctx)  # rank 0's view
    limit = config.optim.max_minutes * 60 if config.optim.max_minutes else math.inf
    if resume:
        state = load_checkpoint(s.ckpt, s.parts, config, s.data_key, ctx)
        if ctx.is_main:
            truncate_history(out, state.step)
        logger.info("resuming %s at epoch %d (step %d)", out, state.epoch, state.step)
    if time_limit_s is not None:
        limit = min(limit, state.elapsed + time_limit_s)  # in loop seconds (state.elapsed)
    if not resume:
        if ctx.is_main:
            for stale in (HISTORY, WEIGHTS, CALIBRATION, SPREAD, VAL_METRICS, CHECKPOINT):
                (out / stale).unlink(missing_ok=True)
        left = limit - (time.monotonic() - t_fit)  # after the prior
        deadline = None
        if math.isfinite(left):
            deadline = time.monotonic() + max(_IMAGE_SHARE * left, _MIN_IMAGE_S)
        state.image_path = _train_image_path(s, z_train, deadline)
    model = s.parts.model
    if model.slide_head is not None and config.image.freeze_image and state.image_path:
        model.image.requires_grad_(False)
        model.slide_head.requires_grad_(False)
    elif model.slide_head is not None:  # the head keeps learning beside the flow
        s.head_target = torch.as_tensor(z_train, dtype=torch.float32, device=s.tensors[0].device)
    s.step_fn = ddp.wrap_model(s.step_fn, ctx)  # DDP sees only the weights still trained
    spent = time.monotonic() - t_fit  # this session's prior and image path
    s.budget = max(limit - spent, state.elapsed + _MIN_LOOP_S)
    if math.isfinite(limit):
        logger.info(
            "time budget: %.0f s of training loop left (%.0f s spent on the prior and image path)",
            s.budget - state.elapsed,
            spent,
        )
    return state


def _train_image_path(s: _Session, z_train: np.ndarray, deadline: float | None) -> dict | None:
    """Regress z on the slides with the image encoder + slide head (rank 0; all ranks get the
    weights), and copy them into the EMA; no new epoch after ``deadline`` (``time.monotonic()``,
    None: no limit). None for a model without a slide head."""
    from rnafm.training.image_path import fit_image_path, image_state

    model, ctx = s.parts.model, s.ctx
    if model.slide_head is None or s.config.image.head_epochs == 0:
        return None
    result = None
    if ctx.is_main:
        val = None
        if s.validator is not None:
            v, dev = s.validator.val, s.tensors[0].device
            val = (
                torch.as_tensor(v.clusters, device=dev),  # (m, K, D)
                torch.as_tensor(v.sizes, device=dev),  # (m, K)
                s.validator.targets.norm.forward(s.validator.y),  # (m, G)
            )
        z = torch.as_tensor(z_train, dtype=torch.float32, device=s.tensors[0].device)  # (n, G)
        info = fit_image_path(
            model,
            s.tensors[0],
            s.tensors[1],
            z,
            val=val,
            config=s.config,
            seed=s.config.seed,
            deadline=deadline,
        )
        weights = {k: v.cpu() for k, v in image_state(model).items()}
        result = (info, weights)
        logger.info("image path trained: %s", info)
    info, weights = ddp.broadcast_object(result, ctx)
    model.load_state_dict(weights, strict=False)
    s.parts.ema.load_state_dict(model.state_dict())
    return info


def _run_loop(s: _Session, state: LoopState) -> None:
    """Epochs, validations and checkpoints until early stop, budget or plan end.

    Under DDP every rank trains; rank 0 validates, writes, takes every decision (plan, early
    stop, time budget, checkpoint due) and broadcasts its state, so the ranks never disagree.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    start = time.perf_counter() - state.elapsed
    last_ckpt = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=not s.ctx.is_main) as bar:
        task = bar.add_task("training", total=state.plan_epochs, completed=state.epoch)
        while not state.finished:
            t0 = time.perf_counter()
            loss, lr = _train_epoch(s, state)
            loss = ddp.all_reduce_mean(loss, s.ctx)  # mean over ranks (one process: unchanged)
            t_epoch = time.perf_counter() - t0
            record = {"epoch": state.epoch, "step": state.step, "loss": loss, "lr": lr}
            t_val = _validate(s, state, record)
            if "val_pcc" in record:
                bar.update(task, description=f"training (val PCC {record['val_pcc']:.3f})")
            state.elapsed = time.perf_counter() - start
            if not state.planned:
                _plan(state, s.config, t_epoch, t_val, s.budget)
            record["time_s"] = round(state.elapsed, 2)
            if s.ctx.is_main:
                append_history(s.out, record)
            bar.update(task, completed=state.epoch, total=state.plan_epochs)
            if _decide(s, state, time.perf_counter() - last_ckpt > 60 or "val_pcc" in record):
                save_checkpoint(s.ckpt, s.parts, state, s.config, s.data_key, s.ctx)
                last_ckpt = time.perf_counter()


def _validate(s: _Session, state: LoopState, record: dict[str, Any]) -> float:
    """Score the EMA when due (rank 0), keep the best weights; returns the seconds it took."""
    due = state.planned and (state.epoch % state.every == 0 or state.epoch >= state.plan_epochs)
    if s.validator is None or (state.planned and not due):
        return 0.0
    o = s.config.optim
    t1 = time.perf_counter()
    scores = s.validator.score(s.parts.ema)
    t_val = time.perf_counter() - t1
    record.update(scores, val_prior_pcc=s.validator.prior_pcc)
    if scores["val_pcc"] > state.best + o.min_delta:
        state.best, state.best_step, state.best_epoch = scores["val_pcc"], state.step, state.epoch
        state.bad = 0
        save_weights(s.parts.ema, s.out / WEIGHTS)
    elif state.planned and state.step >= o.warmup_steps:
        state.bad += 1
    return t_val


def _decide(s: _Session, state: LoopState, periodic: bool) -> bool:
    """Finished? Save a checkpoint now? Rank 0 decides for all under DDP."""
    o = s.config.optim
    state.finished = (
        state.bad >= o.patience or state.elapsed >= s.budget or state.epoch >= state.plan_epochs
    )
    save = state.finished or periodic
    if s.ctx.distributed:  # times and scores differ per rank
        shared = ddp.broadcast_object((asdict(state), save), s.ctx)
        for key, value in shared[0].items():
            setattr(state, key, value)
        save = shared[1]
    return save


def _refit_prior(out: Path, targets, train, y_tr, validator: Validator, config) -> None:
    """Refit the ridge prior on training + validation slides and save it (prior.npz)."""
    from rnafm.training.prior import refit_ridge

    val = validator.val
    x = targets.prior.pool(
        np.concatenate([train.clusters, val.clusters]), np.concatenate([train.sizes, val.sizes])
    )  # (n + m, D) or (n + m, C)
    y = np.concatenate([y_tr, validator.y])  # (n + m, G) log2(x+1)
    targets.prior = refit_ridge(targets.prior, x, targets.norm.forward(y), config.prior.alphas)
    targets.save(out)
    logger.info("ridge prior refitted on %d training + validation slides", len(x))


def _finish(out, ema, validator, config, device, state, train, y_model) -> Path:
    """Select the best EMA weights, calibrate, write val_metrics.json and calibration.json.

    ``y_model`` (n, G): the flow's training targets (with a ridge prior, the cross-fitted
    residuals that the spread's difficulty term learns from)."""
    from safetensors.torch import load_file

    from rnafm.cohort.samples import shared_expression_of

    if validator is None or not (out / WEIGHTS).is_file():
        save_weights(ema, out / WEIGHTS)
        cal = uncalibrated(
            config,
            "no validation split: Gaussian interval, not calibrated",
            head=getattr(ema, "slide_head", None) is not None,
        )
    else:
        ema.load_state_dict(load_file(str(out / WEIGHTS), device=str(device)))
        cal, spread = validator.calibrate(ema, train, y_model)
        spread.save(out / SPREAD)
    shared = shared_expression_of(train, None if validator is None else validator.val)
    cal["shared_expression"] = None if shared is None else shared.to_dict()
    write_json(out / CALIBRATION, cal)
    prior = None if validator is None else validator.targets.prior
    metrics = {
        "val_pcc": None if validator is None else state.best,
        "val_prior_pcc": None if validator is None else validator.prior_pcc,
        "prior": None if prior is None else prior.describe(),
        "best_step": state.best_step,
        "best_epoch": state.best_epoch,
        "steps": state.step,
        "epochs": state.epoch,
        "train_seconds": round(state.elapsed, 1),
        "n_val": 0 if validator is None else len(validator.val.slide_ids),
        "image_path": state.image_path,
        **{
            k: cal[k]
            for k in (
                "blend",
                "head_weight",
                "head_weight_slope",
                "spread_power",
                "pcc_mean",
                "pcc_by_component",
                "coverage_raw",
                "coverage_calibrated",
                "coverage_crossfit",
            )
            if k in cal
        },
    }
    write_json(out / VAL_METRICS, metrics)
    logger.info("trained %d steps in %.0f s; %s", state.step, state.elapsed, metrics)
    return out
