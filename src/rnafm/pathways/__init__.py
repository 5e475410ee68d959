"""Gene sets (bundled MSigDB collections or any GMT), pathway token selection and pathway scores.

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "load_gene_sets",
    "list_collections",
    "read_gmt",
    "write_gmt",
    "TokenConfig",
    "PathwayTokens",
    "select_tokens",
    "pathway_scores",
]

_WHERE = {
    "load_gene_sets": "collections",
    "list_collections": "collections",
    "read_gmt": "gmt",
    "write_gmt": "gmt",
    "TokenConfig": "tokens",
    "PathwayTokens": "tokens",
    "select_tokens": "tokens",
    "pathway_scores": "scores",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"rnafm.pathways.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rnafm.pathways' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
