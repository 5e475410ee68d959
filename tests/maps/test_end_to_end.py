"""End to end: train a small run on a localized synthetic cohort, map test slides, score them.

The cohort plants interferon-gamma response around lymphoid aggregates and writes each tile's
activity; the run only ever sees bulk expression. The maps must follow the planted truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

pytestmark = pytest.mark.slow

IFNG = "HALLMARK_INTERFERON_GAMMA_RESPONSE"
E2F = "HALLMARK_E2F_TARGETS"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import rnafm
    from rnafm.cohort.reference import ExpressionScale, load_reference, write_reference
    from rnafm.synth.features import make_feature_cohort
    from rnafm.synth.tile_truth import read_tile_truth

    root = tmp_path_factory.mktemp("maps_e2e")
    cohort = make_feature_cohort(
        root / "cohort", design="localized", n_slides=200, n_genes=240, dim=32, seed=3,
        grid_rows=(18, 22), grid_cols=(22, 28),
    )  # fmt: skip
    patients = sorted(set(cohort.patient_ids))
    test_p = set(patients[::4])
    test = [s for s, p in zip(cohort.slide_ids, cohort.patient_ids, strict=True) if p in test_p]
    train = [s for s in cohort.slide_ids if s not in test]
    # score slides that carry the programme (small slides often have no lymphoid aggregate)
    test = [s for s in test if read_tile_truth(cohort.truth_path(s)).column(IFNG).std() > 0]
    ref = load_reference(cohort.reference, scale=ExpressionScale.RAW)
    write_reference(root / "train.csv", ref.subset(train), raw=True)
    run = rnafm.train(
        root / "train.csv", cohort.features_dir, out=root / "run", device="cpu",
        expression_scale="raw", **{"clusters.k": 24, "model.hidden": 64, "model.depth": 1,
                                   "sampler.steps": 4, "optim.epochs": 40, "optim.max_minutes": None},
    )  # fmt: skip
    assert len(test) >= 3
    return cohort, rnafm.load_model(run, device="cpu"), test[:12]


def test_maps_follow_the_planted_programme(trained, tmp_path):
    from rnafm.maps import MapMethod, read_map
    from rnafm.synth.tile_truth import read_tile_truth

    cohort, model, test = trained
    assert IFNG in model.tokens.pathway_names and model.tile_head is not None
    res = model.maps(cohort.features_dir, slides=test, pathways=[IFNG, E2F],
                     out=tmp_path / "maps", draws=4)  # fmt: skip
    other = {
        m: model.maps(cohort.features_dir, slides=test, pathways=[IFNG, E2F], method=m, draws=2)
        for m in (MapMethod.CLUSTER, MapMethod.READOUT)
    }
    scores = {name: {IFNG: [], E2F: []} for name in ("tiles", "cluster", "readout")}
    for sid in test:
        truth = read_tile_truth(cohort.truth_path(sid))
        smap = read_map(res.files[sid])
        assert smap.attrs["method"] == "tiles"
        np.testing.assert_array_equal(smap.coords, truth.coords)
        for j, prog in enumerate((IFNG, E2F)):
            t = truth.column(prog)
            scores["tiles"][prog].append(spearmanr(smap.scores[:, j], t).statistic)
            for m, r in other.items():
                scores[m.value][prog].append(spearmanr(r.maps[sid].scores[:, j], t).statistic)
        assert (tmp_path / "maps" / sid / f"{IFNG}.png").is_file()
    mean = {m: {p: np.nanmean(v) for p, v in per.items()} for m, per in scores.items()}
    # measured on cohort seeds 3, 4 and 5 (this test uses 3): tiles (default) 0.54, 0.70, 0.68 on
    # interferon-gamma and 0.53, 0.58, 0.51 on E2F targets; readout 0.36, 0.67, 0.57 and 0.59,
    # 0.05, 0.54; per-cluster baseline 0.17-0.20 and 0.06-0.18; a noise map scores about 0
    assert mean["tiles"][IFNG] > 0.4 and mean["tiles"][E2F] > 0.35
    assert mean["tiles"][IFNG] > mean["cluster"][IFNG] + 0.15
    assert mean["tiles"][E2F] > mean["cluster"][E2F] + 0.15
    assert mean["readout"][IFNG] > 0.25


@pytest.mark.parametrize("method", ["local", "blend"])
def test_window_maps_follow_the_planted_programme(trained, method):
    from rnafm.synth.tile_truth import read_tile_truth

    cohort, model, test = trained
    res = model.maps(cohort.features_dir, slides=test, pathways=[IFNG], method=method, draws=2)
    scores = [
        spearmanr(res.maps[sid].scores[:, 0], read_tile_truth(cohort.truth_path(sid)).column(IFNG))
        .statistic for sid in test
    ]  # fmt: skip
    # measured on cohort seeds 3, 4 and 5: local 0.53-0.64
    assert np.mean(scores) > 0.4, scores
    assert all(m.attrs["method"] == method for m in res.maps.values())
