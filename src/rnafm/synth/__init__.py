"""A built-in synthetic cohort: slides, expression and the hidden truth (the demo is rnafm.demo).

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = ["SynthConfig", "SynthCohort", "make_cohort", "load_cohort"]

_WHERE = {
    "SynthConfig": "config",
    "SynthCohort": "cohort",
    "make_cohort": "cohort",
    "load_cohort": "cohort",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
