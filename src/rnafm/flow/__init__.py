"""Flow matching: linear path, objective, ODE solvers and guided sampling."""

from rnafm.flow.objective import flow_matching_loss
from rnafm.flow.path import LinearPath
from rnafm.flow.sampling import SamplerConfig, guided_velocity, sample
from rnafm.flow.solvers import SOLVERS, Solver, integrate

__all__ = [
    "SOLVERS",
    "LinearPath",
    "SamplerConfig",
    "Solver",
    "flow_matching_loss",
    "guided_velocity",
    "integrate",
    "sample",
]
