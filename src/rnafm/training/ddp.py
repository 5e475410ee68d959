"""DistributedDataParallel for rnafm: launch context, patient-grouped sampling, one writer.

The same training code runs as one plain process (``rnafm train ...``) and as N processes on
M nodes (``torchrun --nnodes M --nproc_per_node N -m rnafm train ...``):

>>> ctx = init_distributed("auto")            # doctest: +SKIP
>>> model = wrap_model(step_module.to(ctx.device), ctx)   # DDP when world_size > 1
>>> sampler = PatientDistributedSampler(data.patient_ids, ctx=ctx, seed=seed, batch_size=32)
>>> for epoch in ...: sampler.set_epoch(epoch); ...
>>> save_checkpoint(state, run / "last.pt", ctx)   # rank 0 writes, atomically, once
>>> shutdown()

Consistency rules the training loop follows:

- DDP averages gradients across ranks inside ``backward``; after ``optimizer.step()`` every rank
  holds the same parameters. The EMA is updated from those synchronised parameters on every rank
  (``unwrap_model(model).parameters()``), so it is identical everywhere without communication.
- Only rank 0 writes checkpoints, logs, history and run files (``write_on_main``,
  ``save_checkpoint``); writes are atomic (temporary file, then rename), so a node failure never
  leaves a half-written checkpoint. Every rank waits until the write is done.
- Resume loads the checkpoint on every rank (``load_checkpoint``) with ``map_location`` set to
  the rank's device; the sampler's epoch comes from the checkpoint, so the data order resumes too.
- DDP synchronises gradients only through the wrapped module's ``forward``: wrap a module whose
  ``forward`` does the whole differentiable step (condition encoding and velocity), not a model
  whose methods are called one by one.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from rnafm._io import atomic_path
from rnafm.errors import InputError
from rnafm.training.ddp_sampler import PatientDistributedSampler

__all__ = [
    "Backend",
    "DistContext",
    "PatientDistributedSampler",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "in_sync",
    "init_distributed",
    "load_checkpoint",
    "main_process_first",
    "quiet_non_main",
    "rank_seed",
    "save_checkpoint",
    "shutdown",
    "unwrap_model",
    "wrap_model",
    "write_on_main",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Backend(str, Enum):
    """torch.distributed communication backend."""

    GLOO = "gloo"  # CPU tensors (and the fallback for CPU-only clusters)
    NCCL = "nccl"  # CUDA tensors


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) distributed run."""

    rank: int = 0  # global rank, 0 .. world_size - 1
    local_rank: int = 0  # rank on this node; picks the GPU
    world_size: int = 1  # number of processes over all nodes
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True  # rank 0: the only process that writes files and logs progress
    local_world_size: int = 1  # processes on this node

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        if self.is_main != (self.rank == 0):
            raise ValueError("is_main must be True exactly on rank 0")

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise InputError(
            f"environment variable {name}={raw!r} is not an integer; unset it, or launch "
            "with torchrun, which sets it"
        ) from e


def _resolve_device(device: str | torch.device, local_rank: int) -> torch.device:
    choice = str(device).lower()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu "
                "or --device auto"
            )
        if choice == "cuda":
            n_gpus = torch.cuda.device_count()
            if local_rank >= n_gpus:
                raise InputError(
                    f"local rank {local_rank} has no GPU of its own: {n_gpus} visible on this "
                    f"node; start at most {n_gpus} processes per node (--nproc_per_node {n_gpus})"
                )
            resolved = torch.device("cuda", local_rank)
        else:
            resolved = torch.device(choice)
        torch.cuda.set_device(resolved)
        return resolved
    try:
        return torch.device(choice)
    except RuntimeError as e:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:<index>") from e


def init_distributed(
    device: str | torch.device = "auto",
    backend: str | Backend | None = None,
    *,
    timeout_s: float = 1800.0,
) -> DistContext:
    """Read the launcher's environment and join the process group when there is one.

    Parameters
    ----------
    device
        ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` (the GPU of this process's
        ``LOCAL_RANK``) or ``cuda:<i>``.
    backend
        ``gloo`` or ``nccl``; by default nccl on CUDA and gloo on CPU.
    timeout_s
        Collective timeout (a rank that waits longer for the others fails instead of hanging).

    Returns
    -------
    DistContext
        Single-process context (rank 0 of 1, nothing initialised) unless ``WORLD_SIZE`` > 1,
        as set by ``torchrun``; then ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
        ``MASTER_PORT`` are read and the default process group is initialised.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise InputError(
            f"RANK={rank} and WORLD_SIZE={world} are inconsistent; launch with torchrun"
        )
    resolved = _resolve_device(device, local_rank)
    ctx = DistContext(rank, local_rank, world, resolved, rank == 0, local_world)
    if world == 1:
        return ctx
    chosen = Backend(backend) if backend is not None else None
    if chosen is None:
        chosen = Backend.NCCL if resolved.type == "cuda" else Backend.GLOO
    if chosen is Backend.NCCL and resolved.type != "cuda":
        raise InputError("backend nccl needs CUDA devices; use --device cuda or backend gloo")
    if dist.is_initialized():
        if dist.get_world_size() != world or dist.get_rank() != rank:
            raise RuntimeError("a process group with another rank layout is already initialised")
        return ctx
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise InputError(
            f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch with torchrun "
            "(it sets them) or export them (see the README, 'Scaling out')"
        )
    kwargs: dict[str, Any] = {}
    if resolved.type == "cuda":
        kwargs["device_id"] = resolved  # binds this rank's GPU; eager NCCL init
    dist.init_process_group(
        backend=chosen.value,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )
    logger.info("rank %d/%d on %s joined the %s process group", rank, world, resolved, chosen.value)
    return ctx


def shutdown() -> None:
    """Destroy the default process group if one is initialised (safe to call always)."""
    if dist.is_available() and dist.is_initialized():
        # every rank reaches this point before any tears its gloo threads down; destroying
        # the group while a peer is still in a collective aborts that peer
        dist.barrier()
        gc.collect()  # release DDP reducers still holding gloo work before the group goes
        dist.destroy_process_group()


def end_worker(code: int = 0) -> None:
    """End a finished torchrun worker (``WORLD_SIZE`` > 1) now, with ``code``: output and log
    handlers are flushed, then the process leaves without interpreter finalization (no-op for
    one plain process).

    Call it only after :func:`shutdown`, when everything is written. Finalization destroys
    what is left of the gloo backend's C++ state in no fixed order with the interpreter, and
    intermittently aborts the process (``terminate called without an active exception``,
    SIGABRT) after the run was complete, which torchrun then reports as a failed job.
    """
    import sys

    if _env_int("WORLD_SIZE", 1) <= 1:
        return
    for handler in logging.getLogger().handlers + logging.getLogger("rnafm").handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def quiet_non_main(ctx: DistContext, logger_name: str = "rnafm") -> None:
    """Only rank 0 logs INFO; the others keep warnings and errors."""
    if not ctx.is_main:
        logging.getLogger(logger_name).setLevel(logging.WARNING)


def rank_seed(seed: int, ctx: DistContext) -> int:
    """A per-rank seed for noise, times and condition dropout (model init keeps ``seed``)."""
    return (int(seed) + 1_000_003 * ctx.rank) % (2**63 - 1)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(ctx: DistContext) -> Iterator[None]:
    """Run the body on rank 0 first, then on the other ranks (e.g. to fill a cache once)."""
    if not ctx.is_main:
        barrier(ctx)
        yield
        return
    try:
        yield
    finally:
        barrier(ctx)  # even when rank 0 fails, release the others instead of hanging them


def all_reduce_mean(value: T, ctx: DistContext) -> T:
    """Mean of a tensor or number over ranks; the input is returned unchanged for one process.

    Tensors keep their device and floating dtype (integers come back as float64); numbers
    come back as ``float``.
    """
    if not ctx.distributed:
        return value
    if isinstance(value, torch.Tensor):
        dtype = value.dtype if value.is_floating_point() else torch.float64
        buf = value.detach().to(device=ctx.device, dtype=dtype).clone()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return (buf / ctx.world_size).to(value.device)  # type: ignore[return-value]
    buf = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device)  # (1,)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return float(buf.item()) / ctx.world_size  # type: ignore[return-value]


def broadcast_object(obj: T, ctx: DistContext, *, src: int = 0) -> T:
    """Send a picklable object from rank ``src`` to every rank."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(
        box, src=src, device=ctx.device if ctx.device.type == "cuda" else None
    )
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: T, ctx: DistContext) -> list[T]:
    """Every rank's picklable object, in rank order (e.g. validation predictions)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def in_sync(
    tensors: nn.Module | Sequence[torch.Tensor], ctx: DistContext, *, atol: float = 0.0
) -> bool:
    """True when every rank holds the same values (a fingerprint compared across ranks).

    A cheap check for tests and debugging, e.g. of parameters or EMA weights after a step.
    """
    if not ctx.distributed:
        return True
    items = list(tensors.parameters()) if isinstance(tensors, nn.Module) else list(tensors)
    gen = torch.Generator().manual_seed(0)
    parts = []
    for t in items:
        flat = t.detach().reshape(-1).to("cpu", torch.float64)  # (n,)
        weights = torch.rand(flat.numel(), generator=gen, dtype=torch.float64)  # (n,)
        peak = flat.abs().max() if flat.numel() else flat.new_zeros(())
        parts.append(torch.stack([flat.sum(), (flat * weights).sum(), peak]))
    finger = torch.cat(parts) if parts else torch.zeros(1, dtype=torch.float64)  # (3 * n_tensors,)
    finger = finger.to(ctx.device)
    high, low = finger.clone(), finger.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return bool(((high - low).abs() <= atol).all().item())


def wrap_model(
    model: nn.Module, ctx: DistContext, *, find_unused_parameters: bool = False, **ddp_kwargs: Any
) -> nn.Module:
    """``DistributedDataParallel`` over ``model`` for several ranks; ``model`` itself for one.

    The model is moved to ``ctx.device`` first when wrapped. Rank 0's parameters and buffers
    are broadcast at construction, so every rank starts identical.
    """
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model = model.to(ctx.device)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(
        model,
        device_ids=ids,
        output_device=ids[0] if ids else None,
        find_unused_parameters=find_unused_parameters,
        **ddp_kwargs,
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP (and under ``torch.compile``), for EMA and state dicts."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner) if _is_ddp(inner) else inner
    return getattr(inner, "_orig_mod", inner)


def _is_ddp(model: nn.Module) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(model, DistributedDataParallel)


def write_on_main(
    path: str | os.PathLike[str], writer: Callable[[Path], Any], ctx: DistContext
) -> Path:
    """Rank 0 calls ``writer(tmp)`` and renames ``tmp`` onto ``path``; every rank waits.

    The write happens exactly once per call, whatever the number of ranks. When rank 0's
    writer fails, it re-raises and the other ranks raise ``RuntimeError`` instead of hanging.
    """
    final = Path(path)
    error: str | None = None
    if ctx.is_main:
        try:
            with atomic_path(final) as tmp:
                writer(tmp)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            broadcast_object(error, ctx)
            raise
    error = broadcast_object(error, ctx)
    if error is not None:
        raise RuntimeError(f"rank 0 failed to write {final}: {error}")
    return final


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str], ctx: DistContext) -> Path:
    """``torch.save(state)`` by rank 0 only, atomically; returns after every rank has synced."""
    return write_on_main(path, lambda tmp: torch.save(state, tmp), ctx)


def load_checkpoint(
    path: str | os.PathLike[str], ctx: DistContext, *, weights_only: bool = True
) -> dict[str, Any]:
    """Load a checkpoint on every rank onto its own device (for resume)."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"checkpoint {source} not found; start without --resume or check the run")
    return torch.load(source, map_location=ctx.device, weights_only=weights_only)
