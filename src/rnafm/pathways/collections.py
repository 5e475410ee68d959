"""Bundled gene-set collections (MSigDB v7.5.1 human symbols, CC BY 4.0; see NOTICE)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from rnafm.errors import InputError
from rnafm.pathways.gmt import read_gmt

__all__ = ["load_gene_sets", "list_collections", "collection_path", "COLLECTIONS"]

COLLECTIONS: dict[str, str] = {
    "hallmark": "MSigDB Hallmark (H), 50 sets",
    "go_mf": "MSigDB C5 GO molecular function (GO:MF)",
    "go_bp": "MSigDB C5 GO biological process (GO:BP)",
    "reactome": "MSigDB C2 canonical pathways, Reactome (CP:REACTOME)",
}
MSIGDB_VERSION = "7.5.1"


def list_collections() -> list[str]:
    """Names of the bundled collections, usable wherever a GMT path is accepted."""
    return list(COLLECTIONS)


def collection_path(name: str) -> Path:
    """Path of a bundled collection's ``.gmt.gz`` file."""
    key = name.strip().lower()
    if key not in COLLECTIONS:
        raise InputError(
            f"unknown gene-set collection {name!r}. Bundled: {', '.join(COLLECTIONS)}; "
            "or pass the path of a .gmt/.gmt.gz file."
        )
    return Path(str(resources.files("rnafm") / "data" / "genesets" / f"{key}.gmt.gz"))


def load_gene_sets(name_or_path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Gene sets of a bundled collection (``hallmark``, ``go_mf``, ``go_bp``, ``reactome``) or a GMT file.

    Parameters
    ----------
    name_or_path
        A bundled collection name (case-insensitive) or the path of a ``.gmt`` / ``.gmt.gz`` file.

    Returns
    -------
    dict
        ``{set name: [gene symbols]}`` in file order.

    Raises
    ------
    InputError
        Unknown name, missing or unreadable file.
    """
    if isinstance(name_or_path, str) and name_or_path.strip().lower() in COLLECTIONS:
        return read_gmt(collection_path(name_or_path))
    p = Path(name_or_path)
    if p.is_file():
        return read_gmt(p)
    raise InputError(
        f"gene sets {str(name_or_path)!r}: neither a bundled collection ({', '.join(COLLECTIONS)}) "
        "nor an existing .gmt/.gmt.gz file. Check the name or path."
    )
