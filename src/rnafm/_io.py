"""Small file helpers shared by every stage: atomic writes and JSON provenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json", "read_json", "file_digest"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or exception leaves the previous ``path`` (if any) untouched and removes the
    temporary file. The temporary name keeps the suffix so libraries that sniff it work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        yield tmp
        tmp.replace(final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def file_digest(
    path: str | os.PathLike[str], *, chunk: int = 1 << 20, limit: int | None = None
) -> str:
    """SHA-1 hex digest of a file's bytes (the first ``limit`` bytes plus its size when given)."""
    h = hashlib.sha1()
    p = Path(path)
    read = 0
    with p.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
            read += len(block)
            if limit is not None and read >= limit:
                h.update(str(p.stat().st_size).encode())
                break
    return h.hexdigest()
