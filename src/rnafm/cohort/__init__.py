"""Cohorts: the reference table, slide/expression matching (GDC, TCGA) and cohort data loading.

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ExpressionScale",
    "Reference",
    "load_reference",
    "write_reference",
    "CohortData",
    "load_cohort_data",
    "build_cohort",
    "CohortConfig",
]

_WHERE = {
    "ExpressionScale": "reference",
    "Reference": "reference",
    "load_reference": "reference",
    "write_reference": "reference",
    "CohortData": "dataset",
    "load_cohort_data": "dataset",
    "build_cohort": "build",
    "CohortConfig": "build",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"rnafm.cohort.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rnafm.cohort' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
