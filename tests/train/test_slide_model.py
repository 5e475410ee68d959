"""The image path (attention-MIL slide head), the predictive mean's mix and the spread."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from rnafm.training.targets import Difficulty, Novelty, OutputTransform, Spread


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
    assert {"blend", "head_weight", "spread_power", "coverage_crossfit"} <= set(cal)
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
