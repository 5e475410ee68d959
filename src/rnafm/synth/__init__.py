"""A built-in synthetic cohort (slides, expression, hidden truth) and the end-to-end demo.

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = ["SynthConfig", "SynthCohort", "make_cohort", "load_cohort", "run_demo", "DemoResult"]

_WHERE = {
    "SynthConfig": "config",
    "SynthCohort": "cohort",
    "make_cohort": "cohort",
    "load_cohort": "cohort",
    "run_demo": "demo",
    "DemoResult": "demo",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
