"""Patient-level folds: no patient crosses a split, in any fold, for every way folds are made."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest

from rnafm.cohort.splits import (
    Fold,
    check_folds,
    fold_indices,
    load_folds,
    make_folds,
    save_folds,
    split_patients,
    split_sites,
    validation_split,
)
from rnafm.errors import InputError


def _patients(n: int = 37) -> tuple[list[str], list[str]]:
    """Slides of n patients (some with 2-3 slides) and an unbalanced project per slide."""
    pids, projects = [], []
    for p in range(n):
        for _ in range(1 + (p % 4 == 0) + (p % 9 == 0)):
            pids.append(f"TCGA-{p:02d}-XXXX")
            projects.append("LUAD" if p % 3 else "BRCA")
    return pids, projects


def assert_no_leak(folds: list[Fold], pids: list[str]) -> None:
    """The property the harness promises: disjoint by patient, and slides follow patients."""
    patients = set(pids)
    tests = Counter(p for f in folds for p in f.test)
    assert set(tests) == patients and set(tests.values()) == {1}  # exactly one test fold each
    for f in folds:
        tr, va, te = set(f.train), set(f.val), set(f.test)
        assert not (tr & va or tr & te or va & te)
        assert tr | va | te == patients
        itr, iva, ite = fold_indices(f, pids)
        assert len(itr) + len(iva) + len(ite) == len(pids)  # every slide on exactly one side
        side = {}
        for name, idx in (("tr", itr), ("va", iva), ("te", ite)):
            for i in idx:
                assert side.setdefault(pids[i], name) == name  # all slides of a patient together


@pytest.mark.parametrize("n_folds", [2, 3, 5])
@pytest.mark.parametrize("stratify", [False, True])
@pytest.mark.parametrize("seed", [0, 7])
def test_no_patient_crosses_a_split(n_folds: int, stratify: bool, seed: int) -> None:
    pids, projects = _patients()
    folds = make_folds(pids, n_folds=n_folds, strata=projects if stratify else None, seed=seed)
    assert len(folds) == n_folds
    assert_no_leak(folds, pids)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert all(f.val for f in folds)


def test_stratification_keeps_project_shares() -> None:
    pids, projects = _patients(60)
    proj = dict(zip(pids, projects, strict=True))
    share = np.mean([proj[p] == "BRCA" for p in set(pids)])
    for f in make_folds(pids, n_folds=5, strata=projects, seed=3):
        test_share = np.mean([proj[p] == "BRCA" for p in f.test])
        assert abs(test_share - share) <= 1 / len(f.test) + 1e-9
        assert any(proj[p] == "BRCA" for p in f.val) and any(proj[p] == "LUAD" for p in f.val)


def test_folds_are_seeded() -> None:
    pids, _ = _patients()
    a, b = make_folds(pids, seed=1), make_folds(pids, seed=1)
    assert [f.to_dict() for f in a] == [f.to_dict() for f in b]
    assert [f.to_dict() for f in a] != [f.to_dict() for f in make_folds(pids, seed=2)]


def test_json_roundtrip(tmp_path) -> None:
    pids, _ = _patients()
    folds = make_folds(pids, n_folds=4)
    save_folds(tmp_path / "folds.json", folds, seed=0)
    back = load_folds(tmp_path / "folds.json", patient_ids=pids)
    assert [f.to_dict() for f in back] == [f.to_dict() for f in folds]


def _npy(path, folds: dict) -> None:
    np.save(path, np.array(folds, dtype=object), allow_pickle=True)


def test_reads_published_tcga_npy(tmp_path) -> None:
    pids, _ = _patients(20)
    patients = sorted(set(pids))
    published = {}
    for i in range(4):  # keys out of order, ids as numpy arrays, like the published files
        test = patients[i::4]
        rest = [p for p in patients if p not in test]
        published[f"fold_{i}"] = {
            "train": np.array(rest[2:]),
            "val": np.array(rest[:2]),
            "test": np.array(test),
        }
    published = dict(reversed(list(published.items())))
    _npy(tmp_path / "splits.npy", published)
    folds = load_folds(tmp_path / "splits.npy", patient_ids=pids)
    assert [f.test for f in folds] == [sorted(patients[i::4]) for i in range(4)]
    assert_no_leak(folds, pids)
    assert pickle.loads(pickle.dumps(folds[0])).test == folds[0].test


def test_refuses_leaky_published_splits_unless_repaired(tmp_path) -> None:
    pids, _ = _patients(12)
    patients = sorted(set(pids))
    leaky = {}
    for i in range(3):
        test = patients[i::3]
        leaky[f"fold_{i}"] = {"train": patients[:9], "val": patients[9:10], "test": test}
    _npy(tmp_path / "leaky.npy", leaky)
    with pytest.raises(InputError, match="both sides of the train/test split"):
        load_folds(tmp_path / "leaky.npy", patient_ids=pids)
    repaired = load_folds(tmp_path / "leaky.npy", patient_ids=pids, repair=True)
    for f in repaired:
        assert not set(f.test) & (set(f.train) | set(f.val))


def test_check_folds_catches_double_test_and_missing() -> None:
    with pytest.raises(InputError, match="more than one test fold"):
        check_folds([Fold(["a"], [], ["b"]), Fold(["a"], [], ["b"])])
    with pytest.raises(InputError, match="no test fold"):
        check_folds([Fold(["b"], [], ["a"]), Fold(["a"], [], ["b"])], ["a", "b", "c"])


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(InputError, match="folds"):
        make_folds(["a", "b"], n_folds=3)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="not an rnafm folds file"):
        load_folds(tmp_path / "x.json")
    with pytest.raises(InputError, match="not found"):
        load_folds(tmp_path / "missing.json")


@pytest.mark.parametrize("n_folds", [2, 3, 4])
def test_site_folds_hold_out_whole_sites(n_folds: int) -> None:
    # 6 sites of unequal size (1 to 11 patients); a patient's slides share its site
    pids, _ = _patients(37)
    site_of = {p: f"S{min(int(p[5:7]) // 6, 5)}" for p in set(pids)}
    site_of["TCGA-36-XXXX"] = "S0"  # sites need not be contiguous
    sites = [site_of[p] for p in pids]
    folds = make_folds(pids, n_folds=n_folds, groups=sites, seed=4)
    assert_no_leak(folds, pids)
    seen = set()
    for f in folds:
        test_sites = {site_of[p] for p in f.test}
        assert not test_sites & {site_of[p] for p in f.train + f.val}  # never tested on a seen site
        assert not test_sites & seen
        seen |= test_sites
    assert seen == set(sites)
    # largest sites first into the emptiest fold: no fold is larger than it must be
    sizes = sorted(len(f.test) for f in folds)
    largest = max(Counter(site_of.values()).values())
    assert sizes[-1] - sizes[0] <= largest


def test_site_folds_need_enough_sites() -> None:
    pids, _ = _patients(12)
    two = ["A" if int(p[5:7]) < 6 else "B" for p in pids]
    with pytest.raises(InputError, match="use --folds 2 or fewer"):
        make_folds(pids, n_folds=3, groups=two)
    with pytest.raises(InputError, match="--hold-out patient"):
        make_folds(pids, n_folds=2, groups=["A"] * len(pids))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_site_validation_split_holds_out_whole_sites(seed: int) -> None:
    # one large site and three small ones, 59 / 13 / 14 / 13 patients, some with two slides
    pids, _ = _patients(37)
    pids = [f"{p}-{k}" for k in range(3) for p in pids]  # 111 patients' slides
    uniq = sorted(set(pids))
    site_of = {p: "A" if i < 59 else "BCD"[(i - 59) % 3] for i, p in enumerate(uniq)}
    sites = [site_of[p] for p in pids]
    tr, va = split_sites(pids, sites, fraction=0.15, min_patients=5, seed=seed)
    assert len(tr) + len(va) == len(pids) and not set(tr) & set(va)
    val_sites = {sites[i] for i in va}
    assert not val_sites & {sites[i] for i in tr}  # no site on both sides
    assert val_sites < {"B", "C", "D"} and len(val_sites) == 1  # one small site, never A
    assert not {pids[i] for i in va} & {pids[i] for i in tr}
    # with one site left after the large one, that one is held out even though it is large
    two = ["A" if site_of[p] == "A" else "B" for p in pids]
    tr, va = split_sites(pids, two, fraction=0.15, min_patients=5, seed=seed)
    assert {two[i] for i in va} == {"B"} and {two[i] for i in tr} == {"A"}
    # several small sites add up towards the target
    many = [site_of[p] if site_of[p] == "A" else f"S{uniq.index(p) % 12}" for p in pids]
    tr, va = split_sites(pids, many, fraction=0.15, min_patients=5, seed=seed)
    n_val = len({pids[i] for i in va})
    assert abs(n_val - round(0.15 * len(uniq))) <= 6 and len({many[i] for i in va}) >= 2


@pytest.mark.parametrize("seed", [0, 5])
def test_auto_validation_holds_out_sites_only_where_sites_can_make_the_split(seed: int) -> None:
    from rnafm.cohort.splits import HoldOut, ValidationHoldOut

    pids, _ = _patients(37)
    pids = [f"{p}-{k}" for k in range(3) for p in pids]  # 111 patients' slides
    uniq = sorted(set(pids))
    kw = dict(fraction=0.15, min_patients=5, seed=seed)

    def auto(sites):
        return validation_split(pids, sites, hold_out=ValidationHoldOut.AUTO, **kw)

    def by_patient():
        return split_patients(pids, fraction=0.15, min_patients=5, seed=seed)

    # four sites, three of them small: whole sites, exactly split_sites' split
    four = {p: "A" if i < 59 else "BCD"[(i - 59) % 3] for i, p in enumerate(uniq)}
    sites = [four[p] for p in pids]
    tr, va, held = auto(sites)
    assert held is HoldOut.SITE
    exp_tr, exp_va = split_sites(pids, sites, **kw)
    assert np.array_equal(tr, exp_tr) and np.array_equal(va, exp_va)
    assert not {sites[i] for i in va} & {sites[i] for i in tr}
    # two sites, no sites known, or three sites each twice the asked-for size: patients
    two = ["A" if four[p] == "A" else "B" for p in pids]
    thirds = [f"S{uniq.index(p) % 3}" for p in pids]
    for other in (two, None, thirds):
        tr, va, held = auto(other)
        assert held is HoldOut.PATIENT
        exp_tr, exp_va = by_patient()
        assert np.array_equal(tr, exp_tr) and np.array_equal(va, exp_va)
    # the explicit settings are not second-guessed
    assert validation_split(pids, two, hold_out=ValidationHoldOut.SITE, **kw)[2] is HoldOut.SITE
    assert validation_split(pids, sites, hold_out=ValidationHoldOut.PATIENT, **kw)[2] is (
        HoldOut.PATIENT
    )
    # too few patients for a validation split at all
    few = pids[:8]
    tr, va, held = validation_split(few, sites[:8], hold_out=ValidationHoldOut.AUTO, **kw)
    assert held is HoldOut.PATIENT and len(va) == 0


def test_site_validation_split_needs_two_sites() -> None:
    pids, _ = _patients(12)
    with pytest.raises(InputError, match="hold out patients instead"):
        split_sites(pids, ["A"] * len(pids), fraction=0.15, min_patients=2, seed=0)
    tr, va = split_sites(pids, ["A"] * len(pids), fraction=0.0, min_patients=2, seed=0)
    assert len(va) == 0 and len(tr) == len(pids)


@pytest.mark.parametrize("seed", [0, 3])
def test_fold_validation_follows_auto(seed: int) -> None:
    from rnafm.cohort.splits import ValidationHoldOut

    pids, _ = _patients(37)
    pids = [f"{p}-{k}" for k in range(3) for p in pids]  # 111 patients' slides
    uniq = sorted(set(pids))
    # one large site and twelve small ones
    site_of = {p: "A" if i < 59 else f"S{i % 12}" for i, p in enumerate(uniq)}
    sites = [site_of[p] for p in pids]
    plain = make_folds(pids, n_folds=3, seed=seed)
    assert all(f.meta == {"val_hold_out": "patient"} for f in plain)
    folds = make_folds(pids, n_folds=3, seed=seed, sites=sites)
    assert_no_leak(folds, pids)
    for f, p in zip(folds, plain, strict=True):
        assert f.test == p.test  # the test folds do not move
        assert f.meta["val_hold_out"] == "site"
        val_sites = {site_of[q] for q in f.val}
        assert val_sites == set(f.meta["val_sites"]) and "A" not in val_sites
        assert not val_sites & {site_of[q] for q in f.train}  # whole sites
        target = round(0.15 * (len(f.train) + len(f.val)))
        assert target // 2 <= len(f.val) <= 2 * target
    # no sites, explicit patients, or too few sites: exactly the patient validation splits
    two = ["A" if site_of[p] == "A" else "B" for p in pids]
    for kw in ({"sites": None}, {"sites": sites, "val_hold_out": ValidationHoldOut.PATIENT},
               {"sites": two}):  # fmt: skip
        same = make_folds(pids, n_folds=3, seed=seed, **kw)
        assert [f.to_dict() for f in same] == [f.to_dict() for f in plain]
    # site-held-out test folds keep their whole-site validation inside the training sites
    folds = make_folds(pids, n_folds=3, seed=seed, groups=sites, sites=sites)
    assert_no_leak(folds, pids)
    for f in folds:
        seen = {site_of[q] for q in f.train}
        assert not {site_of[q] for q in f.val} & seen
        assert not {site_of[q] for q in f.test} & (seen | {site_of[q] for q in f.val})
    # explicit site: even two sites; one site, or no sites known, is an error
    assert all(
        f.meta["val_hold_out"] == "site"
        for f in make_folds(pids, n_folds=3, sites=two, val_hold_out=ValidationHoldOut.SITE)
    )
    with pytest.raises(InputError, match="--val-hold-out patient"):
        make_folds(pids, n_folds=3, sites=["A"] * len(pids), val_hold_out=ValidationHoldOut.SITE)
    with pytest.raises(ValueError, match="needs the slides' sites"):
        make_folds(pids, n_folds=3, val_hold_out=ValidationHoldOut.SITE)
