"""String options of sampling (light module: no torch, the CLI builds its choices from it)."""

from __future__ import annotations

from enum import Enum

__all__ = ["Solver"]


class Solver(str, Enum):
    """ODE solver for sampling."""

    EULER = "euler"
    HEUN = "heun"
    MIDPOINT = "midpoint"
    DOPRI5 = "dopri5"
