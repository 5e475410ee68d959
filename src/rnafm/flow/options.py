"""String options of sampling (light module: no torch, the CLI builds its choices from it)."""

from __future__ import annotations

from enum import Enum

__all__ = ["Solver", "TimeSampling"]


class Solver(str, Enum):
    """ODE solver for sampling."""

    EULER = "euler"
    HEUN = "heun"
    MIDPOINT = "midpoint"
    DOPRI5 = "dopri5"


class TimeSampling(str, Enum):
    """How the flow-matching loss draws its time step t (0: noise, 1: data)."""

    UNIFORM = "uniform"  # t ~ U(0, 1)
    NOISE_END = "noise_end"  # t = u ** 2, u ~ U(0, 1): density 1 / (2 sqrt(t)), towards the noise
