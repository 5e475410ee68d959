"""Flow-matching maths: path, loss, solvers, guidance, reproducibility."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from rnafm.flow import (
    SOLVERS,
    LinearPath,
    SamplerConfig,
    Solver,
    flow_matching_loss,
    integrate,
    sample,
)
from rnafm.model import Condition


class AffineField(nn.Module):
    """v(x, t | c) = a + c - x with c the condition vector's first G entries (closed-form flow)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        assert t.shape == (x.shape[0],)
        self.calls.append(x.shape[0])
        return self.a + cond.vec[:, : x.shape[1]] - x


def exact_affine(x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Solution at t=1 of dx/dt = target - x: target + (x0 - target) e^-1."""
    return target + (x0 - target) * math.exp(-1.0)


@pytest.mark.parametrize(
    ("t", "a", "b"), list(itertools.product([0.0, 0.3, 0.5, 1.0], [-2, 1], [0, 3]))
)
def test_linear_path_closed_form(t, a, b):
    x0 = torch.full((3, 5), float(a))
    x1 = torch.full((3, 5), float(b))
    x_t, u_t = LinearPath().sample(x0, x1, torch.full((3,), t))
    torch.testing.assert_close(x_t, torch.full((3, 5), t * b + (1 - t) * a))
    torch.testing.assert_close(u_t, torch.full((3, 5), float(b - a)))


def test_linear_path_per_row_times_and_derivative():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen)
    t = torch.tensor([0.0, 0.25, 0.6, 1.0])
    x_t, u_t = LinearPath().sample(x0, x1, t)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[3], x1[3])
    eps = 1e-3
    x_e, _ = LinearPath().sample(x0, x1, t + eps)
    torch.testing.assert_close((x_e - x_t) / eps, u_t, rtol=1e-3, atol=1e-3)


def test_loss_equals_manual_mse():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, generator=gen)
    model = AffineField(a)
    x1 = torch.randn(5, 7, generator=gen)
    cond = Condition(torch.randn(5, 9, generator=gen))
    loss = flow_matching_loss(model, x1, cond, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 7, generator=g)
    t = torch.rand(5, generator=g)
    x_t = t[:, None] * x1 + (1 - t[:, None]) * x0
    manual = ((a + cond.vec[:, :7] - x_t - (x1 - x0)) ** 2).sum() / 35
    torch.testing.assert_close(loss, manual)
    explicit = flow_matching_loss(model, x1, cond, x0=x0, t=t)
    torch.testing.assert_close(explicit, manual)


def test_noise_end_time_sampling_squares_the_uniform_draw():
    class TimeEcho(torch.nn.Module):  # velocity = t, so the loss reveals the t drawn
        def forward(self, x_t, t, cond):
            return torch.zeros_like(x_t) + t[:, None]

    cond = Condition(torch.zeros(6, 2))
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(6, 3, generator=g)  # the objective draws x0 first, then u
    u = torch.rand(6, generator=g)
    for mode, t in (("uniform", u), ("noise_end", u**2)):
        # x1 = x0: the target velocity is 0, so the loss is mean(t^2)
        loss = flow_matching_loss(TimeEcho(), x0, cond, generator=torch.Generator().manual_seed(5),
                                  time_sampling=mode)  # fmt: skip
        torch.testing.assert_close(loss, torch.mean(t**2))
    big = torch.zeros(20000, 1)
    loss = flow_matching_loss(TimeEcho(), big, Condition(torch.zeros(20000, 1)), x0=big,
                              generator=torch.Generator().manual_seed(0),
                              time_sampling="noise_end")  # fmt: skip
    assert abs(loss.item() - 1 / 5) < 0.01  # E[t^2] = E[u^4] = 1/5 (uniform: 1/3)


def test_euler_one_step_is_x0_plus_v():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, generator=gen)
    model = AffineField(a)
    cond = Condition(torch.randn(3, 6, generator=gen))
    out = sample(
        model,
        cond,
        cond,
        n_genes=6,
        config=SamplerConfig(solver="euler", steps=1, guidance=1.0),
        generator=torch.Generator().manual_seed(7),
    )
    x0 = torch.randn(3, 6, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, x0 + (a + cond.vec - x0))


@pytest.mark.parametrize(
    ("solver", "steps", "tol"),
    [("euler", 400, 2e-3), ("heun", 40, 1e-4), ("midpoint", 40, 1e-4), ("dopri5", 1, 1e-5)],
)
def test_solvers_integrate_linear_ode(solver, steps, tol):
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    x0 = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    x1 = integrate(lambda t, x: target - x, x0, solver=solver, steps=steps, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(x1, exact_affine(x0, target), rtol=0, atol=tol)


def test_solver_orders():
    """Halving the step cuts Euler's error ~2x and Heun's/midpoint's ~4x."""
    x0 = torch.ones(1, 1, dtype=torch.float64)
    exact = exact_affine(x0, torch.zeros_like(x0))

    def err(solver, steps):
        return (integrate(lambda t, x: -x, x0, solver=solver, steps=steps) - exact).abs().item()

    assert 1.8 < err("euler", 10) / err("euler", 20) < 2.2
    for s in ("heun", "midpoint"):
        assert 3.6 < err(s, 10) / err(s, 20) < 4.4


def test_registry_covers_every_solver():
    assert set(SOLVERS) == set(Solver)


def test_guidance_one_is_conditional_only_and_w_combines():
    gen = torch.Generator().manual_seed(4)
    model = AffineField(torch.zeros(5))
    cond = Condition(torch.randn(3, 5, generator=gen))
    null = Condition(torch.randn(1, 5, generator=gen))
    cfg = dict(solver="heun", steps=3)
    only = sample(
        model,
        cond,
        cond,
        n_genes=5,
        config=SamplerConfig(guidance=1.0, **cfg),
        generator=torch.Generator().manual_seed(0),
    )
    w1 = sample(
        model,
        cond,
        null,
        n_genes=5,
        config=SamplerConfig(guidance=1.0, **cfg),
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(w1, only)
    # v = v_null + w (v_cond - v_null) = (null + w (cond - null)) - x: an affine field again
    w = 2.5
    model.calls.clear()
    guided = sample(
        model,
        cond,
        null,
        n_genes=5,
        config=SamplerConfig(guidance=w, **cfg),
        generator=torch.Generator().manual_seed(0),
    )
    assert model.calls == [6] * 6  # one batched [cond; null] forward per evaluation
    mixed = Condition(null.vec + w * (cond.vec - null.vec))
    ref = sample(
        model,
        mixed,
        mixed,
        n_genes=5,
        config=SamplerConfig(guidance=1.0, **cfg),
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(guided, ref)


@pytest.mark.parametrize("solver", list(Solver))
def test_generator_seed_reproduces(solver):
    model = AffineField(torch.zeros(4))
    cond = Condition(torch.randn(2, 4))
    cfg = SamplerConfig(solver=solver, steps=2, guidance=1.5)
    a = sample(model, cond, cond, n_genes=4, config=cfg, generator=torch.Generator().manual_seed(9))
    b = sample(model, cond, cond, n_genes=4, config=cfg, generator=torch.Generator().manual_seed(9))
    c = sample(model, cond, cond, n_genes=4, config=cfg, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampler_config_rejects_bad_values():
    with pytest.raises(ValueError):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError):
        SamplerConfig(solver="rk4")
    with pytest.raises(ValueError):
        SamplerConfig(extra=1)
