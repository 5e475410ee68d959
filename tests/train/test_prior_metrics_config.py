"""Oracle tests: closed-form LOO ridge, cross-fitting, metrics, conformal multiplier, config."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.errors import InputError
from rnafm.metrics import conformal_multiplier, coverage, mean_pcc, per_gene_pcc
from rnafm.training.config import TrainConfig, apply_overrides
from rnafm.training.prior import cross_fit_ridge, fit_ridge, pool_clusters


def _brute_ridge(x, y, alpha):
    """Ridge with an unpenalised intercept, solved directly: (w (D,), b)."""
    xm, ym = x.mean(0), y.mean()
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, ym - xm @ w


def test_ridge_matches_direct_solution_and_brute_force_loo():
    rng = np.random.default_rng(0)
    n, d, g = 13, 5, 3
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=(d, g)) + rng.normal(size=(n, g))
    rel = (0.01, 1.0, 100.0)
    prior = fit_ridge(x, y, rel)
    xc = x - x.mean(0)
    scale = np.mean(np.linalg.svd(xc, compute_uv=False) ** 2)
    for j in range(g):
        # the chosen alpha minimises the brute-force leave-one-out error
        errs = []
        for a in np.asarray(rel) * scale:
            res = []
            for i in range(n):
                keep = np.arange(n) != i
                w, b = _brute_ridge(x[keep], y[keep, j], a)
                res.append(y[i, j] - (x[i] @ w + b))
            errs.append(np.mean(np.square(res)))
        assert prior.alphas[j] == pytest.approx(np.asarray(rel)[np.argmin(errs)] * scale)
        w, b = _brute_ridge(x, y[:, j], prior.alphas[j])
        np.testing.assert_allclose(prior.predict(x)[:, j], x @ w + b, rtol=1e-4, atol=1e-5)


def test_cross_fit_is_out_of_fold_by_patient():
    rng = np.random.default_rng(1)
    n, d, g = 31, 6, 9
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=(d, g)) + 0.5 * rng.normal(size=(n, g))
    groups = [f"p{i // 3}" for i in range(n)]
    prior, oof = cross_fit_ridge(x, y, groups, rel_alphas=(0.1, 1.0), folds=3, seed=0, ranks=(2,))
    assert oof.shape == (n, g)
    # out-of-fold residuals are larger than in-sample residuals
    assert np.mean((y - oof) ** 2) > np.mean((y - prior.predict(x)) ** 2)
    np.testing.assert_allclose(prior.res_std, np.maximum((y - oof).std(0), 1e-3))
    # changing one patient's targets changes neither its own out-of-fold prediction
    y2 = y.copy()
    y2[:3] += 100.0
    _, oof2 = cross_fit_ridge(x, y2, groups, rel_alphas=(0.1, 1.0), folds=3, seed=0)
    _, oof1 = cross_fit_ridge(x, y, groups, rel_alphas=(0.1, 1.0), folds=3, seed=0)
    np.testing.assert_allclose(oof2[:3], oof1[:3])


def test_kernel_ridge_matches_direct_dual_solution_and_roundtrips(tmp_path):
    from rnafm.training.prior import RidgePrior, _rbf, median_gamma

    rng = np.random.default_rng(5)
    n, d, g = 17, 3, 4
    x = rng.normal(size=(n, d))
    y = np.sin(x @ rng.normal(size=(d, g))) + 0.1 * rng.normal(size=(n, g))
    gamma = median_gamma(x)
    prior = fit_ridge(x, y, (0.1, 1.0), gamma=gamma)
    x_new = rng.normal(size=(5, d))
    # kernel ridge with an unpenalised intercept, solved directly from the centred kernel
    k = _rbf(x, x, gamma)
    h = np.eye(n) - 1.0 / n
    kc = h @ k @ h
    k_new = _rbf(x_new, x, gamma)
    kc_new = (k_new - k.mean(0)) - (k_new - k.mean(0)).mean(1, keepdims=True)
    for j in range(g):
        a = np.linalg.solve(kc + prior.alphas[j] * np.eye(n), y[:, j] - y[:, j].mean())
        np.testing.assert_allclose(
            prior.predict(x_new)[:, j], kc_new @ a + y[:, j].mean(), rtol=1e-4, atol=1e-5
        )
    prior.save(tmp_path / "p.npz")
    back = RidgePrior.load(tmp_path / "p.npz")
    np.testing.assert_allclose(back.predict(x_new), prior.predict(x_new))
    assert back.kernel == "rbf"


def test_pool_clusters_is_tile_mean():
    rng = np.random.default_rng(2)
    tiles = rng.normal(size=(11, 4))
    labels = np.array([0, 0, 1, 2, 2, 2, 1, 0, 2, 1, 1])
    means = np.stack([tiles[labels == k].mean(0) for k in range(3)] + [np.zeros(4)])
    sizes = np.array([(labels == k).sum() for k in range(3)] + [0], dtype=np.float32)
    pooled = pool_clusters(means[None], sizes[None])
    np.testing.assert_allclose(pooled[0], tiles.mean(0), rtol=1e-6)


def test_per_gene_pcc_matches_corrcoef():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    b[:, 3] = 1.0  # constant gene -> NaN, skipped by the mean
    r = per_gene_pcc(a, b)
    for j in range(3):
        assert r[j] == pytest.approx(np.corrcoef(a[:, j], b[:, j])[0, 1])
    assert np.isnan(r[3]) and mean_pcc(a, b) == pytest.approx(np.nanmean(r[:3]))


def test_conformal_multiplier_covers_level():
    rng = np.random.default_rng(4)
    true = rng.normal(size=(50, 40)) * 2.0
    mean, std = np.zeros_like(true), np.ones_like(true)  # std underestimated by 2x
    q = conformal_multiplier(true, mean, std, 0.9)
    assert q == pytest.approx(2 * 1.645, rel=0.1)
    assert coverage(true, mean - q * std, mean + q * std) >= 0.9


def test_overrides():
    c = apply_overrides(
        TrainConfig(), {"lr": 3e-4, "model.depth": 2, "optim__epochs": 7, "seed": None}
    )
    assert (c.optim.lr, c.model.depth, c.optim.epochs, c.seed) == (3e-4, 2, 7, 0)
    with pytest.raises(InputError, match="ambiguous"):
        apply_overrides(TrainConfig(), {"steps": 3})  # sampler.steps and validation.steps
    with pytest.raises(InputError, match="unknown"):
        apply_overrides(TrainConfig(), {"optim.nope": 1})
    with pytest.raises(InputError, match="invalid"):
        apply_overrides(TrainConfig(), {"optim.lr": -1})
    with pytest.raises(ValueError):
        TrainConfig(bogus=1)


def test_composition_matches_a_plain_loop():
    from rnafm.training.prior import composition

    rng = np.random.default_rng(7)
    n, k, d, c = 5, 9, 3, 4
    clusters = rng.normal(size=(n, k, d))
    sizes = rng.integers(0, 6, size=(n, k)).astype(np.float32)
    sizes[:, -2:] = 0  # padding rows
    sizes[3] = 0  # a slide without sizes: its clusters count equally
    book = rng.normal(size=(c, d))
    want = np.zeros((n, c))
    for i in range(n):
        w = sizes[i] / sizes[i].sum() if sizes[i].sum() > 0 else np.full(k, 1.0 / k)
        for j in range(k):
            code = int(np.argmin([np.linalg.norm(clusters[i, j] - b) for b in book]))
            want[i, code] += w[j]
    got = composition(clusters, sizes, book)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0)


def _mixed_slides(rng, n, k=12, d=24, types=3):
    """Slides as tissue mixtures: cluster means near one of ``types`` centres, plus a large
    per-slide offset (a stain shift) the expression does not depend on; expression is linear
    in the tissue shares."""
    centres = rng.normal(size=(types, d)) * 4.0
    shares = rng.dirichlet(np.full(types, 0.7), size=n)  # (n, T)
    kind = np.stack([rng.choice(types, size=k, p=s) for s in shares])  # (n, K)
    sizes = rng.integers(5, 40, size=(n, k)).astype(np.float32)
    offset = rng.normal(size=(n, 1, d)) * 3.0
    clusters = centres[kind] + offset + 0.3 * rng.normal(size=(n, k, d))
    true = np.stack([np.bincount(kind[i], sizes[i], types) / sizes[i].sum() for i in range(n)])
    y = true @ rng.normal(size=(types, 6)) * 2.0 + 0.1 * rng.normal(size=(n, 6))
    return clusters, sizes, y


def test_prior_on_tissue_composition_is_chosen_where_expression_mixes_tissues(tmp_path):
    from rnafm.training.config import PriorConfig
    from rnafm.training.prior import RidgePrior, fit_prior, pool_clusters, refit_ridge

    rng = np.random.default_rng(11)
    clusters, sizes, y = _mixed_slides(rng, 61)
    groups = [f"p{i}" for i in range(61)]
    cfg = PriorConfig(composition_codes=(3,), rbf_widths=(), ranks=())
    prior, oof = fit_prior(clusters, sizes, y, groups, cfg, seed=0)
    assert prior.kernel == "composition" and prior.codebook.shape == (3, 24)
    plain, oof_plain = fit_prior(
        clusters, sizes, y, groups, PriorConfig(composition_codes=(), rbf_widths=(), ranks=()),
        seed=0,
    )  # fmt: skip
    assert plain.kernel == "linear" and plain.codebook is None
    assert mean_pcc(oof, y) > mean_pcc(oof_plain, y) + 0.05
    # slides are summarised with the training codebook, also after a save and a load
    c2, s2 = clusters, sizes
    pred = prior.predict_slides(c2[:9], s2[:9])
    prior.save(tmp_path / "p.npz")
    back = RidgePrior.load(tmp_path / "p.npz")
    np.testing.assert_allclose(back.predict_slides(c2[:9], s2[:9]), pred)
    assert back.kernel == "composition"
    np.testing.assert_allclose(pred, prior.predict(prior.pool(c2[:9], s2[:9])))
    assert prior.pool(c2[:9], s2[:9]).shape == (9, 3)
    assert plain.pool(c2[:9], s2[:9]).shape == (9, 24)
    np.testing.assert_allclose(plain.pool(c2, s2), pool_clusters(c2, s2))
    # a refit on more slides keeps the codebook
    again = refit_ridge(prior, prior.pool(clusters, sizes), y, cfg.alphas)
    assert again.kernel == "composition" and again.codebook is prior.codebook
    # without any sizes every cluster mean counts once
    from rnafm.training.prior import fit_codebook

    book = fit_codebook(clusters[:5], np.zeros_like(sizes[:5]), 3, seed=0)
    assert book.shape == (3, 24) and np.isfinite(book).all()
