"""The image path (attention-MIL slide head), the predictive mean's mix and the spread."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from rnafm.training.targets import Difficulty, ErrorTrend, Novelty, OutputTransform, Spread


def _transform(g: int) -> OutputTransform:
    rng = np.random.default_rng(0)
    return OutputTransform(
        mean=rng.normal(3, 1, g), std=rng.uniform(0.5, 2, g), res_scale=rng.uniform(0.3, 1, g)
    )


def test_head_weight_one_gives_the_head_and_keeps_the_spread():
    rng = np.random.default_rng(1)
    t = _transform(13)
    x = rng.normal(size=(5, 6, 13))  # (n, S, G)
    prior, head = rng.normal(size=(5, 13)), rng.normal(size=(5, 13))
    out = t.to_log2(x, prior, blend=0.5, head_z=head, head_weight=1.0)  # (n, S, G)
    np.testing.assert_allclose(out.mean(axis=1), head * t.std + t.mean, atol=1e-10)
    want_sd = x.std(axis=1) * t.res_scale * t.std  # deviations kept in res_scale units
    np.testing.assert_allclose(out.std(axis=1), want_sd, rtol=1e-10)
    half = t.to_log2(x, prior, blend=0.5, head_z=head, head_weight=0.25).mean(axis=1)
    flow = prior + 0.5 * t.res_scale * x.mean(axis=1)
    np.testing.assert_allclose(half, (0.75 * flow + 0.25 * head) * t.std + t.mean, atol=1e-10)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_spread_sets_each_slide_and_gene_std(power):
    rng = np.random.default_rng(2)
    t = _transform(11)
    x = rng.normal(size=(4, 8, 11)) * rng.uniform(0.2, 3, (4, 1, 11))  # (n, S, G)
    spread = Spread(
        gene_scale=rng.uniform(0.5, 2, 11), flow_ref=rng.uniform(0.5, 2, 11), power=power
    )
    factor = rng.uniform(0.5, 3, 4)  # (n,)
    out = t.to_log2(x, None, spread=spread, slide_factor=factor)
    flow_sd = x.std(axis=1, ddof=1)  # (n, G)
    want = spread.gene_scale * (flow_sd / spread.flow_ref) ** power * factor[:, None]
    np.testing.assert_allclose(out.std(axis=1, ddof=1), want * t.std, rtol=1e-9)
    np.testing.assert_allclose(out.mean(axis=1), x.mean(axis=1) * t.res_scale * t.std + t.mean)


def test_novelty_leverage_is_mahalanobis_over_n():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    nv = Novelty.fit(emb, shrink=0.0)
    new = rng.normal(size=(3, 5)) * 4
    cov = np.cov(emb, rowvar=False)
    want = [(1 + mahalanobis(v, emb.mean(0), np.linalg.inv(cov)) ** 2) / 40 for v in new]
    np.testing.assert_allclose(nv.leverage(new), want, rtol=1e-8)
    far = nv.leverage(emb.mean(0, keepdims=True) + 50)
    assert far[0] > nv.leverage(emb).max()


def test_novelty_power_zero_widens_only_slides_beyond_the_training_slides():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(30, 4))
    nv = Novelty.fit(emb)
    spread = Spread(np.ones(3), np.ones(3), 0.0, nv, 0.0)
    np.testing.assert_array_equal(spread.slide_factor(emb), np.ones(30))
    far = emb.mean(0, keepdims=True) + 30.0
    h = nv.leverage(far)[0]
    assert h > nv.h_max
    np.testing.assert_allclose(spread.slide_factor(far), [np.sqrt((1 + h) / (1 + nv.h_max))])
    assert spread.slide_factor(far)[0] > 1.5
    # a positive power widens every slide by (1 + h) ** p, inside the training range too
    inside = Spread(np.ones(3), np.ones(3), 0.0, nv, 1.0).slide_factor(emb)
    np.testing.assert_allclose(inside, 1 + nv.leverage(emb))


def test_difficulty_penalty_is_the_leave_one_out_best_and_finds_a_planted_trend():
    """The closed-form leave-one-out choice equals refitting without each slide; slides whose
    embedding says 'hard' (planted) get a larger factor."""
    rng = np.random.default_rng(5)
    n, h, g = 60, 7, 30
    emb = rng.normal(size=(n, h))
    hard = np.exp(0.6 * emb[:, 2])  # (n,) residual scale grows with one embedding direction
    res = rng.normal(size=(n, g)) * hard[:, None]
    alphas = np.array([0.1, 3.0, 100.0])
    d = Difficulty.fit(emb, res, alphas=alphas)
    y = 0.5 * np.log((res**2).mean(1))
    y = y - y.mean()
    x = (emb - emb.mean(0)) / (emb.std(0) + 1e-8)

    def loo(a):  # plain loop: refit without slide i (centred on the others' mean)
        errs = []
        for i in range(n):
            keep = np.arange(n) != i
            xk, yk = x[keep], y[keep]
            mx, my = xk.mean(0), yk.mean()
            b = np.linalg.solve((xk - mx).T @ (xk - mx) + a * np.eye(h), (xk - mx).T @ (yk - my))
            errs.append(y[i] - my - (x[i] - mx) @ b)
        return np.mean(np.square(errs))

    assert d.alpha == alphas[np.argmin([loo(a) for a in alphas])]
    new = np.zeros((2, h))
    new[0, 2], new[1, 2] = -1.5, 1.5
    lo, hi = d.factor(new)
    assert hi > 1.5 * lo
    spread = Spread(np.ones(g), np.ones(g), 0.0, Novelty.fit(emb), 2.0, d, 1.0)
    near = emb[:2] * 0.5  # inside the training slides' range
    want = (1 + spread.novelty.leverage(near)) ** 2 * d.factor(near)
    np.testing.assert_allclose(spread.slide_factor(near), want)
    assert spread.slide_factor(None) is None
    far = np.zeros((1, h))
    far[0, 2] = -40.0  # 'easy' by the trend, but far outside the training slides
    assert d.factor(far)[0] < 1.0
    np.testing.assert_allclose(
        spread.slide_factor(far), (1 + spread.novelty.leverage(far)) ** 2
    )  # the difficulty term cannot narrow it


def test_spread_round_trips_with_its_slide_terms(tmp_path):
    rng = np.random.default_rng(6)
    emb = rng.normal(size=(30, 4))
    d = Difficulty.fit(emb, rng.normal(size=(30, 9)))
    spread = Spread(rng.uniform(size=9), rng.uniform(size=9), 0.5, Novelty.fit(emb), 1.0, d, 1.0)
    spread.save(tmp_path / "s.npz")
    back = Spread.load(tmp_path / "s.npz")
    new = rng.normal(size=(3, 4))
    np.testing.assert_allclose(back.slide_factor(new), spread.slide_factor(new))
    assert (back.power, back.novelty_power, back.difficulty_power) == (0.5, 1.0, 1.0)


def _poisson_errors(rng, n=400, g=60):
    """log2 counts of Poisson genes at per-gene depths, their true log2 level (n, G) and the
    per-gene mean: the error of a value predicted at its true level is counting noise."""
    depth = np.exp(rng.uniform(np.log(3), np.log(300), g))  # (G,) from low to high expression
    lam = depth * np.exp(rng.normal(0, 0.7, (n, g)))  # (n, G) slide-specific true level
    y = np.log2(rng.poisson(lam) + 1.0)  # (n, G) observed
    level = np.log2(lam + 1.0)  # (n, G) a perfect prediction
    return y, level, level.mean(axis=0)


def test_level_trend_finds_the_counting_noise_of_low_values():
    """Poisson counts on the log scale are noisier where the rate is low, and more so for
    lowly expressed genes: the fitted trend must widen values predicted below the gene's mean
    (b1 < 0) and rank the errors better than a per-gene scale; on homoscedastic errors it must
    stay near flat."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(11)
    y, level, gene_mean = _poisson_errors(rng)
    err = y - level  # (n, G)
    scale = np.sqrt((err**2).mean(axis=0))  # (G,)
    trend = ErrorTrend.fit(level - gene_mean, gene_mean, (err / scale) ** 2)
    assert trend.coef[0] < -0.3  # values predicted low are the noisy ones
    f = trend.factor(level - gene_mean, gene_mean)  # (n, G)
    flat = spearmanr(np.broadcast_to(scale, err.shape).ravel(), np.abs(err).ravel())[0]
    shaped = spearmanr((scale * f).ravel(), np.abs(err).ravel())[0]
    assert shaped > flat + 0.03
    homo = rng.normal(size=err.shape)  # errors that do not depend on the level
    flat_trend = ErrorTrend.fit(level - gene_mean, gene_mean, homo**2)
    assert np.abs(np.log(flat_trend.factor(level - gene_mean, gene_mean))).max() < 0.1


def test_level_trend_widens_values_where_the_mean_components_disagree(tmp_path):
    """Errors planted to grow with |head - (prior + flow)|: the fitted disagreement term must
    be positive, rank the errors better than a per-gene scale, reach the draws through
    to_log2 (head and prior + flow given separately) and survive a round trip."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(14)
    n, g = 300, 40
    dis = rng.normal(size=(n, g)) * rng.uniform(0.2, 1.0, g)  # (n, G) head minus prior + flow
    err = rng.normal(size=(n, g)) * np.sqrt(0.3 + (dis / dis.std(0)) ** 2)  # (n, G)
    scale = np.sqrt((err**2).mean(axis=0))
    off, gm = rng.normal(0, 0.5, (n, g)), rng.normal(5, 2, g)
    trend = ErrorTrend.fit(off, gm, (err / scale) ** 2, dis)
    assert trend.dis_ref is not None and trend.coef[3] > 0.5
    f = trend.factor(off, gm, dis)
    flat = spearmanr(np.broadcast_to(scale, err.shape).ravel(), np.abs(err).ravel())[0]
    assert spearmanr((scale * f).ravel(), np.abs(err).ravel())[0] > flat + 0.1
    with pytest.raises(ValueError, match="disagreement"):
        trend.factor(off, gm)

    t = _transform(g)
    x = rng.normal(size=(5, 8, g))  # (n, S, G)
    prior, head = rng.normal(size=(5, g)), rng.normal(size=(5, g))
    spread = Spread(np.ones(g), np.ones(g), 0.0, trend=trend, trend_power=1.0)
    out = t.to_log2(x, prior, blend=1.0, head_z=head, head_weight=0.5, spread=spread)
    flow = prior + t.res_scale * x.mean(axis=1)  # (n, G)
    centre = 0.5 * flow + 0.5 * head
    want = trend.factor(centre * t.std, t.mean, head - flow)  # (n, G)
    np.testing.assert_allclose(out.std(axis=1, ddof=1), want * t.std, rtol=1e-9)
    spread.save(tmp_path / "s.npz")
    back = Spread.load(tmp_path / "s.npz")
    np.testing.assert_allclose(back.trend.dis_ref, trend.dis_ref)
    np.testing.assert_allclose(back.entry_factor(centre * t.std, t.mean, head - flow), want)


def test_level_trend_signal_slopes_separate_genes_the_image_predicts():
    """Errors grow with |d| only in the genes with image signal: the |d| x signal slope must
    carry it (positive) while the plain |d| slope stays near zero."""
    rng = np.random.default_rng(15)
    n, g = 400, 30
    signal = np.r_[np.full(15, 0.8), np.zeros(15)]  # (G,)
    off = rng.normal(0, 1, (n, g))
    err = rng.normal(size=(n, g)) * np.exp(0.5 * np.abs(off) * (signal > 0))  # (n, G)
    u = (err / np.sqrt((err**2).mean(axis=0))) ** 2
    trend = ErrorTrend.fit(off, rng.normal(5, 1, g), u, signal=signal)
    assert trend.coef.shape == (5,)  # d, d L, |d|, d s, |d| s
    assert trend.coef[4] > 1.0 and abs(trend.coef[2]) < 0.1  # log var = |d| / 0.8 x signal


def test_error_trend_survives_genes_without_errors_and_non_finite_input():
    """A gene with zero error everywhere (a constant gene) or an infinite squared error must not
    turn the trend into NaN: finite factors, and a factor of 1 where nothing was learnable."""
    rng = np.random.default_rng(17)
    off, gm = rng.normal(size=(20, 6)), rng.normal(5, 1, 6)
    u = rng.exponential(size=(20, 6)) * np.exp(0.5 * off)
    u[:, 2] = 0.0  # a gene the validation slides predict exactly
    u[3, 4] = np.inf
    t = ErrorTrend.fit(off, gm, u)
    f = t.factor(off, gm)
    assert np.isfinite(t.coef).all() and np.isfinite(f).all()
    none = ErrorTrend.fit(off, gm, np.zeros((20, 6)))
    np.testing.assert_allclose(none.factor(off, gm), 1.0)


def test_level_trend_newton_fit_is_the_likelihood_optimum():
    """The damped Newton fit with profiled per-gene intercepts equals scipy's minimiser of the
    gamma (Gaussian-variance) deviance over intercepts and slopes, with the same ridge."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(12)
    off, gm = rng.normal(0, 1.2, (50, 7)), rng.normal(4, 2, 7)
    u = rng.exponential(size=(50, 7)) * np.exp(0.4 * off)
    t = ErrorTrend.fit(off, gm, u, ridge=1e-2)
    x = t._features(off, gm)  # (50, 7, 3)

    def loss(b):  # one intercept per gene (b[:7]) and the shared slopes (b[7:])
        eta = b[None, :7] + x @ b[7:]
        return np.mean(eta + u * np.exp(-eta)) + 0.5e-2 * b[7:] @ b[7:]

    best = minimize(loss, np.zeros(10), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(t.coef, best[7:], atol=1e-5)
    f = t.factor(off, gm)  # (50, 7) rms 1 per gene on the fitting slides
    np.testing.assert_allclose(np.sqrt((f**2).mean(axis=0)), 1.0, rtol=1e-10)


def test_level_trend_shapes_the_draws_within_a_gene_and_round_trips(tmp_path):
    rng = np.random.default_rng(13)
    t = _transform(9)
    trend = ErrorTrend(np.array([-0.5, 0.2, 0.1]), 3.0, 1.0)
    spread = Spread(np.ones(9), np.ones(9), 0.0, trend=trend, trend_power=1.0)
    x = rng.normal(size=(4, 16, 9))  # (n, S, G)
    prior = rng.normal(size=(4, 9))
    out = t.to_log2(x, prior, blend=0.0, spread=spread)  # (n, S, G)
    centre = prior * t.std  # log2 offset of the predictive mean from the gene means
    want = x.std(axis=1, ddof=1) / x.std(axis=1, ddof=1) * trend.factor(centre, t.mean)
    np.testing.assert_allclose(out.std(axis=1, ddof=1), want * t.std, rtol=1e-9)
    np.testing.assert_allclose(out.mean(axis=1), prior * t.std + t.mean, atol=1e-10)
    spread.save(tmp_path / "s.npz")
    back = Spread.load(tmp_path / "s.npz")
    assert back.trend_power == 1.0
    np.testing.assert_allclose(back.entry_factor(centre, t.mean), trend.factor(centre, t.mean))
    off = Spread(np.ones(9), np.ones(9), 0.0, trend=trend, trend_power=0.0)
    assert off.entry_factor(centre, t.mean) is None


def _validator_for_spread(z, patients, res_scale):
    """A Validator with just what ``_spread`` reads: validation z-scores, patients, targets."""
    from types import SimpleNamespace

    from rnafm.training.config import TrainConfig
    from rnafm.training.run import Normalisation
    from rnafm.training.targets import Targets
    from rnafm.training.validate import Validator

    g = z.shape[1]
    v = Validator.__new__(Validator)
    v.config = TrainConfig()
    v.z = z
    v.val = SimpleNamespace(patient_ids=patients)
    norm = Normalisation(mean=np.linspace(2, 9, g), std=np.ones(g))
    prior = SimpleNamespace(res_std=res_scale)
    v.targets = Targets(norm=norm, prior=prior)
    v.prior_z = np.zeros_like(z)
    return v


@pytest.mark.parametrize("planted", [True, False])
def test_validation_picks_the_error_trend_where_errors_follow_the_level(planted):
    """Validation errors whose size follows the predicted level: the spread's CRPS choice on
    patient halves must switch the trend on and lower the CRPS; with errors that do not follow
    it, the chosen spread keeps each value's width within 10% of a per-gene scale."""
    rng = np.random.default_rng(16)
    n, g = 80, 60
    centre = rng.normal(0, 1, (n, g))  # (n, G) predicted z = log2 offsets (std 1)
    sd = np.exp(0.6 * centre) if planted else np.ones((n, g))
    err = rng.normal(size=(n, g)) * sd * 0.7
    v = _validator_for_spread(centre + err, [f"P{i}" for i in range(n)], np.full(g, 0.7))
    x = rng.normal(size=(n, 4, g))  # (n, S, G) flow draws (their spread carries nothing)
    spread, table = v._spread(x, v.targets.norm.inverse(centre), None, None, None)
    on = spread.entry_factor(centre, v.targets.norm.mean)
    if planted:
        assert spread.trend_power == 1.0 and spread.trend.coef[0] > 0.8
        best_off = min(val for k, val in table.items() if k.endswith("trend_power=0.0"))
        assert min(table.values()) < 0.95 * best_off
    else:
        assert on is None or np.abs(np.log(on)).max() < 0.1


def test_image_path_learns_a_size_driven_signal():
    """Expression follows the share of one rare cluster: the regression must find it."""
    from rnafm.model import ModelConfig, build_model
    from rnafm.pathways import PathwayTokens
    from rnafm.training.config import TrainConfig, apply_overrides
    from rnafm.training.image_path import fit_image_path

    rng = np.random.default_rng(4)
    n, k, d, g = 90, 6, 5, 9
    centres = rng.normal(0, 1, (k, d))
    clusters = centres[None] + 0.1 * rng.normal(size=(n, k, d))  # (n, K, D)
    sizes = rng.integers(20, 200, (n, k)).astype(float)
    sizes[:, 0] = rng.integers(0, 30, n)  # the rare cluster (sometimes absent)
    share = sizes[:, 0] / sizes.sum(1)
    z = np.outer(share - share.mean(), rng.normal(0, 1, g)) / share.std()
    z += 0.2 * rng.normal(size=z.shape)
    tokens = PathwayTokens(
        genes=[f"G{i}" for i in range(g)],
        names=["a", "background_0"],
        members=[np.arange(0, 5), np.arange(5, g)],
        is_background=np.array([False, True]),
    )
    torch.manual_seed(0)
    model = build_model(tokens, feature_dim=d, n_clusters=k, config=ModelConfig(hidden=16))
    over = {"head_epochs": 60, "head_every": 10, "head_lr": 3e-3, "batch_size": 16}
    cfg = apply_overrides(TrainConfig(), over)
    t = [torch.as_tensor(a, dtype=torch.float32) for a in (clusters, sizes, z)]
    tr, va = slice(0, 70), slice(70, n)
    info = fit_image_path(
        model, t[0][tr], t[1][tr], t[2][tr], val=(t[0][va], t[1][va], z[va]), config=cfg, seed=0
    )
    assert info["val_pcc"] > 0.6, info
    assert not any(p.requires_grad for p in model.image.parameters())  # frozen for the flow
    model.train()
    assert not model.image.training  # a frozen image path stays in eval mode (no dropout)


def test_run_records_its_mean_mix_and_widens_for_a_novel_slide(tiny_cohort, tiny_run):
    import rnafm
    from rnafm.training.run import SPREAD

    cal = json.loads((tiny_run / "calibration.json").read_text())
    assert {
        "blend",
        "head_weight",
        "head_weight_slope",
        "spread_power",
        "coverage_crossfit",
    } <= set(cal)
    assert (tiny_run / SPREAD).is_file()
    metrics = json.loads((tiny_run / "val_metrics.json").read_text())
    assert metrics["image_path"]["epochs"] >= 1
    model = rnafm.load_model(tiny_run)
    data = model.load_data(
        tiny_cohort["root"] / "features", reference=tiny_cohort["root"] / "test.csv"
    )
    usual = model.predict_data(data, draws=8, seed=0)
    odd = data.subset(np.arange(len(data)))
    shift = np.random.default_rng(0).normal(0, 10, odd.clusters.shape[-1])  # (D,)
    odd.clusters = (odd.clusters + shift).astype(np.float32)  # far from every training slide
    novel = model.predict_data(odd, draws=8, seed=0)
    assert novel.std.mean() > 1.05 * usual.std.mean()
    from rnafm.flow.draws import slide_embeddings
    from rnafm.training.targets import Spread

    nov = Spread.load(tiny_run / SPREAD).novelty
    lev = [
        nov.leverage(slide_embeddings(model.model, d.clusters, d.sizes, device=model.device))
        for d in (data, odd)
    ]
    assert lev[1].mean() > lev[0].mean()  # the novel slides are further from the training ones
    assert np.isfinite(novel.upper).all()


def test_gene_head_weights_rise_with_the_signal_and_mix_each_gene():
    from rnafm.training.targets import gene_head_weights

    signal = np.array([0.0, 0.2, 0.5, 0.9])
    assert gene_head_weights(0.25, 0.0, signal) == 0.25  # no slope: one weight for all
    assert gene_head_weights(0.25, 1.0, None) == 0.25  # no signal (no prior): one weight
    np.testing.assert_allclose(gene_head_weights(0.25, 1.0, signal), [0.25, 0.45, 0.75, 1.0])
    rng = np.random.default_rng(4)
    t = _transform(4)
    x = rng.normal(size=(3, 5, 4))  # (n, S, G)
    prior, head = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    w = gene_head_weights(0.25, 1.0, signal)  # (G,)
    out = t.to_log2(x, prior, blend=1.0, head_z=head, head_weight=w).mean(axis=1)
    flow = prior + t.res_scale * x.mean(axis=1)  # (n, G)
    np.testing.assert_allclose(out, ((1 - w) * flow + w * head) * t.std + t.mean, atol=1e-10)


@pytest.mark.parametrize("planted", [True, False])
def test_validation_leans_on_the_head_where_the_image_signal_is_strong(planted):
    """A head that is accurate exactly on the genes the prior finds image signal in: validation
    must give it a weight that rises with the signal (slope > 0) and a better PCC than any one
    weight; a head as good as prior + flow on every gene keeps one weight (slope 0)."""
    from types import SimpleNamespace

    from rnafm.metrics import mean_pcc
    from rnafm.training.config import TrainConfig
    from rnafm.training.run import Normalisation
    from rnafm.training.targets import Targets
    from rnafm.training.validate import Validator

    rng = np.random.default_rng(9)
    n, g = 150, 41
    signal = np.linspace(0.0, 0.8, g)  # (G,)
    truth = rng.normal(size=(n, g))  # (n, G) z = log2 (mean 0, std 1)
    v = Validator.__new__(Validator)
    v.config = TrainConfig()
    v.y = truth
    v.targets = Targets(
        norm=Normalisation(mean=np.zeros(g), std=np.ones(g)),
        prior=SimpleNamespace(res_std=np.sqrt(1.0 - signal)),
    )
    v.blends = (1.0,)
    v.prior_z = truth + rng.normal(size=(n, g))  # prior + flow: the same error on every gene
    head_sd = 0.2 + 2.0 * (1.0 - signal / 0.8) if planted else np.ones(g)  # (G,)
    head_z = truth + rng.normal(size=(n, g)) * head_sd
    x = np.zeros((n, 2, g))  # no flow correction: the centre is the prior
    grid = v._grid(x, head_z)
    blend, weight, slope = v._best(grid)
    flat = max(val for k, val in grid.items() if k[2] == 0.0)
    if planted:
        assert slope > 0 and grid[(blend, weight, slope)] > flat + 0.02
        assert mean_pcc(head_z, truth) < grid[(blend, weight, slope)]
        # too few validation slides to tell a per-gene weight from one weight: none tried
        few = v.config.validation.head_slope_min_slides - 1
        v.y, v.prior_z = truth[:few], v.prior_z[:few]
        assert {k[2] for k in v._grid(x[:few], head_z[:few])} == {0.0}
    else:
        assert (weight, slope) == (0.5, 0.0)


def test_prediction_mixes_the_head_per_gene_even_without_a_base_weight(tiny_cohort, tiny_run):
    """calibration.json with head weight 0 and a slope: genes with image signal must still get
    the slide head (the mean is each gene's mix of the head-free and the head-only means)."""
    import rnafm

    model = rnafm.load_model(tiny_run)
    data = model.load_data(
        tiny_cohort["root"] / "features", reference=tiny_cohort["root"] / "test.csv"
    )
    signal = model.targets.signal
    assert signal is not None and signal.max() > 0.05

    def mean_with(weight, slope):
        model.calibration = {
            **model.calibration, "head_weight": weight, "head_weight_slope": slope
        }  # fmt: skip
        return model.predict_data(data, draws=4, seed=0).mean.astype(np.float64)

    none, head, mixed = mean_with(0.0, 0.0), mean_with(1.0, 0.0), mean_with(0.0, 2.0)
    w = np.clip(2.0 * signal, 0.0, 1.0)  # (G,)
    np.testing.assert_allclose(mixed, (1 - w) * none + w * head, atol=1e-4)
    assert np.abs(mixed - none).max() > 1e-3


@pytest.mark.parametrize("with_prior", [True, False])
@pytest.mark.parametrize("with_head", [True, False])
def test_validation_grid_in_closed_form_equals_the_plain_loop(with_prior, with_head):
    """The grid's closed-form PCCs equal mean_pcc of each mixed prediction (to_log2), with odd
    sizes, a gene whose prediction is constant and one whose truth is constant."""
    from types import SimpleNamespace

    from rnafm.metrics import mean_pcc
    from rnafm.training.config import TrainConfig
    from rnafm.training.run import Normalisation
    from rnafm.training.targets import Targets, gene_head_weights
    from rnafm.training.validate import Validator

    rng = np.random.default_rng(12)
    n, s, g = 23, 3, 17
    res_std = rng.uniform(0.3, 1.0, g)
    v = Validator.__new__(Validator)
    v.config = TrainConfig()
    v.config.validation.head_slope_min_slides = 5
    norm = Normalisation(mean=rng.normal(4, 2, g), std=rng.uniform(0.5, 2, g))
    v.targets = Targets(norm=norm, prior=SimpleNamespace(res_std=res_std) if with_prior else None)
    v.blends = (0.0, 0.5, 1.0) if with_prior else (1.0,)
    v.y = rng.normal(5, 1, (n, g))
    v.y[:, 3] = 2.0  # constant truth
    v.prior_z = rng.normal(size=(n, g)) if with_prior else None
    x = rng.normal(size=(n, s, g))
    head_z = rng.normal(size=(n, g)) if with_head else None
    x[:, :, 5] = 0.0  # a gene whose prediction is constant (with the other parts)
    if with_prior:
        v.prior_z[:, 5] = 0.3
    if with_head:
        head_z[:, 5] = -0.2
    grid = v._grid(x, head_z)
    # blends x weights (0, .25, .5, .75 with every slope; 1 with slope 0) when both are known
    want = {(True, True): 3 * 17, (False, True): 5, (True, False): 3, (False, False): 1}
    assert len(grid) == want[(with_prior, with_head)]
    t = v.targets.transform
    for (b, w, slope), got in grid.items():
        ww = gene_head_weights(w, slope, v.targets.signal)
        log2 = t.to_log2(x.mean(axis=1, keepdims=True), v.prior_z, blend=b, head_z=head_z,
                         head_weight=ww)[:, 0]  # fmt: skip
        assert got == pytest.approx(mean_pcc(log2, v.y), abs=1e-9), (b, w, slope)
    # the flow's own PCC (prior + full correction, no head) is the same from a mix built with
    # the head (what score and calibrate reuse) as from one without, and equals the loop's
    flow = v._flow_pcc(x)
    assert v._flow_pcc(x, v._mix(x, head_z)) == pytest.approx(flow, abs=1e-12)
    log2 = t.to_log2(x.mean(axis=1, keepdims=True), v.prior_z, blend=max(v.blends))[:, 0]
    assert flow == pytest.approx(mean_pcc(log2, v.y), abs=1e-9)


@pytest.mark.parametrize("antithetic", [False, True])
def test_validation_pcc_is_the_one_expected_of_the_prediction_draws(antithetic):
    """Validation scores a few draws; prediction averages more. The draws' noise lowers the
    PCC of a few draws' mean, so the grid must report what the prediction's number of draws
    (calibration.draws) gives: close to the PCC of that many draws' mean, well above the raw
    PCC of the few. Without the correction a flow that learned the data's spread loses
    against an untrained one whose draws coincide."""
    from rnafm.metrics import mean_pcc
    from rnafm.training.config import TrainConfig
    from rnafm.training.run import Normalisation
    from rnafm.training.targets import Targets
    from rnafm.training.validate import Validator, mean_noise_var

    rng = np.random.default_rng(21)
    n, g, few, many = 301, 57, 4, 64
    truth = rng.normal(size=(n, g))  # (n, G)
    mu = 0.4 * truth + 0.6 * rng.normal(size=(n, g))  # the flow's own mean: PCC about 0.55

    def draws(s):  # (n, s, G) around mu; antithetic pairs share their mean's noise
        if not antithetic:
            return mu[:, None] + rng.normal(size=(n, s, g))
        pair = mu[:, None] + rng.normal(size=(n, s // 2, g))  # (n, P, G) pair means
        d = rng.normal(size=(n, s // 2, g))
        return np.stack([pair + d, pair - d], axis=2).reshape(n, s, g)

    v = Validator.__new__(Validator)
    v.config = TrainConfig(antithetic=antithetic)
    v.config.calibration.draws = many
    v.targets = Targets(norm=Normalisation(mean=np.zeros(g), std=np.ones(g)), prior=None)
    v.blends, v.prior_z, v.y = (1.0,), None, truth
    x_few, x_many = draws(few), draws(many)
    got = v._grid(x_few, None)[(1.0, 0.0, 0.0)]
    raw_few = mean_pcc(x_few.mean(axis=1), truth)
    want = mean_pcc(x_many.mean(axis=1), truth)
    assert raw_few < want - 0.08  # the few draws' noise matters here
    assert abs(got - want) < 0.02
    assert v._flow_pcc(x_few) == pytest.approx(got)
    # the noise of the mean: pair means (antithetic) or single draws are the units
    units = 0.5 * (x_few[:, 0::2] + x_few[:, 1::2]) if antithetic else x_few
    np.testing.assert_allclose(
        mean_noise_var(x_few, antithetic=antithetic),
        units.var(axis=1, ddof=1) / units.shape[1],
    )
    # as many validation draws as the prediction's: nothing to correct
    v.config.calibration.draws = few
    assert v._grid(x_few, None)[(1.0, 0.0, 0.0)] == pytest.approx(raw_few, abs=1e-9)
