"""ODE integrators from t=0 to t=1: fixed-step Euler, Heun, midpoint; adaptive dopri5."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rnafm.flow.options import Solver

__all__ = ["SOLVERS", "Solver", "VelocityFn", "integrate"]

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (t scalar tensor, x (B, G)) -> (B, G)


def _grid(x: Tensor, steps: int) -> Tensor:
    return torch.linspace(0.0, 1.0, steps + 1, device=x.device, dtype=x.dtype)  # (steps+1,)


def _euler(f: VelocityFn, x: Tensor, steps: int, atol: float, rtol: float) -> Tensor:
    ts = _grid(x, steps)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        x = x + (t1 - t0) * f(t0, x)  # (B, G)
    return x


def _heun(f: VelocityFn, x: Tensor, steps: int, atol: float, rtol: float) -> Tensor:
    ts = _grid(x, steps)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        dt = t1 - t0
        k1 = f(t0, x)  # (B, G)
        k2 = f(t1, x + dt * k1)  # (B, G)
        x = x + 0.5 * dt * (k1 + k2)  # (B, G)
    return x


def _midpoint(f: VelocityFn, x: Tensor, steps: int, atol: float, rtol: float) -> Tensor:
    ts = _grid(x, steps)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        dt = t1 - t0
        k1 = f(t0, x)  # (B, G)
        x = x + dt * f(t0 + 0.5 * dt, x + 0.5 * dt * k1)  # (B, G)
    return x


def _dopri5(f: VelocityFn, x: Tensor, steps: int, atol: float, rtol: float) -> Tensor:
    from torchdiffeq import odeint

    span = torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype)  # (2,)
    return odeint(f, x, span, method="dopri5", atol=atol, rtol=rtol)[-1]  # (B, G)


SOLVERS: dict[Solver, Callable[[VelocityFn, Tensor, int, float, float], Tensor]] = {
    Solver.EULER: _euler,
    Solver.HEUN: _heun,
    Solver.MIDPOINT: _midpoint,
    Solver.DOPRI5: _dopri5,
}


def integrate(
    f: VelocityFn,
    x0: Tensor,
    *,
    solver: Solver | str = Solver.EULER,
    steps: int = 20,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> Tensor:
    """Integrate dx/dt = f(t, x) from x(0) = x0 to t = 1.

    ``steps`` is the number of fixed steps (Euler: ``steps`` velocity evaluations; Heun and
    midpoint: 2 per step); dopri5 ignores it and adapts its steps to ``atol``/``rtol``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return SOLVERS[Solver(solver)](f, x0, steps, atol, rtol)
