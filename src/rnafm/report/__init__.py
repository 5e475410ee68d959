"""Self-contained HTML report of evaluations (imported lazily)."""

from __future__ import annotations

from typing import Any

__all__ = ["make_report"]


def __getattr__(name: str) -> Any:
    if name == "make_report":
        from rnafm.report.html import make_report

        return make_report
    raise AttributeError(f"module 'rnafm.report' has no attribute {name!r}")
