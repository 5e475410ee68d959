"""Uncertainty metrics against closed forms, brute force and simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from rnafm.evaluate.calibration import (
    crps_draws,
    crps_gaussian,
    draws_interval,
    gaussian_interval,
    reliability_curve,
    std_error_spearman,
    uncertainty_metrics,
)
from rnafm.metrics import conformal_quantiles, coverage


def test_crps_gaussian_matches_numerical_integral() -> None:
    for y, mu, sd in [(0.3, 0.0, 1.0), (2.5, 1.0, 0.4), (-1.0, 0.7, 2.2)]:
        f = lambda x, y=y, mu=mu, sd=sd: (stats.norm.cdf(x, mu, sd) - (x >= y)) ** 2  # noqa: E731
        ref = integrate.quad(f, -30, y, limit=200)[0] + integrate.quad(f, y, 30, limit=200)[0]
        assert crps_gaussian(y, mu, sd) == pytest.approx(ref, rel=1e-6)


def test_crps_draws_matches_brute_force_and_closed_form() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(3, 9, 5))
    y = rng.normal(size=(3, 5))
    brute = np.abs(draws - y[:, None]).mean(1) - 0.5 * np.abs(
        draws[:, :, None] - draws[:, None, :]
    ).mean((1, 2))
    np.testing.assert_allclose(crps_draws(y, draws), brute, rtol=1e-12)
    # many draws of N(mu, sd): converges to the closed form
    mu, sd = np.array([[0.0, 1.0]]), np.array([[1.0, 0.5]])
    big = mu[:, None] + sd[:, None] * stats.norm.ppf((np.arange(4000) + 0.5) / 4000)[None, :, None]
    yy = np.array([[0.4, -0.2]])
    np.testing.assert_allclose(crps_draws(yy, big), crps_gaussian(yy, mu, sd), rtol=2e-3)


def test_fair_crps_of_few_draws_is_unbiased_for_the_distribution() -> None:
    """Over many replications, the fair CRPS of 4 draws averages to the closed-form CRPS of
    the distribution they come from; the empirical one is larger by E|X - X'| / (2 S)."""
    rng = np.random.default_rng(3)
    reps, s, sd = 40000, 4, 1.5
    y = np.full((reps, 1), 0.7)
    draws = rng.normal(0.0, sd, (reps, s, 1))
    want = crps_gaussian(np.array([[0.7]]), np.zeros((1, 1)), np.full((1, 1), sd))[0, 0]
    fair = crps_draws(y, draws, fair=True).mean()
    plain = crps_draws(y, draws).mean()
    assert fair == pytest.approx(want, rel=0.01)
    assert plain - want == pytest.approx(sd / np.sqrt(np.pi) / s, rel=0.1)  # E|X-X'| / (2S)
    keep = ~np.eye(s, dtype=bool)  # distinct draws that are not partners (2j, 2j + 1)
    for j in range(s // 2):
        keep[2 * j, 2 * j + 1] = keep[2 * j + 1, 2 * j] = False
    pair = np.abs(draws[:3, :, None] - draws[:3, None, :])  # (3, S, S, 1)
    brute = np.abs(draws[:3] - y[:3, None]).mean(1) - 0.5 * pair[:, keep].mean(1)
    np.testing.assert_allclose(crps_draws(y[:3], draws[:3], fair=True), brute, rtol=1e-12)
    # antithetic draws (z, -z): still unbiased, because partners are left out
    z = rng.normal(0.0, sd, (reps, s // 2, 1))
    anti = np.stack([z, -z], axis=2).reshape(reps, s, 1)
    assert crps_draws(y, anti, fair=True).mean() == pytest.approx(want, rel=0.01)


def test_intervals_and_coverage() -> None:
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(400, 7))
    std = rng.uniform(0.5, 2, size=(400, 7))
    y = mean + std * rng.normal(size=mean.shape)
    for lv in (0.5, 0.8, 0.9, 0.95):
        lo, hi = gaussian_interval(mean, std, lv)
        np.testing.assert_allclose(hi - mean, stats.norm.ppf(0.5 + lv / 2) * std)
        assert abs(coverage(y, lo, hi) - lv) < 0.02
    draws = mean[:, None] + std[:, None] * rng.normal(size=(400, 301, 7))
    lo, hi = draws_interval(draws, 0.9)
    np.testing.assert_allclose(lo, np.quantile(draws, 0.05, axis=1))
    assert abs(coverage(y, lo, hi) - 0.9) < 0.02
    rel = reliability_curve(y, mean=mean, std=std)
    assert np.max(np.abs(np.subtract(rel["observed"], rel["nominal"]))) < 0.02
    overconfident = reliability_curve(y, mean=mean, std=std / 3)
    assert all(
        o < n for o, n in zip(overconfident["observed"], overconfident["nominal"], strict=True)
    )


def test_conformal_restores_coverage_of_overconfident_intervals() -> None:
    rng = np.random.default_rng(2)

    def sample(n):
        mean = rng.normal(size=(n, 5))
        std = rng.uniform(0.5, 1.5, size=(n, 5))
        return mean, std, mean + 3 * std * rng.normal(size=(n, 5))  # std 3x too small

    mv, sv, yv = sample(200)
    q = conformal_quantiles(yv, mv, sv, (0.5, 0.9))
    score = np.sort((np.abs(yv - mv) / sv).ravel())
    assert q[1] == score[int(np.ceil(0.9 * (score.size + 1))) - 1]
    mt, st, yt = sample(2000)
    raw = uncertainty_metrics(
        yt, mean=mt, std=st, levels=(0.5, 0.9), conformal_q=np.broadcast_to(q, (2000, 2))
    )
    assert raw["coverage"]["0.9"] < 0.5
    assert abs(raw["coverage_conformal"]["0.9"] - 0.9) < 0.02
    assert abs(raw["coverage_conformal"]["0.5"] - 0.5) < 0.03


def test_std_error_spearman_and_metrics_bundle() -> None:
    rng = np.random.default_rng(3)
    std = rng.uniform(0.1, 3, size=(60, 4))
    mean = np.zeros_like(std)
    y = std * rng.normal(size=std.shape)
    s = std_error_spearman(y, mean, std)
    ref = stats.spearmanr(std.ravel(), np.abs(y).ravel()).statistic
    assert s["pooled"] == pytest.approx(ref) and s["pooled"] > 0.3
    per_gene = [stats.spearmanr(std[:, j], np.abs(y[:, j])).statistic for j in range(4)]
    assert s["mean_per_gene"] == pytest.approx(np.mean(per_gene))
    # the per-gene ceiling: scipy's pooled Spearman of each gene's own RMS error, reached by a
    # std equal to it, above a std that is per gene but wrong (reversed over the genes), and
    # below this std, which varies within each gene as the errors do
    rms = np.sqrt(np.mean(y**2, axis=0))
    ceil = stats.spearmanr(np.broadcast_to(rms, y.shape).ravel(), np.abs(y).ravel()).statistic
    assert s["gene_ceiling"] == pytest.approx(ceil, abs=1e-12)
    at = std_error_spearman(y, mean, np.broadcast_to(rms, y.shape))
    assert at["pooled"] == pytest.approx(ceil, abs=1e-12)
    wrong = std_error_spearman(y, mean, np.broadcast_to(rms[::-1], y.shape))
    assert wrong["pooled"] < ceil and wrong["gene_ceiling"] == pytest.approx(ceil)
    assert s["pooled"] > s["gene_ceiling"] + 0.1
    assert std_error_spearman(y, mean, np.ones_like(y))["pooled"] is None  # constant std
    assert uncertainty_metrics(y, mean=mean) is None
    m = uncertainty_metrics(y, mean=mean, std=std)
    assert m["interval_source"] == "gaussian"
    assert m["crps"] == pytest.approx(crps_gaussian(y, mean, std).mean())
    draws = mean[:, None] + std[:, None] * rng.normal(size=(60, 40, 4))
    md = uncertainty_metrics(y, mean=mean, draws=draws)
    assert md["crps_source"] == "gaussian" and md["interval_source"] == "draws"
    few = uncertainty_metrics(y, mean=mean, draws=draws[:, :8])
    assert few["interval_source"] == "gaussian" and few["crps_source"] == "gaussian"
    np.testing.assert_allclose(few["mean_std"], draws[:, :8].std(1, ddof=1).mean())
    assert md["crps"] == pytest.approx(crps_gaussian(y, mean, draws.std(1, ddof=1)).mean())
    assert md["crps_draws"] == pytest.approx(crps_draws(y, draws, fair=True).mean())


def test_crps_of_draws_rescaled_to_their_own_mean_and_std() -> None:
    """rnafm sets each value's draws to the predicted mean and std. Such draws are not
    independent, and their fair CRPS falls below the CRPS of the distribution they stand for;
    the CRPS that uncertainty_metrics reports (of the mean and std) does not."""
    rng = np.random.default_rng(5)
    n, s, g = 3000, 16, 20
    mu = rng.normal(size=(n, g))
    sd = rng.uniform(0.5, 2.0, size=(n, g))
    y = mu + sd * rng.normal(size=(n, g))  # the truth follows the stated distribution
    want = crps_gaussian(y, mu, sd).mean()
    z = rng.normal(size=(n, s // 2, g))
    anti = np.stack([z, -z], axis=2).reshape(n, s, g)  # pairs (z, -z), as rnafm's sampler
    for raw in (anti, rng.normal(size=(n, s, g))):
        dev = raw - raw.mean(1, keepdims=True)
        draws = mu[:, None] + dev / dev.std(1, ddof=1, keepdims=True) * sd[:, None]
        m = uncertainty_metrics(y, mean=draws.mean(1), draws=draws)
        assert m["crps"] == pytest.approx(want, rel=1e-9)  # the std of the draws is sd
        assert m["crps_draws"] < 0.99 * want  # too small: the draws are not independent


def test_std_error_spearman_ranks_slides() -> None:
    # slides whose errors are larger on every gene (a factor per slide), genes on their own scales
    rng = np.random.default_rng(8)
    n, g = 41, 300
    slide = rng.uniform(0.5, 2.0, size=(n, 1))
    gene = rng.uniform(0.1, 5.0, size=(1, g))
    y = slide * gene * rng.normal(size=(n, g))
    mean = np.zeros_like(y)
    s = std_error_spearman(y, mean, slide * gene)["per_slide"]
    # a plain loop: each slide's spread and error size relative to each gene's scale
    rel_s = [np.mean([slide[i, 0] * gene[0, j] / np.mean(slide * gene[0, j]) for j in range(g)])
             for i in range(n)]  # fmt: skip
    rms = np.sqrt(np.mean(y**2, axis=0))
    rel_e = [np.sqrt(np.mean((np.abs(y[i]) / rms) ** 2)) for i in range(n)]
    assert s == pytest.approx(stats.spearmanr(rel_s, rel_e).statistic, abs=1e-12)
    assert s > 0.8  # 300 genes average the noise of each error away
    # a spread that ignores the slide says nothing about which slides to trust
    assert std_error_spearman(y, mean, np.broadcast_to(gene, y.shape))["per_slide"] is None
    reversed_ = std_error_spearman(y, mean, (2.5 - slide) * gene)["per_slide"]
    assert reversed_ == pytest.approx(-s)
