"""A tiny synthetic cohort shared by the synth tests (built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    from rnafm.synth import make_cohort

    out = tmp_path_factory.mktemp("synth") / "cohort"
    return make_cohort(
        out, n_patients=7, seed=11, slide_width=777, slide_height=613, mpp=1.0, n_genes=97,
        second_slide_fraction=0.5, gdc=True, progress=False,
    )  # fmt: skip
