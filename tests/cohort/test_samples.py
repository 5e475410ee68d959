"""Which slides share one RNA sample, and the correlation of their prediction errors."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.cohort.samples import (
    SharedExpression,
    detect_shared_expression,
    groups_of,
    sample_keys,
)


def test_sample_keys_follow_tcga_samples_else_patients():
    slides = [
        "TCGA-05-4244-01Z-00-DX1.d4ff32cd",
        "TCGA-05-4244-01Z-00-DX2",
        "TCGA-05-4244-11A-01-TS1",  # the patient's normal-tissue slide: another sample
        "SYN-0001",
        "SYN-0002",
    ]
    keys = sample_keys(slides, ["TCGA-05-4244"] * 3 + ["P7", "P7"])
    assert keys == ["TCGA-05-4244-01", "TCGA-05-4244-01", "TCGA-05-4244-11", "P7", "P7"]
    assert [g.tolist() for g in groups_of(keys)] == [[0, 1], [3, 4]]


def _cohort(n_patients: int, *, shared: bool, feature_link: float, seed: int = 0):
    """Patients with one or two slides; a second slide's features are its first slide's
    (``feature_link`` 1) or independent noise (0), or a mix."""
    rng = np.random.default_rng(seed)
    slides, patients, feats, expr = [], [], [], []
    w = rng.normal(size=(6, 11))
    for p in range(n_patients):
        base = rng.normal(size=6)
        y = base @ w + rng.normal(size=11)  # the sample's expression, partly not in the image
        for s in range(1 + (p % 2 == 0)):
            f = base if s == 0 else feature_link * base + (1 - feature_link) * rng.normal(size=6)
            slides.append(f"S{p:03d}-{s}")
            patients.append(f"P{p:03d}")
            feats.append(f)
            expr.append(y if shared else y + rng.normal(size=11))
    return slides, patients, np.asarray(expr), np.asarray(feats)


def test_identical_rows_of_a_sample_are_detected():
    slides, patients, y, x = _cohort(40, shared=True, feature_link=1.0)
    shared = detect_shared_expression(slides, patients, y, x)
    assert isinstance(shared, SharedExpression)
    assert (shared.groups, shared.identical) == (20, 20)
    # two slides with the same features get the same prediction: their errors are the same
    assert shared.error_corr == pytest.approx(1.0, abs=1e-6)
    assert shared.variance_factor(2) == pytest.approx(1.0)
    assert SharedExpression.from_dict(shared.to_dict()) == shared
    # slides that look less alike make errors that differ, and pooling then helps
    loose = detect_shared_expression(*_cohort(40, shared=True, feature_link=0.5))
    assert 0.0 <= loose.error_corr < 0.95
    assert loose.variance_factor(2) == pytest.approx((1 + loose.error_corr) / 2)
    assert loose.variance_factor(1) == pytest.approx(1.0)


def test_own_rows_or_too_few_samples_are_not_shared():
    slides, patients, y, x = _cohort(40, shared=False, feature_link=1.0)
    assert detect_shared_expression(slides, patients, y, x) is None
    slides, patients, y, x = _cohort(4, shared=True, feature_link=1.0)  # two two-slide samples
    assert detect_shared_expression(slides, patients, y, x) is None
    # without features the correlation is not estimated: 1, so spreads are not narrowed
    slides, patients, y, _ = _cohort(40, shared=True, feature_link=0.0)
    assert detect_shared_expression(slides, patients, y).error_corr == 1.0


def test_a_sample_column_separates_samples_of_one_patient(tmp_path):
    from rnafm.cohort.reference import Reference, load_reference, write_reference

    # two regions of one tumour sequenced apart (samples A, B); sample A has two slides
    slides = ["R1-A-1", "R1-A-2", "R1-B-1", "TCGA-05-4244-01Z-00-DX1", "SYN-9"]
    patients = ["R1", "R1", "R1", "TCGA-05-4244", "P9"]
    samples = ["A", "A", "B", "", ""]  # empty: the barcode, else the patient
    keys = sample_keys(slides, patients, samples)
    assert keys == ["R1/A", "R1/A", "R1/B", "TCGA-05-4244-01", "P9"]
    assert sample_keys(slides, patients)[:3] == ["R1"] * 3
    # the reference's sample_id column travels through writing, reading and subsets
    ref = Reference(slides, patients, None, ["G1", "G2"], np.ones((5, 2), np.float32),
                    samples=samples)  # fmt: skip
    write_reference(tmp_path / "ref.csv", ref)
    back = load_reference(tmp_path / "ref.csv")
    assert back.samples == samples
    assert back.subset(["R1-B-1", "R1-A-1"]).samples == ["B", "A"]
    assert load_reference(tmp_path / "ref.csv").genes == ["G1", "G2"]  # not a gene column


def test_shared_expression_within_samples_of_a_patient():
    # each patient: sample A with two slides sharing one profile, sample B with its own
    rng = np.random.default_rng(2)
    slides, patients, samples, y = [], [], [], []
    for p in range(8):
        a, b = rng.normal(size=5), rng.normal(size=5)
        for s, row in (("A", a), ("A", a), ("B", b)):
            slides.append(f"X{p}-{s}{len(slides)}")
            patients.append(f"X{p}")
            samples.append(s)
            y.append(row)
    y = np.asarray(y)
    # by patient, three slides with two profiles: nothing is shared
    assert detect_shared_expression(slides, patients, y) is None
    shared = detect_shared_expression(slides, patients, y, samples=samples)
    assert (shared.groups, shared.identical) == (8, 8)
