"""Validation during training: multi-draw PCC for model selection, the predictive mean's
components, the interval's spread and its calibration."""

from __future__ import annotations

import itertools

import numpy as np

from rnafm.flow.draws import draw_samples, slide_embeddings, slide_estimates, summarise
from rnafm.metrics import (
    conformal_multiplier,
    constant_columns,
    coverage,
    crps_gaussian,
    gaussian_multiplier,
    mean_pcc,
)
from rnafm.training.config import CalibrationMethod, TrainConfig
from rnafm.training.targets import (
    Difficulty,
    ErrorTrend,
    Novelty,
    Spread,
    Targets,
    gene_head_weights,
)

__all__ = ["Validator", "uncalibrated"]


def uncalibrated(config: TrainConfig, note: str, *, head: bool = False) -> dict:
    """calibration.json without a validation split: Gaussian interval, the prior as the mean
    (blend 0) or, with a slide head, the average of the prior and the head."""
    z = gaussian_multiplier(config.calibration.level)
    return {
        "level": config.calibration.level,
        "method": CalibrationMethod.NONE.value,
        "gaussian_multiplier": z,
        "multiplier": z,
        "blend": 0.0 if config.prior.kind.value != "none" else 1.0,
        "head_weight": 0.5 if head else 0.0,
        "head_weight_slope": 0.0,
        "note": note,
    }


def _halves(patients: list[str], seed: int) -> np.ndarray:
    """bool (n,): which slides fall in the first of two patient-disjoint halves."""
    uniq = sorted(set(patients))
    first = set(np.random.default_rng(seed).permutation(uniq)[: len(uniq) // 2])
    return np.array([p in first for p in patients])


def mean_noise_var(x: np.ndarray, *, antithetic: bool) -> np.ndarray | None:
    """Estimated variance (n, G) of the mean of the draws x (n, S, G) around the model's own
    mean, from the spread of its independent units (antithetic pairs, or single draws); None
    with fewer than two units."""
    x = np.asarray(x, dtype=np.float64)
    if antithetic:
        p = x.shape[1] // 2
        units = 0.5 * (x[:, 0 : 2 * p : 2] + x[:, 1 : 2 * p : 2])  # (n, P, G) pair means
    else:
        units = x  # (n, S, G)
    if units.shape[1] < 2:
        return None
    return units.var(axis=1, ddof=1) / units.shape[1]  # (n, G)


class _MixPcc:
    """Mean per-gene PCC of every mix of the predictive mean's components, in closed form.

    The mean (z units, an affine map per gene away from log2) is ``a_p prior + a_c corr +
    a_h head`` with ``a = (1 - w, (1 - w) blend, w)`` (``(0, 1 - w, w)`` without a prior), the
    head weight ``w`` one number or one per gene. Its per-gene covariance with the truth and its
    variance follow from the components' (3 x 3) per-gene covariances, so each candidate costs
    O(G) instead of a pass over the (n, G) predictions; it equals :func:`rnafm.metrics.mean_pcc`
    of the mixed predictions (tested against that loop).

    With ``corr_noise`` (n, G), the estimated variance of ``corr`` (the mean of the validation
    draws) around the flow's own mean, and ``keep`` < 1, the PCC is the one expected of a mean
    of more draws: ``keep`` = validation draws / prediction draws of that noise is kept in
    each mix's variance (noise raises the variance and leaves the covariance with the truth
    alone in expectation). Without it, a flow that has learned the spread of the data
    scores below an untrained one whose draws all coincide, however well it has learned the
    mean. The variance is never lowered below ``keep`` times its raw value (a mix of pure noise).
    """

    def __init__(self, prior_z, corr, head_z, y, corr_noise=None, keep: float = 1.0) -> None:
        zero = np.zeros_like(corr)
        comps = [
            zero if c is None else np.asarray(c, dtype=np.float64) for c in (prior_z, corr, head_z)
        ]
        u = np.stack([c - c.mean(axis=0) for c in comps])  # (3, n, G)
        y = np.asarray(y, dtype=np.float64)
        yc = y - y.mean(axis=0)  # (n, G)
        self.has_prior = prior_z is not None
        self.cov = np.einsum("ing,jng->ijg", u, u)  # (3, 3, G)
        self.cy = np.einsum("ing,ng->ig", u, yc)  # (3, G)
        self.vy = (yc**2).sum(axis=0)  # (G,)
        n = len(y)
        self.y_const = constant_columns(y, np.sqrt(self.vy))  # (G,) as in mean_pcc
        big = np.maximum(np.abs(np.stack(comps)).max(axis=(0, 1)) if n else 1.0, 1.0)  # (G,)
        self.tiny = 1e-20 * max(n, 1) * big**2  # (G,) a mix's variance at rounding level
        self.keep = float(keep)
        self.noise = None  # (G,) the draw noise in cov[1, 1] that a mean of more draws loses
        if corr_noise is not None and self.keep < 1.0:
            self.noise = (1.0 - self.keep) * np.asarray(corr_noise).sum(axis=0) * (n - 1) / n

    def mean_pcc(self, blend: float, weight) -> float:
        """Mean per-gene PCC of the mix with ``blend`` and head ``weight`` (() or (G,))."""
        w = np.asarray(weight, dtype=np.float64)  # () or (G,)
        a = np.stack(np.broadcast_arrays(
            (1.0 - w) if self.has_prior else 0.0 * w,
            (1.0 - w) * (blend if self.has_prior else 1.0),
            w,
        ))  # (3,) or (3, G)  # fmt: skip
        if a.ndim == 1:
            a = a[:, None]  # (3, 1)
        var = np.einsum("ig,ijg,jg->g", a, self.cov, a)  # (G,)
        if self.noise is not None:
            var = np.maximum(var - a[1] ** 2 * self.noise, self.keep * var)  # (G,)
        cov = (a * self.cy).sum(axis=0)  # (G,)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(var * self.vy)  # (G,)
        r[(var <= self.tiny) | self.y_const] = np.nan
        r = np.clip(r, -1.0, 1.0)
        return float(np.nanmean(r)) if np.isfinite(r).any() else 0.0


class Validator:
    """Scores an (EMA) model on the validation split.

    The selection metric is the mean per-gene PCC of the mean of several draws (antithetic
    pairs), not of one noisy draw. With a ridge prior the flow's mean correction is shrunk by
    a factor ``blend`` in ``validation.blends``; with a slide head its estimate is mixed in
    with a weight in ``validation.head_weights`` that may rise with each gene's image signal
    (``validation.head_weight_slopes``, with a ridge prior); the best combination's PCC is the
    metric.
    """

    def __init__(self, val, y_val: np.ndarray, targets: Targets, config: TrainConfig, device):
        self.val = val
        self.y = y_val  # (n, G) log2(x+1)
        self.z = targets.norm.forward(y_val)  # (n, G)
        self.targets = targets
        self.config = config
        self.device = device
        self.prior_z = targets.prior_z(val.clusters, val.sizes)  # (n, G) or None
        v = config.validation
        self.blends = tuple(v.blends) if self.prior_z is not None else (1.0,)
        update = {} if v.steps is None else {"steps": v.steps}
        self.sampler = config.sampler.model_copy(update=update)
        self.prior_pcc = None if self.prior_z is None else mean_pcc(self.prior_z, self.z)

    def _draws(self, model, *, draws: int, sampler, seed: int) -> np.ndarray:
        return draw_samples(
            model,
            self.val.clusters,
            self.val.sizes,
            draws=draws,
            sampler=sampler,
            seed=seed,
            device=self.device,
            antithetic=self.config.antithetic,
        )  # (n, S, G)

    def _mix(self, x: np.ndarray, head_z: np.ndarray | None) -> _MixPcc:
        """The closed-form PCC of mixes of the prior, the draws' mean correction and the head,
        as expected of the prediction's number of draws (``calibration.draws``)."""
        res_scale = self.targets.transform.res_scale  # (G,)
        corr = x.mean(axis=1) * res_scale  # (n, G) z units
        keep = min(1.0, x.shape[1] / self.config.calibration.draws)
        noise = None  # (n, G) z units: the draws' noise in their mean
        if keep < 1.0 and (var := mean_noise_var(x, antithetic=self.config.antithetic)) is not None:
            noise = var * res_scale**2
        return _MixPcc(self.prior_z, corr, head_z, self.y, corr_noise=noise, keep=keep)

    def _grid(
        self, x: np.ndarray, head_z: np.ndarray | None, mix: _MixPcc | None = None
    ) -> dict[tuple[float, float, float], float]:
        """Mean per-gene PCC of the predictive mean for every (blend, head weight, slope), as
        expected of the prediction's number of draws (``mix``: ``self._mix(x, head_z)`` when
        already built)."""
        v = self.config.validation
        weights = tuple(v.head_weights) if head_z is not None else (0.0,)
        signal = self.targets.signal
        slopes = ()
        if head_z is not None and signal is not None and len(self.y) >= v.head_slope_min_slides:
            slopes = tuple(v.head_weight_slopes)
        slopes = tuple(dict.fromkeys((0.0, *slopes)))
        # the draws' mean is all that matters: z = prior + b corr, mixed with the head
        mix = self._mix(x, head_z) if mix is None else mix
        out = {}
        for b, w, s in itertools.product(self.blends, weights, slopes):
            if s and w >= 1.0:
                continue  # clipped to 1 for every gene: the same as slope 0
            out[(b, w, s)] = mix.mean_pcc(b, gene_head_weights(w, s, signal))
        return out

    @staticmethod
    def _best(grid: dict, keys=None) -> tuple[float, float, float]:
        """The best (blend, head weight, slope): highest PCC; ties to the larger blend, the
        smaller weight and slope."""
        return max(keys or grid, key=lambda k: (grid[k], k[0], -k[1], -k[2]))

    def _flow_pcc(self, x: np.ndarray, mix: _MixPcc | None = None) -> float:
        """PCC of the prior + the flow's full mean correction (no slide head), as expected of
        the prediction's number of draws. A ``mix`` with a head gives the same (head weight
        0), so one built for the grid is reused."""
        return (self._mix(x, None) if mix is None else mix).mean_pcc(max(self.blends), 0.0)

    def score(self, model) -> dict:
        """Selection metric of ``model``: the best combination's PCC with the validation sampler.

        Combinations without the flow's mean (blend 0) do not depend on the flow's weights, so
        they are left out of the selection metric; they stay candidates when the final mean is
        chosen (calibrate).
        """
        x = self._draws(
            model, draws=self.config.validation.draws, sampler=self.sampler, seed=self.config.seed
        )
        head_z = slide_estimates(model, self.val.clusters, self.val.sizes, device=self.device)
        mix = self._mix(x, head_z)  # built once for the grid and the flow's own PCC
        grid = self._grid(x, head_z, mix)
        candidates = [k for k in grid if k[0] > 0] or list(grid)
        best = self._best(grid, candidates)
        return {
            "val_pcc": grid[best],
            "val_blend": best[0],
            "val_head_weight": best[1],
            "val_head_weight_slope": best[2],
            "val_pcc_flow": self._flow_pcc(x, mix),
            **({} if head_z is None else {"val_pcc_head": mean_pcc(head_z, self.z)}),
        }

    def _spread(
        self,
        x: np.ndarray,
        centre_log2: np.ndarray,
        novelty: Novelty | None,
        difficulty: Difficulty | None,
        emb: np.ndarray | None,
        disagreement: np.ndarray | None = None,
    ) -> tuple[Spread, dict]:
        """The spread's per-gene scale, flow-shape power and slide factor, chosen by CRPS.

        Candidates: flow-shape power in ``validation.spread_powers``; a per-gene scale that is
        either the prior's cross-fitted residual scale times one factor, or its average with this
        model's own per-gene validation error; the novelty term's power in
        ``validation.novelty_powers`` and the difficulty term's in
        ``validation.difficulty_powers`` (when known); the error trend's power in
        ``validation.trend_powers`` (the trend itself fitted on the same half as the scale).
        Each is fitted on one half of the
        validation patients and scored on the other (and the other way round), so a candidate
        cannot win by fitting its own score; the chosen one is refitted on all validation slides.
        """
        v = self.config.validation
        err = self.z - self.targets.norm.forward(centre_log2)  # (n, G) z units
        flow_sd = np.maximum(x.std(axis=1, ddof=1), 1e-8)  # (n, G) model space
        ref = flow_sd.mean(axis=0)  # (G,)
        base = self.targets.transform.res_scale  # (G,) cross-fitted residual scale

        def scale(fit: np.ndarray, rel: np.ndarray, own: float) -> np.ndarray:
            k2 = np.mean((err[fit] / (base * rel[fit])) ** 2)  # one factor on the prior's shape
            g2 = k2 * base**2  # (G,)
            if own > 0:  # this model's own per-gene error, shrunk towards the prior's shape
                g2 = (1 - own) * g2 + own * np.mean((err[fit] / rel[fit]) ** 2, axis=0)
            return np.sqrt(g2)  # (G,)

        half = _halves(list(self.val.patient_ids), self.config.seed)
        folds = [(half, ~half), (~half, half)] if half.any() and not half.all() else []
        everything = np.ones(len(err), dtype=bool)
        nov_powers = tuple(v.novelty_powers) if novelty is not None else (0.0,)
        diff_powers = tuple(v.difficulty_powers) if difficulty is not None else (0.0,)

        def candidate(p, nov_p, diff_p, trend=None, trend_p=0.0) -> Spread:
            return Spread(
                np.ones_like(ref), ref, p, novelty, nov_p, difficulty, diff_p, trend, trend_p
            )

        gene_mean = self.targets.norm.mean  # (G,) log2
        offset = centre_log2 - gene_mean  # (n, G) predicted level, log2 units from the mean
        trend_powers = tuple(v.trend_powers)
        signal = self.targets.signal  # (G,) the prior's cross-fitted R^2 per gene, or None

        def fit_trend(fit: np.ndarray) -> ErrorTrend:
            g = np.maximum(scale(fit, np.ones_like(err), 0.5), 1e-12)  # (G,) this half's scale
            u = (err[fit] / g) ** 2  # (m, G)
            dis = None if disagreement is None else disagreement[fit]
            return ErrorTrend.fit(
                offset[fit], gene_mean, u, dis, signal=signal, seed=self.config.seed
            )

        pairs = folds or [(everything, everything)]
        trend_factors = [None] * len(pairs)
        if any(trend_powers):
            trend_factors = [fit_trend(f).factor(offset, gene_mean, disagreement) for f, _ in pairs]

        scores = {}
        for p, own, nov_p, diff_p in itertools.product(
            v.spread_powers, (0.0, 0.5, 1.0), nov_powers, diff_powers
        ):
            slide = candidate(p, nov_p, diff_p).slide_factor(emb)
            wide = np.ones(len(err)) if slide is None else slide  # (n,)
            rel0 = (flow_sd / ref) ** p * wide[:, None]  # (n, G)
            for trend_p in trend_powers:
                crps = []
                for (f, t), tf in zip(pairs, trend_factors, strict=True):
                    rel = rel0 if not trend_p else rel0 * tf**trend_p  # (n, G)
                    crps.append(crps_gaussian(err[t], 0.0, scale(f, rel, own) * rel[t]).mean())
                scores[(p, own, nov_p, diff_p, trend_p)] = float(np.mean(crps))
        p, own, nov_p, diff_p, trend_p = min(scores, key=lambda c: (scores[c], c))
        trend = fit_trend(everything) if any(trend_powers) else None
        spread = candidate(p, nov_p, diff_p, trend, trend_p)
        slide = spread.slide_factor(emb)
        rel = (flow_sd / ref) ** p * (np.ones(len(err)) if slide is None else slide)[:, None]
        entry = spread.entry_factor(offset, gene_mean, disagreement)
        if entry is not None:
            rel = rel * entry  # (n, G)
        spread.gene_scale = scale(everything, rel, own)
        labels = ("power", "own_scale", "novelty_power", "difficulty_power", "trend_power")
        table = {" ".join(f"{n}={c}" for n, c in zip(labels, k, strict=True)): val
                 for k, val in scores.items()}  # fmt: skip
        return spread, table

    def calibrate(self, model, train=None, residuals=None) -> tuple[dict, Spread]:
        """Mean components, spread and conformal multiplier from draws of the run's sampler.

        ``train`` (the training :class:`CohortData`) gives the embeddings of the novelty term;
        with ``residuals`` (n_train, G), the training slides' cross-fitted residuals (the flow's
        targets with a ridge prior), also of the difficulty term.
        Returns calibration.json's content and the :class:`Spread` (saved as spread.npz).
        """
        cal = self.config.calibration
        x = self._draws(model, draws=cal.draws, sampler=self.config.sampler, seed=self.config.seed)
        head_z = slide_estimates(model, self.val.clusters, self.val.sizes, device=self.device)
        pcc = self._mix(x, head_z)  # closed-form PCC of every mix, for the grid and the flow
        grid = self._grid(x, head_z, pcc)
        blend, weight, slope = self._best(grid)
        gene_w = gene_head_weights(weight, slope, self.targets.signal)  # () or (G,)
        mix = {"blend": blend, "head_z": head_z, "head_weight": gene_w}  # the chosen mean
        plain = self.targets.transform.to_log2(x, self.prior_z, **mix)  # (n, S, G)
        novelty = difficulty = emb = None
        if train is not None:
            emb_train = slide_embeddings(model, train.clusters, train.sizes, device=self.device)
            novelty = Novelty.fit(emb_train)
            if residuals is not None and self.prior_z is not None:
                difficulty = Difficulty.fit(emb_train, residuals)
            emb = slide_embeddings(model, self.val.clusters, self.val.sizes, device=self.device)
        disagreement = None  # (n, G) the slide head minus prior + flow, z units
        if head_z is not None and np.any(np.asarray(gene_w) > 0):
            flow = self.targets.transform.to_log2(
                x.mean(axis=1, keepdims=True), self.prior_z, blend=blend
            )[:, 0]  # (n, G)
            disagreement = head_z - self.targets.norm.forward(flow)
        spread, crps_by_power = self._spread(
            x, plain.mean(axis=1), novelty, difficulty, emb, disagreement
        )
        log2 = self.targets.transform.to_log2(
            x, self.prior_z, spread=spread, slide_factor=spread.slide_factor(emb), **mix
        )  # (n, S, G)
        z = gaussian_multiplier(cal.level)
        s = summarise(log2, level=cal.level)
        mean, std = s["mean"], s["std"]  # (n, G) each
        q, held_out = z, None
        if cal.method is CalibrationMethod.GLOBAL:
            q = conformal_multiplier(self.y, mean, std, cal.level)
            held_out = self._crossfit_coverage(mean, std, cal.level)
        components = {"prior": self.prior_pcc, "flow": self._flow_pcc(x, pcc)}
        if head_z is not None:
            components["head"] = mean_pcc(head_z, self.z)
        return {
            "level": cal.level,
            "method": cal.method.value,
            "gaussian_multiplier": z,
            "multiplier": q,
            "blend": blend,
            "head_weight": weight,
            "head_weight_slope": slope,
            "spread_power": spread.power,
            "spread_novelty": spread.novelty is not None,
            "spread_novelty_power": spread.novelty_power,
            "spread_difficulty_power": spread.difficulty_power,
            "spread_trend_power": spread.trend_power,
            "spread_trend_coef": None if spread.trend is None else spread.trend.coef.tolist(),
            "crps_by_spread": crps_by_power,
            "pcc_by_component": components,
            "pcc_by_blend": {f"{b}/{w}/{s}": v for (b, w, s), v in grid.items()},
            "draws": cal.draws,
            "sampler": self.config.sampler.model_dump(mode="json"),
            "n_slides": len(self.val.slide_ids),
            "pcc_mean": grid[(blend, weight, slope)],
            "pcc_mean_note": "selected on this validation split (optimistic)",
            "prior_pcc": self.prior_pcc,
            "coverage_raw": coverage(self.y, mean - z * std, mean + z * std),
            "coverage_calibrated": coverage(self.y, mean - q * std, mean + q * std),
            "coverage_calibrated_note": "on the split the multiplier was fitted on",
            "coverage_crossfit": held_out,
        }, spread

    def _crossfit_coverage(self, mean, std, level: float) -> float | None:
        """Coverage of the conformal interval with the multiplier fitted on the other half of
        the validation patients (two patient-disjoint halves): a held-out estimate."""
        half = _halves(list(self.val.patient_ids), self.config.seed)
        if half.all() or not half.any():
            return None
        hits = []
        for fit, test in ((half, ~half), (~half, half)):
            q = conformal_multiplier(self.y[fit], mean[fit], std[fit], level)
            lo, hi = mean[test] - q * std[test], mean[test] + q * std[test]
            hits.append(coverage(self.y[test], lo, hi) * test.sum())
        return float(sum(hits) / len(half))
