"""Draws from a trained flow model, batched over slides and draws, and their summary statistics.

The slide condition is encoded once per slide (and the null condition once per batch) and
repeated for all draws; the solver then integrates every (slide, draw) row at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from rnafm.flow.sampling import guided_velocity
from rnafm.flow.solvers import integrate
from rnafm.runtime import autocast

__all__ = ["draw_samples", "slide_embeddings", "slide_estimates", "summarise"]


def _noise(
    b: int, draws: int, n_genes: int, *, antithetic: bool, generator, device
) -> torch.Tensor:
    """Starting noise (b*S, G); with ``antithetic`` draws 2j+1 are the negatives of draws 2j."""
    if not antithetic or draws < 2:
        return torch.randn(b * draws, n_genes, generator=generator, device=device)  # (b*S, G)
    half = (draws + 1) // 2
    z = torch.randn(b, half, n_genes, generator=generator, device=device)  # (b, S/2, G)
    pairs = torch.stack([z, -z], dim=2).reshape(b, 2 * half, n_genes)  # (b, 2*S/2, G)
    return pairs[:, :draws].reshape(b * draws, n_genes)  # (b*S, G)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def draw_samples(
    model: torch.nn.Module,
    clusters: np.ndarray,
    sizes: np.ndarray,
    *,
    draws: int,
    sampler,
    seed: int,
    device: torch.device,
    antithetic: bool = True,
    max_rows: int = 512,
    progress=None,
) -> np.ndarray:
    """Sample ``draws`` expression vectors per slide in model space.

    Parameters
    ----------
    model
        An :class:`rnafm.model.RNAFM` (usually the EMA weights), in eval mode.
    clusters, sizes
        float32 (n, K, D) cluster means and (n, K) sizes.
    draws
        Draws per slide.
    sampler
        :class:`rnafm.flow.SamplerConfig`.
    seed
        Seed of the noise; the same seed, data and batch layout give the same draws.
    antithetic
        Draw the starting noise in pairs (z, -z): each draw is still a draw from the model,
        but the noise cancels in the mean of the pairs, so the predictive mean of few draws is
        much less noisy.
    max_rows
        Most (slide, draw) rows integrated at once.

    Returns
    -------
    np.ndarray
        float32 (n, draws, G) draws in model space.
    """
    model.eval()
    n = clusters.shape[0]
    per_batch = max(1, max_rows // draws)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    out = np.empty((n, draws, model.n_genes), dtype=np.float32)  # (n, S, G)
    for sl in _batches(n, per_batch):
        c = torch.as_tensor(clusters[sl], device=device)  # (b, K, D)
        s = torch.as_tensor(sizes[sl], device=device)  # (b, K)
        b = c.shape[0]
        with autocast(device):
            cond = model.encode_condition(c, s)  # (b, H)
        null = model.null_condition(b * draws, n_clusters=c.shape[1])  # (b*S, H)
        cond = cond.repeat(draws)  # (b*S, H), rows i*S .. i*S+S-1 belong to slide i
        x0 = _noise(b, draws, model.n_genes, antithetic=antithetic, generator=gen, device=device)
        f = guided_velocity(model, cond, null, sampler.guidance)
        with autocast(device):
            x = integrate(
                f,
                x0,
                solver=sampler.solver,
                steps=sampler.steps,
                atol=sampler.atol,
                rtol=sampler.rtol,
            )  # (b*S, G)
        out[sl] = x.float().reshape(b, draws, -1).cpu().numpy()  # (b, S, G)
        if progress is not None:
            progress(b)
    return out


@torch.no_grad()
def _per_slide(model, clusters, sizes, *, device, max_rows, head: bool) -> np.ndarray:
    model.eval()
    width = model.n_genes if head else model.config.hidden
    out = np.empty((clusters.shape[0], width), dtype=np.float32)  # (n, G) or (n, H)
    for sl in _batches(clusters.shape[0], max_rows):
        c = torch.as_tensor(clusters[sl], device=device)  # (b, K, D)
        s = torch.as_tensor(sizes[sl], device=device)  # (b, K)
        with autocast(device):
            cond = model.encode_condition(c, s)  # vec (b, H)
            res = model.predict_slide(cond) if head else cond.vec  # (b, G) or (b, H)
        out[sl] = res.float().cpu().numpy()
    return out


def slide_estimates(
    model: torch.nn.Module,
    clusters: np.ndarray,
    sizes: np.ndarray,
    *,
    device: torch.device,
    max_rows: int = 256,
) -> np.ndarray | None:
    """The model's slide-head estimates (n, G) of the z-scored expression, or None.

    A model without a slide head (``model.slide_head = false``) gives None.
    """
    if getattr(model, "slide_head", None) is None:
        return None
    return _per_slide(model, clusters, sizes, device=device, max_rows=max_rows, head=True)


def slide_embeddings(
    model: torch.nn.Module,
    clusters: np.ndarray,
    sizes: np.ndarray,
    *,
    device: torch.device,
    max_rows: int = 256,
) -> np.ndarray:
    """The slide embeddings (n, H) the flow is conditioned on (and the slide head reads)."""
    return _per_slide(model, clusters, sizes, device=device, max_rows=max_rows, head=False)


def summarise(log2_draws: np.ndarray, *, level: float, multiplier: float | None = None) -> dict:
    """Mean, std and central interval of draws (n, S, G) on the log2(x+1) scale.

    The interval is ``mean +- multiplier * std``; without a multiplier the Gaussian quantile of
    ``level`` is used (the calibrated multiplier comes from ``calibration.json``).
    """
    from scipy.stats import norm

    mean = log2_draws.mean(axis=1)  # (n, G)
    std = log2_draws.std(axis=1, ddof=1) if log2_draws.shape[1] > 1 else np.zeros_like(mean)
    q = float(norm.ppf(0.5 + level / 2)) if multiplier is None else float(multiplier)
    if not math.isfinite(q):
        q = 0.0
    return {"mean": mean, "std": std, "lower": mean - q * std, "upper": mean + q * std}
