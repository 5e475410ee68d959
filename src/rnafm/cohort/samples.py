"""Slides that share one RNA sample: which they are, and how alike their prediction errors are.

In TCGA every diagnostic slide of a sample (``...-01Z-00-DX1``, ``...-DX2``) is paired with the
sample's one RNA-seq profile (``rnafm cohort`` writes the same row for each). Where a cohort's
training slides show that, the slides of a sample predict the same target, and the best
prediction for each of them is the pooled one (:mod:`rnafm.predict.pooling`). Where the slides
of one patient carry their own RNA, nothing is pooled.

The grouping key of a slide is the reference's ``sample_id`` where the table has one for it,
else its TCGA sample barcode (patient plus sample type, e.g. ``TCGA-05-4244-01``) when its name
carries one, else its patient id: a tumour slide and a normal-tissue slide of one patient are
never pooled.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "SharedExpression",
    "sample_keys",
    "sample_keys_of",
    "groups_of",
    "detect_shared_expression",
    "shared_expression_of",
]

logger = logging.getLogger(__name__)

_MIN_GROUPS = 3  # samples with several slides needed to call a cohort's expression shared
_MIN_SHARE = 0.9  # of those samples, the share whose slides carry identical expression
_MIN_SLIDES_FOR_CORR = 20  # slides needed to estimate the error correlation by cross-fitting


@dataclass(frozen=True)
class SharedExpression:
    """The training slides of one sample carry one expression profile.

    ``error_corr`` is the correlation between the prediction errors of two slides of one sample
    (cross-fitted ridge on mean tile features, pooled over genes and pairs; 1 when it could not
    be estimated): the mean of k such predictions has ``(1 + (k - 1) rho) / k`` times the error
    variance of one.
    """

    key: str  # "sample": TCGA sample barcode where the slide name has one, else the patient
    groups: int  # training samples with two or more slides
    identical: int  # of those, samples whose slides carry identical expression
    error_corr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SharedExpression | None:
        return None if not d else cls(**d)

    def variance_factor(self, k: int) -> float:
        """Error variance of the mean of ``k`` slides' predictions over that of one slide."""
        rho = float(np.clip(self.error_corr, 0.0, 1.0))
        return (1.0 + (k - 1) * rho) / k


def sample_keys(
    slide_ids: Sequence[str], patient_ids: Sequence[str], samples: Sequence[str] | None = None
) -> list[str]:
    """Grouping key of each slide: its ``samples`` entry where given and not empty (the
    reference's ``sample_id`` column, scoped by patient), else its TCGA sample barcode when its
    name has one, else its patient id."""
    from rnafm.cohort.tcga import parse_barcode

    given = [""] * len(slide_ids) if samples is None else [str(s).strip() for s in samples]
    keys = []
    for slide, patient, sample in zip(slide_ids, patient_ids, given, strict=True):
        bc = parse_barcode(slide)
        if sample:
            keys.append(f"{patient}/{sample}")
        else:
            keys.append(bc.sample if bc is not None and bc.sample is not None else str(patient))
    return keys


def sample_keys_of(data, idx: Sequence[int] | np.ndarray | None = None) -> list[str]:
    """:func:`sample_keys` of the slides of a :class:`rnafm.cohort.dataset.CohortData` (its
    rows ``idx``; all when None), from their ids, patients and reference sample ids."""
    ix = range(len(data.slide_ids)) if idx is None else [int(i) for i in idx]
    samples = getattr(data, "samples", None)
    return sample_keys(
        [data.slide_ids[i] for i in ix],
        [data.patient_ids[i] for i in ix],
        None if samples is None else [samples[i] for i in ix],
    )


def groups_of(keys: Sequence[str]) -> list[np.ndarray]:
    """Indices of the slides of every key with two or more slides, in first-seen order."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_key[k].append(i)
    return [np.asarray(ix, dtype=np.int64) for ix in by_key.values() if len(ix) > 1]


def detect_shared_expression(
    slide_ids: Sequence[str],
    patient_ids: Sequence[str],
    expression: np.ndarray,
    features: np.ndarray | None = None,
    samples: Sequence[str] | None = None,
) -> SharedExpression | None:
    """Whether the slides of one sample carry identical expression (n, G), log2(x+1).

    True when at least three samples have two or more slides and 90% of them carry identical
    rows. ``features`` (n, D), one vector per slide (e.g. the mean tile feature), give the
    error correlation (:class:`SharedExpression`); ``samples`` the reference's sample ids
    (:func:`sample_keys`). None otherwise: nothing is pooled.
    """
    y = np.asarray(expression, dtype=np.float64)
    groups = groups_of(sample_keys(slide_ids, patient_ids, samples))
    if len(groups) < _MIN_GROUPS:
        return None
    same = sum(bool(np.allclose(y[g], y[g[0]], rtol=0.0, atol=1e-4)) for g in groups)
    if same < _MIN_SHARE * len(groups):
        logger.info(
            "slides of one sample carry their own expression (%d of %d samples identical): "
            "predictions stay per slide",
            same,
            len(groups),
        )
        return None
    rho = 1.0
    if features is not None and len(y) >= _MIN_SLIDES_FOR_CORR:
        rho = _error_corr(np.asarray(features, dtype=np.float64), y, groups, list(patient_ids))
    logger.info(
        "slides of one sample share its expression (%d of %d samples): their predictions are "
        "pooled (error correlation %.2f)",
        same,
        len(groups),
        rho,
    )
    return SharedExpression(key="sample", groups=len(groups), identical=same, error_corr=rho)


def _error_corr(x, y, groups, patients) -> float:
    """Correlation of cross-fitted ridge errors between slides of one sample (z units)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold

    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    z = (y - y.mean(0)) / (y.std(0) + 1e-8)  # (n, G)
    resid = np.zeros_like(z)
    folds = GroupKFold(n_splits=min(5, len(set(patients))))
    for tr, te in folds.split(x, groups=patients):
        model = RidgeCV(alphas=np.logspace(-1, 4, 11)).fit(x[tr], z[tr])
        resid[te] = z[te] - model.predict(x[te])
    num = den = 0.0
    for g in groups:
        for a in range(len(g)):
            for b in range(a + 1, len(g)):
                ra, rb = resid[g[a]], resid[g[b]]
                num += float(ra @ rb)
                den += 0.5 * float(ra @ ra + rb @ rb)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0


def shared_expression_of(*parts) -> SharedExpression | None:
    """:func:`detect_shared_expression` on the slides of one or more
    :class:`rnafm.cohort.dataset.CohortData` with expression (None parts are skipped), their
    size-weighted mean cluster features giving the error correlation."""
    parts = [p for p in parts if p is not None and p.expression is not None and len(p)]
    if not parts:
        return None
    from rnafm.cohort.dataset import mean_tile_features

    feats = [mean_tile_features(p.clusters, p.sizes) for p in parts]
    return detect_shared_expression(
        [s for p in parts for s in p.slide_ids],
        [s for p in parts for s in p.patient_ids],
        np.concatenate([p.expression for p in parts]),
        np.concatenate(feats),
        samples=[s for p in parts for s in (p.samples or [""] * len(p))],
    )
