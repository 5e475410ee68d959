"""Flow matching: linear path, objective, ODE solvers, guided sampling and batched draws."""

from rnafm.flow.draws import draw_samples, summarise
from rnafm.flow.objective import flow_matching_loss
from rnafm.flow.path import LinearPath
from rnafm.flow.sampling import SamplerConfig, guided_velocity, sample
from rnafm.flow.solvers import SOLVERS, Solver, integrate

__all__ = [
    "SOLVERS",
    "LinearPath",
    "SamplerConfig",
    "Solver",
    "draw_samples",
    "flow_matching_loss",
    "guided_velocity",
    "integrate",
    "sample",
    "summarise",
]
