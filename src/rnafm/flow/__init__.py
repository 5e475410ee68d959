"""Flow matching: linear path, objective, ODE solvers, guided sampling and batched draws.

Names are imported lazily; importing this package does no work (``rnafm.flow.options`` holds
the torch-free solver enum).
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = [
    "SOLVERS",
    "LinearPath",
    "SamplerConfig",
    "Solver",
    "TimeSampling",
    "draw_samples",
    "flow_matching_loss",
    "guided_velocity",
    "integrate",
    "sample",
    "slide_embeddings",
    "slide_estimates",
    "summarise",
]

_WHERE = {
    "SOLVERS": "solvers",
    "LinearPath": "path",
    "SamplerConfig": "sampling",
    "Solver": "options",
    "TimeSampling": "options",
    "draw_samples": "draws",
    "flow_matching_loss": "objective",
    "guided_velocity": "sampling",
    "integrate": "solvers",
    "sample": "sampling",
    "slide_embeddings": "draws",
    "slide_estimates": "draws",
    "summarise": "draws",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
