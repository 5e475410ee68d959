"""Flow-matching training objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rnafm.flow.options import TimeSampling
from rnafm.flow.path import LinearPath

if TYPE_CHECKING:
    from rnafm.model import Condition

__all__ = ["flow_matching_loss"]


def flow_matching_loss(
    model: torch.nn.Module,
    x1: Tensor,
    cond: Condition,
    *,
    generator: torch.Generator | None = None,
    path: LinearPath | None = None,
    x0: Tensor | None = None,
    t: Tensor | None = None,
    time_sampling: TimeSampling = TimeSampling.UNIFORM,
) -> Tensor:
    """Mean squared error between the model velocity and the path's target velocity.

    Parameters
    ----------
    model
        Callable ``model(x_t (B, G), t (B,), cond) -> (B, G)``.
    x1
        Data (B, G).
    cond
        Condition for the batch (already with any condition dropout applied).
    generator
        Draws x0 ~ N(0, I) first, then t ~ U(0, 1), in this order.
    path
        Probability path (default :class:`LinearPath`).
    x0, t
        Use these instead of drawing them.
    time_sampling
        How t is drawn: ``uniform``, or ``noise_end`` (t = u ** 2 of the same uniform u, so
        the steps near the noise end, where the velocity is the condition's mean of the data,
        weigh more).

    Returns
    -------
    Tensor
        Scalar loss, mean over batch and genes.
    """
    path = path or LinearPath()
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)  # (B, G)
    if t is None:
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)  # (B,)
        if TimeSampling(time_sampling) is TimeSampling.NOISE_END:
            t = t * t
    x_t, u_t = path.sample(x0, x1, t)  # (B, G) each
    v = model(x_t, t, cond)  # (B, G)
    return torch.mean((v - u_t) ** 2)
