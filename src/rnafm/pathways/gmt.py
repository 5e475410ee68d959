"""GMT files: one gene set per line, ``name<TAB>description<TAB>gene<TAB>gene...`` (optionally gzipped)."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from rnafm.errors import InputError

__all__ = ["read_gmt", "write_gmt"]

logger = logging.getLogger(__name__)


def read_gmt(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a ``.gmt`` or ``.gmt.gz`` file into ``{set name: [genes]}``.

    Genes are stripped, empty fields dropped and repeats within a set removed (first kept).
    A set name repeated on a later line is merged into the first (a warning is logged).
    Lines with no genes are skipped.

    Raises
    ------
    InputError
        The file is missing, unreadable, not text, or holds no gene set.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: gene-set file not found. Pass a bundled name or a .gmt path.")
    try:
        if p.name.lower().endswith(".gz"):
            with gzip.open(p, "rt", encoding="utf-8") as f:
                text = f.read()
        else:
            text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise InputError(f"{p}: cannot read the gene-set file ({e}). Is it a (gzipped) GMT?") from e
    sets: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\r\n").split("\t")
        name = parts[0].strip()
        genes = [g.strip() for g in parts[2:] if g.strip()]
        if not name or not genes:
            logger.debug("%s:%d: no set name or no genes; skipped", p, lineno)
            continue
        if name in sets:
            logger.warning("%s:%d: gene set %r repeated; merging", p, lineno, name)
            genes = sets[name] + genes
        sets[name] = list(dict.fromkeys(genes))
    if not sets:
        raise InputError(
            f"{p}: no gene set found. A GMT line is: name<TAB>description<TAB>gene1<TAB>gene2..."
        )
    return sets


def write_gmt(
    path: str | os.PathLike[str],
    sets: Mapping[str, Sequence[str]],
    *,
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write ``sets`` as GMT (gzipped when the name ends in ``.gz``), atomically."""
    from rnafm._io import atomic_path

    lines = []
    for name, genes in sets.items():
        desc = (descriptions or {}).get(name, "")
        lines.append("\t".join([name, desc, *genes]))
    data = ("\n".join(lines) + "\n").encode()
    with atomic_path(path) as tmp:
        if str(path).lower().endswith(".gz"):
            with gzip.GzipFile(tmp, "wb", mtime=0) as f:
                f.write(data)
        else:
            tmp.write_bytes(data)
