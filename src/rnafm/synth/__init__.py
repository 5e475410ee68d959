"""A built-in synthetic cohort (slides, expression, hidden truth) and the end-to-end demo.

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SynthConfig", "SynthCohort", "make_cohort", "load_cohort", "run_demo", "DemoResult"]

_WHERE = {
    "SynthConfig": "config",
    "SynthCohort": "cohort",
    "make_cohort": "cohort",
    "load_cohort": "cohort",
    "run_demo": "demo",
    "DemoResult": "demo",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"rnafm.synth.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rnafm.synth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
