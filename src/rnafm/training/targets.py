"""Training targets: gene alignment, z-scoring and the optional ridge prior."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnafm.errors import InputError
from rnafm.training.config import PriorKind, TrainConfig
from rnafm.training.prior import RidgePrior, fit_prior
from rnafm.training.run import NORMALISATION, PRIOR, Normalisation

__all__ = [
    "OutputTransform",
    "Novelty",
    "Difficulty",
    "ErrorTrend",
    "Spread",
    "Targets",
    "aligned_expression",
    "gene_head_weights",
    "prepare_targets",
    "load_targets",
]

logger = logging.getLogger(__name__)


@dataclass
class Novelty:
    """How unlike the training slides a slide is: the leverage of its embedding.

    For a linear read-out of the slide embedding v (the slide head is one), the predictive
    variance grows as ``1 + h`` with ``h = (1 + (v - mu)^T S^-1 (v - mu)) / n`` (mu, S: mean
    and covariance of the n training embeddings, S shrunk towards its diagonal). A slide far
    from the training slides in embedding space gets a larger h, hence a wider interval.
    """

    mean: np.ndarray  # float64 (H,)
    precision: np.ndarray  # float64 (H, H)
    n: int
    h_max: float = np.inf  # largest leverage of a training embedding

    @classmethod
    def fit(cls, emb: np.ndarray, *, shrink: float = 0.1) -> Novelty:
        """From training embeddings (n, H)."""
        emb = np.asarray(emb, dtype=np.float64)  # (n, H)
        mu = emb.mean(axis=0)  # (H,)
        cov = np.cov(emb - mu, rowvar=False).reshape(emb.shape[1], emb.shape[1])  # (H, H)
        diag = np.diag(np.diag(cov)) + 1e-6 * np.eye(len(mu))
        cov = (1 - shrink) * cov + shrink * diag  # (H, H) well conditioned for n < H
        out = cls(mu, np.linalg.inv(cov), int(emb.shape[0]))
        out.h_max = float(out.leverage(emb).max())
        return out

    def leverage(self, emb: np.ndarray) -> np.ndarray:
        """h (m,) of embeddings (m, H)."""
        d = np.asarray(emb, dtype=np.float64) - self.mean  # (m, H)
        return (1.0 + np.einsum("mh,hk,mk->m", d, self.precision, d)) / self.n  # (m,)


@dataclass
class Difficulty:
    """How hard a slide is to predict, read from its embedding.

    The flow's training targets are the ridge prior's cross-fitted (out-of-fold) residuals in
    units of their per-gene scale; a slide's difficulty is the root mean square of its residuals
    over genes. A ridge regression (penalty by leave-one-out) of the log difficulty of the
    training slides on their embeddings predicts it for any slide: slides whose composition made
    the training slides hard get wider intervals, easy ones narrower. :meth:`factor` is the
    predicted difficulty relative to the training slides' average, clipped to the range fitted
    on the training slides: it never extrapolates, so a slide unlike any training slide cannot
    be called easy (its width then comes from the :class:`Novelty` term).
    """

    mean: np.ndarray  # float64 (H,) embedding mean
    scale: np.ndarray  # float64 (H,) embedding std
    coef: np.ndarray  # float64 (H,) on the standardised embedding
    alpha: float
    low: float = -1.5  # smallest log factor fitted on the training slides
    high: float = 1.5  # largest

    @classmethod
    def fit(
        cls, emb: np.ndarray, residuals: np.ndarray, *, alphas: np.ndarray | None = None
    ) -> Difficulty:
        """From training embeddings (n, H) and their cross-fitted residuals (n, G)."""
        emb = np.asarray(emb, dtype=np.float64)  # (n, H)
        r = np.asarray(residuals, dtype=np.float64)  # (n, G)
        y = 0.5 * np.log(np.maximum((r**2).mean(axis=1), 1e-12))  # (n,) log RMS
        y = y - y.mean()
        mu, sd = emb.mean(axis=0), emb.std(axis=0) + 1e-8  # (H,)
        x = (emb - mu) / sd  # (n, H)
        u, sv, vt = np.linalg.svd(x, full_matrices=False)  # (n, k), (k,), (k, H)
        uty = u.T @ y  # (k,)
        best = (np.inf, 1.0)
        for a in np.logspace(-2, 5, 29) if alphas is None else alphas:
            f = sv**2 / (sv**2 + a)  # (k,) shrinkage of each direction
            fit = u @ (f * uty)  # (n,) fitted values
            hat = (u**2) @ f + 1.0 / len(y)  # (n,) leverage incl. the centring
            loo = np.mean(((y - fit) / np.maximum(1.0 - hat, 1e-6)) ** 2)
            best = min(best, (loo, float(a)))
        a = best[1]
        coef = vt.T @ (sv / (sv**2 + a) * uty)  # (H,)
        fitted = x @ coef  # (n,)
        return cls(mu, sd, coef, a, float(fitted.min()), float(fitted.max()))

    def factor(self, emb: np.ndarray) -> np.ndarray:
        """Predicted difficulty (m,) of embeddings (m, H), 1 for an average training slide."""
        x = (np.asarray(emb, dtype=np.float64) - self.mean) / self.scale  # (m, H)
        return np.exp(np.clip(x @ self.coef, self.low, self.high))  # (m,)


@dataclass
class ErrorTrend:
    """How the error size of one value changes with what the run predicts for it.

    On the log scale, counting noise makes a gene's values noisier where it is expressed
    lowly (for Poisson counts the variance of log counts falls as 1 / mean), so within a gene
    a slide predicted below the gene's average has the larger error, the more so for lowly
    expressed genes (voom's mean-variance trend, here per predicted value). The trend is
    ``log factor^2 = b1 d + b2 d L + b3 |d|``, with ``d`` the predicted log2 value minus the
    gene's training mean (clipped to +-``clip``) and ``L`` the gene's mean log2 level,
    standardised over genes. With a slide head, a fourth term ``b4 a`` follows the disagreement
    of the mean's two components: ``a = |head - (prior + flow)|`` per value, in units of its
    per-gene root mean square on the fitting slides (clipped to 4), so that values where the
    two estimates differ get the wider interval. With ``signal`` (G,), the share of each gene's
    variance that the image explains (the prior's cross-fitted R^2), the terms in ``d``, ``|d|``
    and ``a`` also get a slope in it, so genes the image predicts can follow another trend than
    genes it does not. It is fitted by Gaussian likelihood (a gamma GLM with log link) to
    squared errors, with one intercept per gene (profiled out in closed form), and each
    gene's factor is scaled to a root mean square of 1 over the fitting slides: it shapes the
    spread within genes and leaves each gene's overall scale to :class:`Spread`'s
    ``gene_scale``.
    """

    coef: np.ndarray  # float64 (k,): 3, 4 with the disagreement term, more with the signal
    level_mean: float
    level_sd: float
    clip: float = 3.0
    dis_ref: np.ndarray | None = None  # float64 (G,) rms disagreement on the fitting slides
    signal: np.ndarray | None = None  # float64 (G,) image R^2 of each gene, in [0, 1]
    gene_norm: np.ndarray | None = None  # float64 (G,) rms factor on the fitting slides

    def _features(
        self, offset: np.ndarray, gene_mean: np.ndarray, disagreement: np.ndarray | None = None
    ) -> np.ndarray:
        d = np.clip(np.asarray(offset, dtype=np.float64), -self.clip, self.clip)  # (..., G)
        level = (np.asarray(gene_mean, dtype=np.float64) - self.level_mean) / self.level_sd
        cols = [d, d * level, np.abs(d)]
        if self.dis_ref is not None:
            if disagreement is None:
                raise ValueError("this error trend needs the components' disagreement")
            a = np.abs(np.asarray(disagreement, dtype=np.float64)) / self.dis_ref  # (..., G)
            cols.append(np.clip(a, 0.0, 4.0))
        if self.signal is not None:
            cols += [c * self.signal for c in (cols[0], cols[2], *cols[3:])]
        return np.stack(cols, axis=-1)  # (..., G, k)

    @classmethod
    def fit(
        cls,
        offset: np.ndarray,
        gene_mean: np.ndarray,
        u: np.ndarray,
        disagreement: np.ndarray | None = None,
        *,
        signal: np.ndarray | None = None,
        ridge: float = 1e-3,
        max_entries: int = 2_000_000,
        seed: int = 0,
    ) -> ErrorTrend:
        """From predicted offsets (n, G) in log2 units, gene means (G,), squared errors (n, G)
        in units of each gene's scale and, optionally, the components' disagreement (n, G)."""
        gene_mean = np.asarray(gene_mean, dtype=np.float64)  # (G,)
        sd = float(gene_mean.std())
        out = cls(np.zeros(3), float(gene_mean.mean()), sd if sd > 1e-8 else 1.0)
        if disagreement is not None:
            dis = np.asarray(disagreement, dtype=np.float64)  # (n, G)
            out.dis_ref = np.sqrt((dis**2).mean(axis=0)) + 1e-8  # (G,)
        if signal is not None:
            out.signal = np.clip(np.asarray(signal, dtype=np.float64), 0.0, 1.0)  # (G,)
        full = out._features(offset, gene_mean, disagreement)  # (n, G, k) every value
        k = full.shape[-1]
        y = np.asarray(u, dtype=np.float64)  # (n, G)
        y = np.where(np.isfinite(y), y, 0.0)
        live = y.mean(axis=0) > 0  # a gene without any error carries no trend
        x, y = full[:, live], y[:, live]
        if not live.any():
            out.coef = np.zeros(k)
            out.gene_norm = np.ones(len(gene_mean))
            return out
        if y.size > max_entries:  # a random subset of slides keeps every gene's intercept
            rows = max(2, max_entries // y.shape[1])
            keep = np.random.default_rng(seed).permutation(len(y))[:rows]
            x, y = x[keep], y[keep]
        n = y.size
        beta = np.zeros(k)
        pen = ridge * np.eye(k)
        for _ in range(100):
            eta = np.clip(x @ beta, -20, 20)  # (n, G)
            # each gene's own intercept, profiled out: the closed-form optimum given beta
            c = np.log(np.maximum((y * np.exp(-eta)).mean(axis=0), 1e-300))  # (G,)
            w = y * np.exp(-np.clip(eta + c, -20, 20))  # (n, G)
            xf, wf = x.reshape(-1, k), w.reshape(-1)  # (N, k), (N,)
            xm = (x * w[..., None]).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)[:, None]
            xc = (x - xm).reshape(-1, k)  # (N, k) centred per gene: the profiled Hessian
            grad = xf.T @ (1.0 - wf) / n + pen @ beta  # (k,)
            hess = (xc.T * wf) @ xc / n + pen  # (k, k) with the intercepts profiled
            step = np.linalg.solve(hess + 1e-9 * np.eye(k), grad)  # (k,)
            step *= min(1.0, 1.0 / max(np.abs(step).max(), 1e-12))  # damped Newton
            beta -= step
            if np.abs(step).max() < 1e-8:
                break
        if not np.isfinite(beta).all():  # a failed fit: no trend
            beta = np.zeros(k)
        out.coef = beta
        out.gene_norm = np.sqrt(np.exp(np.clip(full @ beta, -2.0, 2.0)).mean(axis=0))  # (G,)
        return out

    def factor(
        self, offset: np.ndarray, gene_mean: np.ndarray, disagreement: np.ndarray | None = None
    ) -> np.ndarray:
        """std factor (..., G) of predictions ``offset`` (..., G) log2 units from the gene
        means (and the components' disagreement, z units, when fitted with it); the log
        variance is clipped to +-2, and each gene's factor has a root mean square of 1 over the
        slides it was fitted on."""
        eta = self._features(offset, gene_mean, disagreement) @ self.coef  # (..., G)
        f = np.exp(0.5 * np.clip(eta, -2.0, 2.0))  # (..., G)
        return f if self.gene_norm is None else f / self.gene_norm


@dataclass
class Spread:
    """Per-gene scale and slide-specific shape of the predictive spread (z units).

    The draws' deviations from their mean are rescaled so that a slide's std of gene g is
    ``gene_scale[g] * (flow_std[g] / flow_ref[g]) ** power * slide_factor``: ``gene_scale``
    matches the held-out residual scale of each gene, ``power`` (chosen on validation) says how
    much of the flow's slide-specific spread is kept (0: none, 1: all of it), and the slide
    factor (:meth:`slide_factor`) is ``(1 + h) ** novelty_power`` (h: the slide's
    :class:`Novelty` leverage; with ``novelty_power`` 0, ``sqrt((1 + h) / (1 + h_max))`` for
    slides beyond every training slide's leverage ``h_max`` and 1 within) times its
    :class:`Difficulty` to ``difficulty_power``; with an :class:`ErrorTrend`, each value's std
    is further multiplied by the trend's factor at its predicted level to ``trend_power``
    (:meth:`entry_factor`).
    """

    gene_scale: np.ndarray  # float64 (G,)
    flow_ref: np.ndarray  # float64 (G,) mean flow std over validation slides (model space)
    power: float
    novelty: Novelty | None = None
    novelty_power: float = 0.5
    difficulty: Difficulty | None = None
    difficulty_power: float = 0.0
    trend: ErrorTrend | None = None
    trend_power: float = 0.0

    def entry_factor(
        self, offset: np.ndarray, gene_mean: np.ndarray, disagreement: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Per-value std factor (..., G) of predictions ``offset`` (..., G; log2 units from the
        genes' training means ``gene_mean``; ``disagreement``: head minus prior + flow, z
        units); None without an error trend."""
        if self.trend is None or not self.trend_power:
            return None
        return self.trend.factor(offset, gene_mean, disagreement) ** self.trend_power

    def slide_factor(self, emb: np.ndarray | None) -> np.ndarray | None:
        """Per-slide std factor (m,) from slide embeddings (m, H); None without either term."""
        if emb is None or (self.novelty is None and self.difficulty is None):
            return None
        out = np.ones(len(emb))
        outside = np.zeros(len(emb), dtype=bool)  # beyond every training slide's leverage
        if self.novelty is not None:
            h = self.novelty.leverage(emb)  # (m,)
            outside = h > self.novelty.h_max
            if self.novelty_power > 0:
                out = out * (1.0 + h) ** self.novelty_power
            else:  # only slides beyond every training slide are widened, as sqrt(1 + h) grows
                out = out * np.sqrt(np.maximum((1.0 + h) / (1.0 + self.novelty.h_max), 1.0))
        if self.difficulty is not None and self.difficulty_power:
            d = self.difficulty.factor(emb) ** self.difficulty_power  # (m,)
            out = out * np.where(outside, np.maximum(d, 1.0), d)  # never 'easy' out there
        return out  # (m,)

    def save(self, path: Path) -> None:
        """Write as ``.npz`` atomically."""
        from rnafm._io import atomic_path

        extra = {}
        if self.novelty is not None:
            nv = self.novelty
            extra = {"emb_mean": nv.mean, "emb_precision": nv.precision, "emb_n": np.asarray(nv.n),
                     "emb_hmax": np.asarray(nv.h_max)}  # fmt: skip
        if self.difficulty is not None:
            d = self.difficulty
            extra |= {"diff_mean": d.mean, "diff_scale": d.scale, "diff_coef": d.coef,
                      "diff_alpha": np.asarray(d.alpha), "diff_range": np.asarray([d.low, d.high])}  # fmt: skip
        if self.trend is not None:
            t = self.trend
            extra |= {"trend_coef": t.coef,
                      "trend_level": np.asarray([t.level_mean, t.level_sd, t.clip])}  # fmt: skip
            if t.dis_ref is not None:
                extra["trend_dis_ref"] = t.dis_ref
            if t.signal is not None:
                extra["trend_signal"] = t.signal
            if t.gene_norm is not None:
                extra["trend_gene_norm"] = t.gene_norm
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(
                f,
                gene_scale=self.gene_scale,
                flow_ref=self.flow_ref,
                power=np.asarray(self.power),
                novelty_power=np.asarray(self.novelty_power),
                difficulty_power=np.asarray(self.difficulty_power),
                trend_power=np.asarray(self.trend_power),
                **extra,
            )

    @classmethod
    def load(cls, path: Path) -> Spread | None:
        """Read a spread written by :meth:`save`; None when the file does not exist."""
        if not Path(path).is_file():
            return None
        with np.load(path) as z:
            novelty = None
            if "emb_mean" in z:
                h_max = float(z["emb_hmax"]) if "emb_hmax" in z else np.inf
                novelty = Novelty(z["emb_mean"], z["emb_precision"], int(z["emb_n"]), h_max)
            difficulty = None
            if "diff_coef" in z:
                lo, hi = (float(v) for v in z["diff_range"])
                difficulty = Difficulty(
                    z["diff_mean"], z["diff_scale"], z["diff_coef"], float(z["diff_alpha"]), lo, hi
                )
            trend = None
            if "trend_coef" in z:
                lm, ls, clip = (float(v) for v in z["trend_level"])
                dis = z["trend_dis_ref"] if "trend_dis_ref" in z else None
                sig = z["trend_signal"] if "trend_signal" in z else None
                norm = z["trend_gene_norm"] if "trend_gene_norm" in z else None
                trend = ErrorTrend(z["trend_coef"], lm, ls, clip, dis, sig, norm)
            return cls(
                z["gene_scale"],
                z["flow_ref"],
                float(z["power"]),
                novelty,
                float(z["novelty_power"]) if "novelty_power" in z else 0.5,
                difficulty,
                float(z["difficulty_power"]) if "difficulty_power" in z else 0.0,
                trend,
                float(z["trend_power"]) if "trend_power" in z else 0.0,
            )


@dataclass
class OutputTransform:
    """Map model space (flow output) to z-scores and log2(x+1).

    ``z = prior + res_scale * x`` and ``log2 = mean + std * z``; without a prior, ``prior`` is
    zero and ``res_scale`` one.
    """

    mean: np.ndarray  # float64 (G,) normalisation mean
    std: np.ndarray  # float64 (G,) normalisation std
    res_scale: np.ndarray  # float64 (G,)

    def to_log2(
        self,
        x: np.ndarray,
        prior_z: np.ndarray | None,
        *,
        blend: float = 1.0,
        head_z: np.ndarray | None = None,
        head_weight: float | np.ndarray = 0.0,
        spread: Spread | None = None,
        slide_factor: np.ndarray | None = None,
    ) -> np.ndarray:
        """Model-space draws (n, S, G) and prior z (n, G) -> log2(x+1) draws (n, S, G).

        With a prior, ``blend`` shrinks the flow's mean correction towards the prior (chosen
        on validation): the flow's mean becomes ``prior + blend scale mean_x``. With the slide
        head's estimate ``head_z`` (n, G), the predictive mean is ``(1 - head_weight)`` times
        that plus ``head_weight`` times the head (one weight, or one per gene (G,): see
        :func:`gene_head_weights`). The draws keep the flow's deviations from
        their mean, in ``res_scale`` units or, with ``spread``, rescaled by it (by
        ``slide_factor`` (n,), from :meth:`Spread.slide_factor`, and by the spread's error trend
        at the predictive mean, :meth:`Spread.entry_factor`).
        """
        mean_x = x.mean(axis=1, keepdims=True)  # (n, 1, G)
        dev = x - mean_x  # (n, S, G)
        centre = mean_x * self.res_scale  # (n, 1, G)
        if prior_z is not None:
            centre = prior_z[:, None, :] + blend * centre  # (n, 1, G)
        disagreement = None  # (n, 1, G) head minus prior + flow
        if head_z is not None and np.any(np.asarray(head_weight) > 0):
            disagreement = head_z[:, None, :] - centre
            w = np.asarray(head_weight, dtype=np.float64)  # () or (G,)
            centre = (1.0 - w) * centre + w * head_z[:, None, :]  # (n, 1, G)
        if spread is None:
            dev = dev * self.res_scale  # (n, S, G)
        else:
            sd = dev.std(axis=1, ddof=1, keepdims=True) if x.shape[1] > 1 else np.ones_like(centre)
            sd = np.maximum(sd, 1e-8)  # (n, 1, G)
            shape = (sd / np.maximum(spread.flow_ref, 1e-8)) ** spread.power  # (n, 1, G)
            dev = dev / sd * spread.gene_scale * shape  # (n, S, G)
            if slide_factor is not None:
                dev = dev * np.asarray(slide_factor)[:, None, None]  # (n, S, G)
            entry = spread.entry_factor(centre * self.std, self.mean, disagreement)  # (n, 1, G)
            if entry is not None:
                dev = dev * entry  # (n, S, G)
        return (centre + dev) * self.std + self.mean  # (n, S, G)


def gene_head_weights(weight: float, slope: float, signal: np.ndarray | None) -> float | np.ndarray:
    """The slide head's weight in the predictive mean: ``weight`` for every gene, or with a
    ``slope`` and the genes' image ``signal`` (G,) (:attr:`Targets.signal`),
    ``clip(weight + slope * signal, 0, 1)`` per gene."""
    if not slope or signal is None:
        return float(weight)
    return np.clip(weight + slope * np.asarray(signal, dtype=np.float64), 0.0, 1.0)  # (G,)


def aligned_expression(data, genes: list[str], what: str) -> np.ndarray:
    """Expression (n, G) of ``data`` in ``genes`` order; InputError when genes are missing."""
    if data.expression is None or data.genes is None:
        raise InputError(f"the {what} data have no expression values; pass a reference table.")
    index = {g: i for i, g in enumerate(data.genes)}
    missing = [g for g in genes if g not in index]
    if missing:
        raise InputError(
            f"the {what} data lack {len(missing)} model genes (e.g. {missing[:5]}); "
            "use a reference with the genes the model was trained on."
        )
    y = np.asarray(data.expression, dtype=np.float64)[:, [index[g] for g in genes]]  # (n, G)
    if not np.isfinite(y).all():
        raise InputError(f"the {what} expression holds NaN or infinite values; clean them first.")
    return y


@dataclass
class Targets:
    """How log2(x+1) expression maps to the flow's training space and back."""

    norm: Normalisation
    prior: RidgePrior | None

    @property
    def transform(self) -> OutputTransform:
        """Model space -> log2(x+1)."""
        scale = self.prior.res_std if self.prior is not None else np.ones_like(self.norm.mean)
        return OutputTransform(mean=self.norm.mean, std=self.norm.std, res_scale=scale)

    @property
    def signal(self) -> np.ndarray | None:
        """(G,) each gene's image signal, the ridge prior's cross-fitted R^2 on the z scale
        (``1 - res_std ** 2``, clipped to [0, 1]); None without a prior."""
        if self.prior is None:
            return None
        return np.clip(1.0 - np.asarray(self.prior.res_std, dtype=np.float64) ** 2, 0.0, 1.0)

    def prior_z(self, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
        """Prior z-scores (n, G) of slides, or None without a prior."""
        if self.prior is None:
            return None
        return self.prior.predict_slides(clusters, sizes)  # (n, G)

    def prior_log2(self, clusters: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
        """Prior prediction on the log2(x+1) scale (n, G), or None."""
        z = self.prior_z(clusters, sizes)
        return None if z is None else self.norm.inverse(z)

    def save(self, run_dir: Path) -> None:
        """Write normalisation.npz (and prior.npz)."""
        self.norm.save(Path(run_dir) / NORMALISATION)
        if self.prior is not None:
            self.prior.save(Path(run_dir) / PRIOR)
        else:  # a stale prior from an earlier run in this folder must not be picked up
            (Path(run_dir) / PRIOR).unlink(missing_ok=True)


def prepare_targets(train, y: np.ndarray, config: TrainConfig) -> tuple[Targets, np.ndarray]:
    """Fit normalisation (and prior) on training data; return them and the flow targets (n, G).

    With a ridge prior the target is the cross-fitted residual divided by its per-gene std, so
    training residuals have the scale of residuals at prediction time.
    """
    norm = Normalisation.fit(y)
    z = norm.forward(y)  # (n, G)
    if config.prior.kind is PriorKind.NONE:
        return Targets(norm=norm, prior=None), z.astype(np.float32)
    prior, oof = fit_prior(
        train.clusters, train.sizes, z, list(train.patient_ids), config.prior, seed=config.seed
    )
    target = (z - oof) / prior.res_std  # (n, G)
    logger.info(
        "ridge prior: median alpha %.3g, mean out-of-fold residual std %.3f",
        float(np.median(prior.alphas)),
        float(prior.res_std.mean()),
    )
    return Targets(norm=norm, prior=prior), target.astype(np.float32)


def load_targets(run_dir: Path) -> Targets:
    """Read normalisation.npz (and prior.npz when present)."""
    run_dir = Path(run_dir)
    prior = RidgePrior.load(run_dir / PRIOR) if (run_dir / PRIOR).is_file() else None
    return Targets(norm=Normalisation.load(run_dir / NORMALISATION), prior=prior)
