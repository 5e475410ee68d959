"""Scaling out: DistributedDataParallel helpers and Dask-distributed per-slide work.

``rnafm.distributed.ddp`` wraps ``torch.distributed`` for ``torchrun`` launches (one process
per GPU, any number of nodes; a plain single process when not launched by torchrun).
``rnafm.distributed.dask_runner`` runs one task per slide on a Dask cluster (a LocalCluster,
any scheduler address, or a dask-jobqueue SLURMCluster through its client) and gathers
per-slide failures into a report instead of stopping.

Names are imported lazily so ``import rnafm.distributed`` loads neither torch nor dask.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DistContext",
    "FlowMatchingStep",
    "PatientDistributedSampler",
    "Scheduler",
    "SlideResult",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "failure_records",
    "init_distributed",
    "in_sync",
    "load_checkpoint",
    "main_process_first",
    "preprocess_distributed",
    "rank_seed",
    "run_per_slide",
    "save_checkpoint",
    "shutdown",
    "unwrap_model",
    "wrap_model",
    "write_on_main",
]

_WHERE = {name: "ddp" for name in __all__}
_WHERE["FlowMatchingStep"] = "step"
_WHERE["preprocess_distributed"] = "preprocess"
_WHERE.update(
    {
        name: "dask_runner"
        for name in ("Scheduler", "SlideResult", "failure_records", "run_per_slide")
    }
)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module = importlib.import_module(f"rnafm.distributed.{_WHERE[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rnafm.distributed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
