"""Probability paths for flow matching."""

from __future__ import annotations

from torch import Tensor

__all__ = ["LinearPath"]


class LinearPath:
    """Straight path from noise x0 to data x1 (rectified flow / conditional OT).

    x_t = t x1 + (1 - t) x0,   u_t = d x_t / dt = x1 - x0.
    """

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Point x_t and target velocity u_t for x0, x1 (B, ...) at times t (B,)."""
        tt = t.reshape(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)  # (B, 1, ...)
        x_t = tt * x1 + (1 - tt) * x0  # (B, ...)
        u_t = x1 - x0  # (B, ...)
        return x_t, u_t
