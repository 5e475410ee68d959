"""Gene sets (bundled MSigDB collections or any GMT), pathway token selection and pathway scores.

Names are imported lazily on first use; importing this package does no work.
"""

from __future__ import annotations

from rnafm._lazy import lazy_exports

__all__ = [
    "load_gene_sets",
    "list_collections",
    "read_gmt",
    "write_gmt",
    "BackgroundLayout",
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
    "BackgroundLayout": "tokens",
    "TokenConfig": "tokens",
    "PathwayTokens": "tokens",
    "select_tokens": "tokens",
    "pathway_scores": "scores",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
