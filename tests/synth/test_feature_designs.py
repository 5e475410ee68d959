"""Feature-level synthetic designs: files, determinism, where the truth sits, signal and hardness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from rnafm.synth.features import Design, load_feature_cohort, make_feature_cohort
from rnafm.synth.tile_truth import TileTruth, read_tile_truth, write_tile_truth

SMALL = {"grid_rows": (18, 26), "grid_cols": (22, 32)}


@pytest.fixture(scope="module")
def localized(tmp_path_factory):
    root = tmp_path_factory.mktemp("localized")
    return make_feature_cohort(
        root, design=Design.LOCALIZED, n_slides=40, n_genes=300, dim=48, seed=5, **SMALL
    )


@pytest.fixture(scope="module")
def big_localized(tmp_path_factory):
    """Enough slides for statistics across slides (still ~2 s)."""
    root = tmp_path_factory.mktemp("localized_big")
    return make_feature_cohort(
        root, design="localized", n_slides=120, n_genes=300, dim=48, seed=2, **SMALL
    )


def test_files_and_shapes(localized):
    from rnafm.cohort.reference import load_reference
    from rnafm.features.io import read_features
    from rnafm.pathways import load_gene_sets

    c = localized
    ref = load_reference(c.reference)
    assert ref.slide_ids == c.slide_ids and ref.genes == c.genes and len(c.genes) == 300
    assert ref.patient_ids == c.patient_ids
    np.testing.assert_allclose(ref.values, c.log2, atol=1e-4)
    hallmark = load_gene_sets("hallmark")
    assert all(name in hallmark for name in c.programme_names)
    assert sum(g in set().union(*hallmark.values()) for g in c.genes) > 150
    for sid in c.slide_ids[:5]:
        f = read_features(c.feature_path(sid))
        t = read_tile_truth(c.truth_path(sid))
        assert f.features.shape[1] == 48 and f.attrs["encoder"] == "synthetic-localized"
        assert f.attrs["patch_size"] == 256
        np.testing.assert_array_equal(t.coords, f.coords)
        assert t.activity.shape == (f.n_tiles, len(c.programme_names))
        assert t.activity.dtype == np.float32 and (t.activity >= 0).all()
        assert t.names == c.programme_names and t.type_names == c.type_names
        assert np.all(f.coords % 256 == 0) and len(np.unique(f.coords, axis=0)) == f.n_tiles
        assert 0 < t.sampled.sum() <= f.n_tiles
        np.testing.assert_allclose(f.features.mean(0), c.tile_means[c.slide_ids.index(sid)],
                                   atol=1e-5)  # fmt: skip
    meta = json.loads((c.root / "cohort.json").read_text())
    assert meta["design"] == "localized" and meta["seed"] == 5
    for pid, slides in meta["two_slide_patients"].items():
        assert len(slides) == 2 and all(c.patient_ids[c.slide_ids.index(s)] == pid for s in slides)
    assert meta["two_slide_patients"], "some patients should have two slides"
    assert set(meta["programmes"]) == set(c.programme_names)


def test_reopen(localized):
    again = load_feature_cohort(localized.root)
    assert again.slide_ids == localized.slide_ids and again.sites == localized.sites
    np.testing.assert_allclose(again.log2, localized.log2, atol=1e-4)
    np.testing.assert_array_equal(again.slide_activity, localized.slide_activity)


def test_same_seed_same_files(tmp_path):
    a = make_feature_cohort(tmp_path / "a", n_slides=6, n_genes=60, dim=8, seed=3, **SMALL)
    b = make_feature_cohort(tmp_path / "b", n_slides=6, n_genes=60, dim=8, seed=3, **SMALL)
    c = make_feature_cohort(tmp_path / "c", n_slides=6, n_genes=60, dim=8, seed=4, **SMALL)
    assert a.reference.read_bytes() == b.reference.read_bytes()
    assert a.reference.read_bytes() != c.reference.read_bytes()
    np.testing.assert_array_equal(a.tile_means, b.tile_means)
    ta, tb = read_tile_truth(a.truth_path("SYN-0003")), read_tile_truth(b.truth_path("SYN-0003"))
    np.testing.assert_array_equal(ta.activity, tb.activity)
    smaller = make_feature_cohort(tmp_path / "a", n_slides=4, n_genes=60, dim=8, seed=3, **SMALL)
    assert sorted(p.stem for p in smaller.features_dir.glob("*.h5")) == smaller.slide_ids
    assert not smaller.truth_path("SYN-0005").exists()


def test_sites_and_adjacent_tissue(big_localized):
    c = big_localized
    assert set(c.sites) == {"SITE-A", "SITE-B"}
    with np.load(c.root / "truth" / "cohort.npz") as z:
        adj = z["adjacent_fraction"]
    assert adj.min() < 0.1 and 0.4 < adj.max() <= 0.62
    for sid in c.slide_ids[:10]:  # lymphoid tiles outside the sample keep their halo, no tumour
        t = read_tile_truth(c.truth_path(sid))
        assert not np.isin(t.tile_type[~t.sampled], [0, 3]).any()  # tumour, necrosis


def _neighbours(coords: np.ndarray, mask: np.ndarray, step: int) -> np.ndarray:
    """Distance in tiles (Chebyshev) from each tile to the nearest tile of ``mask``."""
    grid = coords // step  # (N, 2)
    d = np.abs(grid[:, None, :] - grid[None, mask, :]).max(-1)  # (N, M)
    return d.min(1)


def test_hypoxia_on_the_necrosis_rim(big_localized):
    c = big_localized
    near, far, inside, seen = [], [], [], 0
    for sid in c.slide_ids:
        t = read_tile_truth(c.truth_path(sid))
        nec = t.tile_type == c.type_names.index("necrosis")
        if not nec.any():
            continue
        seen += 1
        d = _neighbours(t.coords, nec, 256)
        hyp = t.column("HYPOXIA")
        inside.append(hyp[nec])
        near.append(hyp[d == 1])
        far.append(hyp[d >= 6])
    assert seen >= 10
    near, far, inside = map(np.concatenate, (near, far, inside))
    assert (inside == 0).all() and (far == 0).all()
    assert near.min() > 0 and near.mean() > 0.5


def test_interferon_halo_and_proliferation_placement(big_localized):
    c = big_localized
    lym_id, tum_id = c.type_names.index("lymphoid"), c.type_names.index("tumour")
    for sid in c.slide_ids[:30]:
        t = read_tile_truth(c.truth_path(sid))
        ifn, e2f = t.column("INTERFERON_GAMMA_RESPONSE"), t.column("E2F_TARGETS")
        assert (e2f[t.tile_type != tum_id] == 0).all() and (e2f[t.tile_type == tum_id] > 0).all()
        lym = t.tile_type == lym_id
        if lym.any():
            d = _neighbours(t.coords, lym, 256)
            assert ifn[d >= 7].max(initial=0) == 0
            assert ifn[lym].mean() > ifn[(d >= 2) & (d <= 4)].mean() > 0
        else:
            assert (ifn == 0).all()


def test_interferon_genes_follow_lymphoid_aggregates(big_localized):
    from scipy.stats import spearmanr

    from rnafm.pathways import load_gene_sets

    c = big_localized
    members = set(load_gene_sets("hallmark")["HALLMARK_INTERFERON_GAMMA_RESPONSE"])
    cols = [i for i, g in enumerate(c.genes) if g in members]
    assert len(cols) >= 20
    y = c.log2[:, cols]
    score = ((y - y.mean(0)) / (y.std(0) + 1e-9)).mean(1)
    lymph = c.type_fractions[:, c.type_names.index("lymphoid")]
    rho = spearmanr(score, lymph).statistic
    assert rho > 0.5, rho
    filler = [i for i, g in enumerate(c.genes) if g.startswith("SYNTH")]
    assert abs(spearmanr(c.log2[:, filler].mean(1), lymph).statistic) < rho


def _cv_pcc(x: np.ndarray, y: np.ndarray, groups: list[str]) -> float:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    pred = cross_val_predict(model, x, y, groups=groups, cv=GroupKFold(5))
    pc, tc = pred - pred.mean(0), y - y.mean(0)
    return float(((pc * tc).sum(0) / np.sqrt((pc**2).sum(0) * (tc**2).sum(0) + 1e-12)).mean())


def test_mean_pooling_is_clearly_below_the_oracle(big_localized):
    from rnafm.pathways import load_gene_sets

    c = big_localized
    sets = load_gene_sets("hallmark")
    prog = set().union(*(sets[p] for p in c.programme_names))
    cols = [i for i, g in enumerate(c.genes) if g in prog]
    y = c.log2[:, cols]
    pooled = _cv_pcc(c.tile_means, y, c.patient_ids)
    oracle = _cv_pcc(c.oracle_features(), y, c.patient_ids)
    assert oracle > 0.4, oracle
    assert oracle - pooled > 0.05, (oracle, pooled)


@pytest.mark.parametrize("design", [Design.MIXTURE, Design.TUMOUR_NORMAL])
def test_mixture_designs(tmp_path, design):
    c = make_feature_cohort(tmp_path, design=design, n_slides=12, n_genes=80, dim=16, seed=1,
                            tiles=(20, 40))  # fmt: skip
    assert c.log2.shape == (12, 80) and c.tile_means.shape == (12, 16)
    t = read_tile_truth(c.truth_path("SYN-0004"))
    assert t.activity.shape == (t.n_tiles, 0) and t.names == []
    assert 20 <= t.sampled.sum() < 40
    truths = [read_tile_truth(c.truth_path(s)) for s in c.slide_ids]
    n_out = sum(int((~x.sampled).sum()) for x in truths)
    if design is Design.MIXTURE:
        assert n_out == 0
    else:
        assert n_out > 0 and t.type_names[-1] == "normal"
        normal = len(t.type_names) - 1
        assert all((x.tile_type[x.sampled] != normal).all() for x in truths)


def test_tile_truth_round_trip_and_errors(tmp_path):
    from rnafm.errors import InputError

    truth = TileTruth(
        coords=np.array([[0, 0], [256, 0]]),
        activity=np.array([[0.5], [0.0]], dtype=np.float32),
        names=["HALLMARK_HYPOXIA"],
    )
    write_tile_truth(tmp_path / "t.h5", truth)
    back = read_tile_truth(tmp_path / "t.h5")
    np.testing.assert_array_equal(back.coords, truth.coords)
    assert back.names == ["HALLMARK_HYPOXIA"] and back.tile_type is None
    np.testing.assert_array_equal(back.column("hypoxia"), [0.5, 0.0])
    with pytest.raises(KeyError):
        back.column("E2F_TARGETS")
    with pytest.raises(InputError, match="not found"):
        read_tile_truth(tmp_path / "missing.h5")


def test_image_cohort_tile_truth(tiny_cohort):
    from rnafm.synth.config import Label
    from rnafm.synth.tile_truth import IMAGE_PROGRAMMES, tile_truth_for_slide

    lat = tiny_cohort.load_latents()
    sid = max(tiny_cohort.slide_ids, key=lambda s: int((lat["labels"][s] == Label.NECROSIS).sum()))
    cell = int(lat["cell_px"])
    patch = 4 * cell
    w, h = tiny_cohort.config.slide_width, tiny_cohort.config.slide_height
    xs, ys = np.meshgrid(np.arange(0, w - patch, patch), np.arange(0, h - patch, patch))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    t = tile_truth_for_slide(tiny_cohort, sid, coords, patch)
    assert t.activity.shape == (len(coords), len(IMAGE_PROGRAMMES)) and (t.activity >= 0).all()
    np.testing.assert_array_equal(t.coords, coords)
    labels = lat["labels"][sid]

    def covers(mask):
        return np.array(
            [mask[y // cell : (y + patch) // cell, x // cell : (x + patch) // cell].any()
             for x, y in coords]
        )  # fmt: skip

    assert (t.activity[~covers(labels != Label.BACKGROUND)] == 0).all()
    tile_has_tumour = covers(np.isin(labels, [Label.TUMOUR, Label.TUMOUR_INFILTRATED]))
    hyp = t.activity[:, IMAGE_PROGRAMMES.index("HALLMARK_HYPOXIA")]
    ifn = t.activity[:, IMAGE_PROGRAMMES.index("HALLMARK_INTERFERON_GAMMA_RESPONSE")]
    all_necrosis = covers(labels == Label.NECROSIS) & ~covers(labels != Label.NECROSIS)
    assert (hyp[all_necrosis] == 0).all() and (ifn[all_necrosis] == 0).all()
    assert hyp[covers(labels == Label.NECROSIS) & ~all_necrosis].max(initial=0) > 0
    e2f = t.activity[:, IMAGE_PROGRAMMES.index("HALLMARK_E2F_TARGETS")]
    assert (e2f[~tile_has_tumour] == 0).all() and (e2f[tile_has_tumour] > 0).all()
    from rnafm.synth.cohort import load_cohort

    again = tile_truth_for_slide(load_cohort(tiny_cohort.root), sid, coords, patch, latents=lat)
    np.testing.assert_array_equal(again.activity, t.activity)


def test_bulk_equals_the_direct_sum_over_tiles():
    """The fast bulk expression equals the RNA-weighted mean of 2 ** (profile + act @ load)."""
    from rnafm.pathways import load_gene_sets
    from rnafm.synth import feature_localized as fl
    from rnafm.synth.features import FeatureCohortConfig

    cfg = FeatureCohortConfig(n_genes=120, dim=8)
    m = fl._build_model(cfg, load_gene_sets("hallmark"), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    types = rng.integers(0, len(fl.TYPE_NAMES), 300)
    act = (rng.random((300, len(fl.PROGRAMMES))) * (rng.random((300, 6)) < 0.3)).astype(np.float32)
    load = np.zeros((len(fl.PROGRAMMES), 120))
    load[:, m.prog_genes] = m.load
    w = fl._RNA_CONTENT[types][:, None]  # (N, 1)
    each = w * np.exp2(m.log_prof[types] + act @ load)  # (N, G)
    by_type = fl._bulk(m, types, act)  # (T, G)
    np.testing.assert_allclose(by_type.sum(0), each.sum(0) / w.sum(), rtol=1e-5)
    for t in range(len(fl.TYPE_NAMES)):  # the split by type is the sum over that type's tiles
        np.testing.assert_allclose(by_type[t], each[types == t].sum(0) / w.sum(), rtol=1e-5)


@pytest.mark.parametrize("design", ["mixture", "localized"])
def test_state_noise_makes_error_size_follow_composition(tmp_path, design):
    """With state_noise, the log-expression change it causes is larger where the types with a
    large state sd dominate; with read_depth, lowly expressed genes are noisier."""
    kw = {"n_slides": 40, "n_genes": 300, "dim": 8, "seed": 3}
    if design == "localized":
        kw |= {"grid_rows": (12, 14), "grid_cols": (12, 14)}
    base = make_feature_cohort(tmp_path / "a", design=design, **kw)
    noisy = make_feature_cohort(tmp_path / "b", design=design, state_noise=1.0, **kw)
    np.testing.assert_array_equal(base.tile_means, noisy.tile_means)  # images unchanged
    delta = np.abs(noisy.log2 - base.log2).mean(axis=1)  # (n,)
    assert delta.mean() > 0.1
    if design == "localized":  # tumour has the largest state sd, necrosis the smallest
        share = base.type_fractions[:, 0]  # tumour share of the sampled region
        assert spearmanr(share, delta)[0] > 0.3
    counted = make_feature_cohort(tmp_path / "c", design=design, read_depth=2e5, **kw)
    d = np.abs(counted.log2 - base.log2)  # (n, G)
    low = base.log2.mean(0) < np.quantile(base.log2.mean(0), 0.2)
    high = base.log2.mean(0) > np.quantile(base.log2.mean(0), 0.8)
    assert d[:, low].mean() > 2 * d[:, high].mean()


def test_config_is_checked_and_kept(tmp_path):
    from pydantic import ValidationError

    from rnafm.synth.features import FeatureCohortConfig

    with pytest.raises(ValidationError):
        FeatureCohortConfig(grid_rows=(30, 20))
    with pytest.raises(ValidationError):
        FeatureCohortConfig(unknown_setting=1)
    cfg = FeatureCohortConfig(design="mixture", n_slides=5, n_genes=40, dim=4, tiles=(10, 20))
    c = make_feature_cohort(tmp_path, config=cfg, seed=2)
    assert c.design is Design.MIXTURE and len(c.slide_ids) == 5 and c.config.seed == 2


def test_tile_expression_mixes_into_the_bulk(tmp_path):
    """The maps benchmark's oracle: the true tile expressions, RNA-weighted over the sampled
    tiles, are the slide's bulk (up to the generator's 0.1 log2 per-gene noise)."""
    from rnafm.synth.feature_localized import _RNA_CONTENT, TileExpression

    c = make_feature_cohort(tmp_path, design="localized", n_slides=6, n_genes=200, dim=16,
                            seed=4, noise=0.0, hidden_sd=0.0, **SMALL)  # fmt: skip
    genes = list(c.genes)[::-1]  # any gene order
    oracle = TileExpression(c.config, genes)
    col = [list(c.genes).index(g) for g in genes]
    for i, sid in enumerate(c.slide_ids):
        t = read_tile_truth(c.truth_path(sid))
        perm = np.arange(len(t.names))[::-1]  # columns in another order
        log2 = oracle.log2(t.tile_type, t.activity[:, perm], [t.names[j] for j in perm])
        w = _RNA_CONTENT[t.tile_type] * t.sampled  # (N,)
        mix = (w[:, None] * np.exp2(log2)).sum(0) / w.sum()  # (G,)
        diff = np.log2(mix + 1.0) - c.log2[i, col]
        assert np.abs(diff).mean() < 0.1 and np.abs(diff).max() < 0.6, (sid, diff)


def test_shared_sample_expression(tmp_path):
    """Every slide of a patient gets the mean of its slides' RNA; the images stay the same."""
    kw = {"n_slides": 30, "n_genes": 120, "dim": 8, "seed": 6, "second_slide_fraction": 0.5,
          "grid_rows": (12, 14), "grid_cols": (12, 14)}  # fmt: skip
    own = make_feature_cohort(tmp_path / "a", design="localized", **kw)
    shared = make_feature_cohort(tmp_path / "b", design="localized", shared_sample_expression=True,
                                 read_depth=1e6, **kw)  # fmt: skip
    np.testing.assert_array_equal(own.tile_means, shared.tile_means)
    patients = np.asarray(own.patient_ids)
    twice = [p for p in set(own.patient_ids) if (patients == p).sum() == 2]
    assert len(twice) >= 3
    for p in twice:
        i, j = np.flatnonzero(patients == p)
        assert not np.allclose(own.log2[i], own.log2[j])
        np.testing.assert_array_equal(shared.log2[i], shared.log2[j])
        raw = (np.exp2(own.log2[[i, j]].astype(np.float64)) - 1).mean(0)
        assert np.corrcoef(np.log2(raw + 1), shared.log2[i])[0, 1] > 0.9  # counted, then shared
