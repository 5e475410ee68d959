"""Patient-level splits: K-fold splits with a validation split inside every training fold
(evaluation), and the single train/validation split of one training run.

Every split is by patient: two slides of one patient never sit on both sides of a split. A fold
holds three disjoint sets of patient ids, ``train`` (fit), ``val`` (early stopping, model
choice, gene ranking, conformal calibration) and ``test`` (out-of-fold predictions); every
patient of the cohort is in exactly one test fold.

Folds are saved as JSON (:func:`save_folds`) and read back by :func:`load_folds`, which also
reads the published TCGA splits format: a ``.npy`` holding a pickled dict
``fold_<i> -> {'train': ids, 'val': ids, 'test': ids}`` of patient ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from rnafm._io import read_json, write_json
from rnafm.errors import InputError

__all__ = [
    "split_patients",
    "split_sites",
    "validation_split",
    "ValidationHoldOut",
    "Fold",
    "Stratify",
    "HoldOut",
    "make_folds",
    "save_folds",
    "load_folds",
    "check_folds",
    "fold_indices",
    "folds_digest",
]

logger = logging.getLogger(__name__)

_FORMAT = "rnafm-folds"


class Stratify(str, Enum):
    """What the folds are stratified by."""

    NONE = "none"
    PROJECT = "project"


class HoldOut(str, Enum):
    """What a test fold holds out whole: patients, or tissue source sites (all their patients)."""

    PATIENT = "patient"
    SITE = "site"


class ValidationHoldOut(str, Enum):
    """What a training run's validation split holds out whole: ``auto`` (whole sites where
    the cohort spans three sites or more and some of them add up to about the validation
    fraction, else patients), ``patient`` or ``site``."""

    AUTO = "auto"
    PATIENT = "patient"
    SITE = "site"


_AUTO_MIN_SITES = 3


@dataclass
class Fold:
    """One fold: disjoint sets of patient ids."""

    train: list[str]
    val: list[str]
    test: list[str]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def split_patients(
    patient_ids: list[str], *, fraction: float, min_patients: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded patient-level split of slide indices into (train, val).

    ``round(fraction * patients)`` patients (at least ``min_patients``) go to validation; with
    fewer than ``2 * min_patients`` patients, or ``fraction`` 0, there is no validation split.
    """
    uniq = sorted(set(patient_ids))
    n_val = max(int(round(fraction * len(uniq))), min_patients)
    if fraction <= 0 or len(uniq) < 2 * min_patients:
        return np.arange(len(patient_ids)), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val_patients = {uniq[i] for i in rng.permutation(len(uniq))[:n_val]}
    is_val = np.asarray([p in val_patients for p in patient_ids])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _site_members(site_of: dict[str, str], what: str, instead: str) -> dict[str, list[str]]:
    """Site -> its patients; an InputError (saying ``what`` needs two sites and to use
    ``instead``) when every patient comes from one site."""
    members = _group(site_of)
    if len(members) < 2:
        raise InputError(
            f"every slide comes from one site ({sorted(members)}): holding out whole sites for "
            f"{what} needs two sites at least; hold out patients instead ({instead})"
        )
    return members


def split_sites(
    patient_ids: list[str],
    sites: Sequence[str],
    *,
    fraction: float,
    min_patients: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of slide indices into (train, val) that holds out whole sites.

    Sites (a patient's site is that of most of its slides) are added to validation one at a
    time, each time the site that brings the number of validation patients closest to
    ``max(round(fraction * patients), min_patients)`` (ties broken by a seeded random order),
    while that brings it closer; at least one site is held out and at least one kept for
    training. ``fraction`` 0 gives no validation split.

    Raises
    ------
    InputError
        Fewer than two sites.
    """
    if fraction <= 0:
        return np.arange(len(patient_ids)), np.zeros(0, dtype=np.int64)
    site_of = _patient_strata(patient_ids, sites)
    members = _site_members(site_of, "validation", "validation.hold_out = patient")
    target = max(int(round(fraction * len(site_of))), min_patients)
    chosen, val = _choose_sites(members, target, seed)
    n_val = len(val)
    if n_val > 2 * target:
        logger.warning(
            "validation holds out site(s) %s: %d of %d patients (asked for about %d); "
            "no smaller site was available",
            ", ".join(chosen),
            n_val,
            len(site_of),
            target,
        )
    return _split_by(patient_ids, set(val))


def _choose_sites(
    members: dict[str, list[str]], target: int, seed: int
) -> tuple[list[str], list[str]]:
    """The sites :func:`split_sites` holds out and their patients."""
    rng = np.random.default_rng(seed)
    order = [sorted(members)[i] for i in rng.permutation(len(members))]  # ties: at random
    chosen: list[str] = []
    n_val = 0
    while len(chosen) < len(members) - 1:  # keep one site for training
        left = [g for g in order if g not in chosen]
        g = min(left, key=lambda g: abs(n_val + len(members[g]) - target))  # first of ties
        if chosen and abs(n_val + len(members[g]) - target) >= abs(n_val - target):
            break
        chosen.append(g)
        n_val += len(members[g])
    return chosen, [p for g in chosen for p in members[g]]


def _split_by(patient_ids: Sequence[str], val_patients: set[str]) -> tuple[np.ndarray, np.ndarray]:
    is_val = np.asarray([p in val_patients for p in patient_ids], dtype=bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def validation_split(
    patient_ids: list[str],
    sites: Sequence[str] | None,
    *,
    hold_out: ValidationHoldOut,
    fraction: float,
    min_patients: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, HoldOut]:
    """A training run's (train, val) slide indices and what the split held out.

    ``patient``: :func:`split_patients`; ``site``: :func:`split_sites` (``sites`` required);
    ``auto``: :func:`split_sites` when ``sites`` are known, span at least three sites, and the
    held-out sites hold at most twice the asked-for number of patients; else
    :func:`split_patients` (the reason is logged).
    """
    if hold_out is ValidationHoldOut.AUTO:
        val = _auto_site_patients(patient_ids, sites, fraction, min_patients, seed)
        if val is not None:
            tr, va = _split_by(patient_ids, val)
            return tr, va, HoldOut.SITE
        hold_out = ValidationHoldOut.PATIENT
    if hold_out is ValidationHoldOut.SITE:
        if sites is None:
            raise ValueError("validation by site needs the slides' sites")
        tr, va = split_sites(
            patient_ids, sites, fraction=fraction, min_patients=min_patients, seed=seed
        )
        return tr, va, HoldOut.SITE
    tr, va = split_patients(patient_ids, fraction=fraction, min_patients=min_patients, seed=seed)
    return tr, va, HoldOut.PATIENT


def _auto_site_patients(
    patient_ids: list[str], sites: Sequence[str] | None, fraction: float, min_patients: int, seed
) -> set[str] | None:
    """The validation patients of ``validation.hold_out = auto`` when it holds out whole
    sites (the sites :func:`split_sites` would choose), None when it holds out patients."""
    if sites is None or fraction <= 0 or len(set(patient_ids)) < 2 * min_patients:
        return None
    site_of = _patient_strata(patient_ids, sites)
    target = max(int(round(fraction * len(site_of))), min_patients)
    chosen = _auto_sites(_group(site_of), target, seed, "validation")
    return None if chosen is None else set(chosen[1])


def _auto_sites(
    members: dict[str, list[str]], target: int, seed: int, what: str
) -> tuple[list[str], list[str]] | None:
    """The sites ``auto`` holds out for ``what`` (a validation split of about ``target``
    patients) and their patients, or None (logged) when it holds out patients instead."""
    if len(members) < _AUTO_MIN_SITES:
        logger.info(
            "%s holds out patients: %d tissue source site(s), whole sites need %d",
            what,
            len(members),
            _AUTO_MIN_SITES,
        )
        return None
    chosen, val = _choose_sites(members, target, seed)
    n_val = len(val)
    if n_val > 2 * target:
        logger.info(
            "%s holds out patients: the closest choice of whole sites holds %d "
            "patients, more than twice the %d asked for",
            what,
            n_val,
            target,
        )
        return None
    logger.info("%s holds out whole tissue source sites (%d sites)", what, len(members))
    return chosen, val


def _group(site_of: dict[str, str]) -> dict[str, list[str]]:
    """Site -> its patients."""
    members: dict[str, list[str]] = {}
    for p, g in site_of.items():
        members.setdefault(g, []).append(p)
    return members


def _patient_strata(patient_ids: Sequence[str], strata: Sequence[str] | None) -> dict[str, str]:
    """Patient -> stratum (the most common stratum of the patient's slides)."""
    if strata is None:
        return dict.fromkeys(patient_ids, "")
    votes: dict[str, Counter] = {}
    for p, s in zip(patient_ids, strata, strict=True):
        votes.setdefault(p, Counter())[str(s)] += 1
    return {p: c.most_common(1)[0][0] for p, c in votes.items()}


def _ordered_by_stratum(patients: list[str], stratum: dict[str, str], rng) -> list[str]:
    """Patients shuffled within strata and concatenated stratum by stratum."""
    out: list[str] = []
    for s in sorted({stratum[p] for p in patients}):
        members = sorted(p for p in patients if stratum[p] == s)
        out.extend(members[i] for i in rng.permutation(len(members)))
    return out


def make_folds(
    patient_ids: Sequence[str],
    *,
    n_folds: int = 5,
    val_fraction: float = 0.15,
    strata: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    seed: int = 0,
    sites: Sequence[str] | None = None,
    val_hold_out: ValidationHoldOut = ValidationHoldOut.AUTO,
) -> list[Fold]:
    """Patient-level K-fold splits with a validation split inside each training fold.

    Parameters
    ----------
    patient_ids
        Patient id of every slide (repeats allowed: slides of one patient stay together).
    n_folds
        Number of folds K (2 <= K <= number of patients).
    val_fraction
        Fraction of each training fold's patients moved to its validation split (at least one
        patient; 0 disables the validation split).
    strata
        Optional stratum (e.g. TCGA project) of every slide; folds and validation splits then
        keep the strata proportions. A patient's stratum is the most common among its slides.
    groups
        Optional group (e.g. tissue source site) of every slide: every group's patients then
        sit in one test fold together, so no model is tested on a group it was trained on
        (site-preserved cross-validation). Groups go to folds largest first, each to the fold
        with the fewest patients so far; ``strata`` then shape the validation splits only. A
        patient's group is the most common among its slides.
    seed
        Seed of the shuffling.
    sites
        Optional tissue source site of every slide, for the validation splits.
    val_hold_out
        What each validation split holds out whole, as ``validation.hold_out`` of a training
        run: ``auto`` holds out whole sites of the training fold when ``sites`` are given, the
        training fold spans at least three sites and the closest choice of whole sites holds
        at most twice the asked-for number of patients (else patients, as ``patient`` does);
        ``site`` always holds out whole sites (two sites at least). Each fold's ``meta``
        records what it held out (``val_hold_out``) and its validation sites (``val_sites``).

    Returns
    -------
    list[Fold]
        ``n_folds`` folds; each patient is in exactly one test fold.
    """
    patients = sorted(set(map(str, patient_ids)))
    if not 2 <= n_folds <= len(patients):
        raise InputError(
            f"cannot make {n_folds} folds from {len(patients)} patients; "
            "use --folds between 2 and the number of patients"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    stratum = _patient_strata(list(map(str, patient_ids)), strata)
    if val_hold_out is ValidationHoldOut.SITE and sites is None:
        raise ValueError("validation by site needs the slides' sites")
    site_of = _patient_strata(list(map(str, patient_ids)), sites) if sites is not None else {}
    rng = np.random.default_rng(seed)
    if groups is not None:
        test_of = _group_test_folds(list(map(str, patient_ids)), groups, n_folds, rng)
    else:
        order = _ordered_by_stratum(patients, stratum, rng)
        # dealing round-robin over the stratum-sorted order balances both fold sizes and strata
        test_of = {p: i % n_folds for i, p in enumerate(order)}
    folds = []
    for k in range(n_folds):
        test = sorted(p for p in patients if test_of[p] == k)
        rest = _ordered_by_stratum([p for p in patients if test_of[p] != k], stratum, rng)
        n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * len(rest)))
        n_val = min(n_val, len(rest) - 1)
        # systematic sampling over the stratum-sorted list: proportional per stratum
        u = rng.uniform()
        picks = {int((j + u) * len(rest) / n_val) for j in range(n_val)} if n_val else set()
        val = sorted(rest[i] for i in picks)
        meta: dict = {"val_hold_out": HoldOut.PATIENT.value}
        if n_val and sites is not None and val_hold_out is not ValidationHoldOut.PATIENT:
            by_site = _fold_val_sites(rest, site_of, n_val, val_hold_out, seed + k, k)
            if by_site is not None:
                val = sorted(by_site[1])
                meta = {"val_hold_out": HoldOut.SITE.value, "val_sites": sorted(by_site[0])}
        train = sorted(set(rest) - set(val))
        folds.append(Fold(train=train, val=val, test=test, meta=meta))
    check_folds(folds, patients)
    return folds


def _fold_val_sites(
    rest: list[str],
    site_of: dict[str, str],
    target: int,
    hold_out: ValidationHoldOut,
    seed: int,
    k: int,
) -> tuple[list[str], list[str]] | None:
    """The validation sites and patients of training fold ``rest`` when its validation split
    holds out whole sites (``site``, or ``auto`` where the sites allow), else None."""
    fold_sites = {p: site_of[p] for p in rest}
    if hold_out is ValidationHoldOut.AUTO:
        return _auto_sites(_group(fold_sites), target, seed, f"fold {k}: validation")
    members = _site_members(fold_sites, f"fold {k}'s validation", "--val-hold-out patient")
    return _choose_sites(members, target, seed)


def _group_test_folds(
    patient_ids: list[str], groups: Sequence[str], n_folds: int, rng
) -> dict[str, int]:
    """Patient -> test fold, every group's patients in one fold (largest groups placed first,
    each into the fold with the fewest patients; ties broken at random)."""
    members = _site_members(
        _patient_strata(patient_ids, groups), "the test folds", "--hold-out patient"
    )
    if len(members) < n_folds:
        raise InputError(
            f"cannot make {n_folds} folds that hold out whole sites from {len(members)} sites "
            f"({sorted(members)[:8]}); use --folds {len(members)} or fewer"
        )
    tie = dict(zip(sorted(members), rng.permutation(len(members)), strict=True))
    load = np.zeros(n_folds, dtype=np.int64)
    out: dict[str, int] = {}
    for g in sorted(members, key=lambda g: (-len(members[g]), tie[g])):
        k = int(np.argmin(load))  # the first of the least-loaded folds
        load[k] += len(members[g])
        out.update(dict.fromkeys(members[g], k))
    return out


def check_folds(
    folds: Sequence[Fold], patients: Sequence[str] | None = None, *, require_all: bool = True
) -> None:
    """Raise :class:`InputError` if a patient crosses a split or misses the test folds.

    Within each fold train, val and test must be disjoint; across folds no patient may be in
    two test folds and, with ``require_all``, every patient of ``patients`` must be in one.
    """
    seen: Counter = Counter()
    for i, f in enumerate(folds):
        tr, va, te = set(f.train), set(f.val), set(f.test)
        for a, b, name in ((tr, te, "train/test"), (tr, va, "train/val"), (va, te, "val/test")):
            both = a & b
            if both:
                raise InputError(
                    f"fold {i}: {len(both)} patient(s) are on both sides of the {name} split "
                    f"(e.g. {sorted(both)[:3]}); fix the folds file or pass --repair-folds"
                )
        seen.update(te)
    twice = [p for p, c in seen.items() if c > 1]
    if twice:
        raise InputError(
            f"{len(twice)} patient(s) are in more than one test fold (e.g. {twice[:3]})"
        )
    if patients is not None:
        missing = sorted(set(patients) - set(seen))
        if missing and not require_all:
            logger.warning(
                "%d patient(s) are in no test fold and get no out-of-fold prediction", len(missing)
            )
        elif missing:
            raise InputError(f"{len(missing)} patient(s) are in no test fold (e.g. {missing[:3]})")


def fold_indices(
    fold: Fold, patient_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slide indices (train, val, test) of a fold given every slide's patient id."""
    pid = np.asarray([str(p) for p in patient_ids])
    return tuple(
        np.flatnonzero(np.isin(pid, np.asarray(s, dtype=str)))
        for s in (fold.train, fold.val, fold.test)
    )


def folds_digest(folds: Sequence[Fold]) -> str:
    """Short content hash of a set of folds (used to key cached per-fold results)."""
    text = json.dumps([f.to_dict() for f in folds], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def save_folds(path: str | os.PathLike[str], folds: Sequence[Fold], **meta) -> None:
    """Write folds as JSON (atomic); ``meta`` (seed, stratify, ...) is stored beside them."""
    write_json(
        path,
        {
            "format": _FORMAT,
            "version": 1,
            "n_folds": len(folds),
            **meta,
            "folds": [{**f.to_dict(), **f.meta} for f in folds],
        },
    )


def _repair(folds: list[Fold]) -> list[Fold]:
    """Drop each fold's test (then val) patients from its train (and val) split, with a warning."""
    out = []
    for i, f in enumerate(folds):
        te = set(f.test)
        val = [p for p in f.val if p not in te]
        train = [p for p in f.train if p not in te and p not in set(val)]
        dropped = len(f.train) - len(train) + len(f.val) - len(val)
        if dropped:
            logger.warning(
                "fold %d: removed %d test patient(s) from its train/val splits", i, dropped
            )
        out.append(Fold(train=train, val=val, test=list(f.test), meta=f.meta))
    return out


def _read_npy(path: Path) -> list[Fold]:
    try:
        obj = np.load(path, allow_pickle=True)
        obj = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object else obj
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the splits file ({e})") from e
    if not isinstance(obj, dict):
        raise InputError(
            f"{path}: expected a pickled dict fold_<i> -> {{'train','val','test'}}, got {type(obj)}"
        )

    def key(k: str) -> int:
        digits = "".join(ch for ch in str(k) if ch.isdigit())
        return int(digits) if digits else 0

    folds = []
    for k in sorted(obj, key=key):
        d = obj[k]
        try:
            folds.append(
                Fold(
                    **{
                        s: [str(p) for p in np.asarray(d.get(s, [])).ravel()]
                        for s in ("train", "val", "test")
                    }
                )
            )
        except (AttributeError, TypeError) as e:
            raise InputError(f"{path}: fold {k!r} is not a dict with train/val/test ids") from e
    return folds


def load_folds(
    path: str | os.PathLike[str],
    *,
    patient_ids: Sequence[str] | None = None,
    repair: bool = False,
) -> list[Fold]:
    """Read folds from rnafm JSON or the published TCGA ``.npy`` splits format.

    Parameters
    ----------
    path
        ``folds.json`` written by :func:`save_folds` or a ``.npy`` pickled dict.
    patient_ids
        The cohort's patient ids: ids not in the cohort are dropped (counted in a warning) and
        every cohort patient must then be in exactly one test fold.
    repair
        Remove each fold's test patients from its own train/val splits instead of refusing the
        file (the published RNA-FM splits put test patients into training sets).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: folds file not found; write one with `rnafm cv` first")
    if path.suffix == ".npy":
        folds = _read_npy(path)
    else:
        try:
            obj = read_json(path)
            folds = [
                Fold(
                    **{s: list(map(str, f.get(s, []))) for s in ("train", "val", "test")},
                    meta={k: v for k, v in f.items() if k not in ("train", "val", "test")},
                )
                for f in obj["folds"]
            ]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise InputError(
                f"{path}: not an rnafm folds file ({e}); expected JSON with 'folds'"
            ) from e
    if not folds:
        raise InputError(f"{path}: no folds in the file")
    if patient_ids is not None:
        known = set(map(str, patient_ids))
        unknown = {p for f in folds for p in (*f.train, *f.val, *f.test)} - known
        if unknown:
            logger.warning(
                "%s: %d patient id(s) are not in the cohort and are ignored", path, len(unknown)
            )
        folds = [
            Fold(*([p for p in s if p in known] for s in (f.train, f.val, f.test)), meta=f.meta)
            for f in folds
        ]
    if repair:
        folds = _repair(folds)
    patients = sorted(set(map(str, patient_ids))) if patient_ids is not None else None
    check_folds(folds, patients, require_all=False)
    return folds
