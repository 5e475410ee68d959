"""Sampling expression from the flow with classifier-free guidance."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from rnafm.flow.options import Solver
from rnafm.flow.solvers import VelocityFn, integrate
from rnafm.model.condition import Condition

__all__ = ["SamplerConfig", "guided_velocity", "sample"]


class SamplerConfig(BaseModel):
    """How draws are integrated from noise to expression."""

    model_config = ConfigDict(extra="forbid")

    solver: Solver = Field(Solver.EULER, description="ODE solver.")
    steps: int = Field(20, ge=1, le=1000, description="Fixed steps (ignored by dopri5).")
    guidance: float = Field(
        2.0, ge=0.0, description="Classifier-free guidance scale w (1 = conditional only)."
    )
    atol: float = Field(1e-5, gt=0, description="Absolute tolerance of dopri5.")
    rtol: float = Field(1e-5, gt=0, description="Relative tolerance of dopri5.")


def guided_velocity(
    model: torch.nn.Module, cond: Condition, null: Condition, guidance: float
) -> VelocityFn:
    """Velocity closure v(t, x) = v_null + w (v_cond - v_null), one batched forward per call.

    The conditions are concatenated here, once; each call runs the model on [x; x].
    """
    b = cond.batch_size
    if guidance == 1.0:

        def v_cond(t: Tensor, x: Tensor) -> Tensor:
            return model(x, t.expand(b), cond)  # (B, G)

        return v_cond
    if null.batch_size == 1 and b > 1:
        null = null.repeat(b)
    if null.batch_size != b:
        raise ValueError(f"null condition has {null.batch_size} rows, expected 1 or {b}")
    both = Condition.cat([cond, null])  # (2B, ...)

    def v_guided(t: Tensor, x: Tensor) -> Tensor:
        v = model(torch.cat([x, x], 0), t.expand(2 * b), both)  # (2B, G)
        vc, vn = v[:b], v[b:]  # (B, G) each
        return vn + guidance * (vc - vn)  # (B, G)

    return v_guided


def sample(
    model: torch.nn.Module,
    cond: Condition,
    null: Condition,
    *,
    n_genes: int,
    config: SamplerConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one sample per condition row: x0 ~ N(0, I) integrated to t = 1.

    Parameters
    ----------
    model
        Velocity field ``model(x (B, G), t (B,), cond) -> (B, G)``.
    cond, null
        Slide condition (B rows; use ``cond.repeat(n)`` for n draws per slide) and the null
        condition (B rows or 1 row), both computed once by the caller.
    n_genes
        G.
    config
        Solver, steps, guidance, tolerances.
    generator
        Seeds the starting noise.

    Returns
    -------
    Tensor
        (B, G) samples.
    """
    vec = cond.vec
    x0 = torch.randn(
        (cond.batch_size, n_genes), generator=generator, device=vec.device, dtype=vec.dtype
    )  # (B, G)
    f = guided_velocity(model, cond, null, config.guidance)
    with torch.no_grad():
        return integrate(
            f, x0, solver=config.solver, steps=config.steps, atol=config.atol, rtol=config.rtol
        )  # (B, G)
