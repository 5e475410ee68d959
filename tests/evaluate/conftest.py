"""Tiny synthetic cohorts with odd dimensions for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest

from rnafm.cohort.dataset import CohortData


def make_cohort(
    n_patients: int = 21, *, k: int = 7, d: int = 5, g: int = 13, seed: int = 0, signal: float = 1.0
) -> CohortData:
    """Patients with 1-2 slides; expression depends linearly on the mean cluster feature."""
    rng = np.random.default_rng(seed)
    pids, sids, projects = [], [], []
    for p in range(n_patients):
        for s in range(1 + (p % 3 == 0)):
            pids.append(f"P{p:03d}")
            sids.append(f"P{p:03d}-S{s}")
            projects.append("TCGA-A" if p % 2 else "TCGA-B")
    n = len(sids)
    clusters = rng.normal(size=(n, k, d)).astype(np.float32)
    sizes = rng.integers(1, 20, size=(n, k)).astype(np.float32)
    if k > 2:
        sizes[0, -2:] = 0  # padding rows
    w = rng.normal(size=(d, g))
    pooled = (clusters * sizes[..., None]).sum(1) / sizes.sum(1, keepdims=True)
    expr = 5 + signal * pooled @ w + 0.3 * rng.normal(size=(n, g))
    expr[:, -1] = 3.0  # a constant gene
    return CohortData(
        slide_ids=sids,
        patient_ids=pids,
        projects=projects,
        clusters=clusters,
        sizes=sizes,
        genes=[f"G{j}" for j in range(g)],
        expression=expr.astype(np.float32),
    )


@pytest.fixture
def cohort() -> CohortData:
    return make_cohort()


@pytest.fixture
def make() -> object:
    """The cohort factory (tests import nothing from conftest under --import-mode=importlib)."""
    return make_cohort
