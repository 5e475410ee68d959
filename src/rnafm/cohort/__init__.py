"""Cohorts: the reference table, slide/expression matching (GDC, TCGA) and cohort data loading.

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
