"""Lazy re-exports for package ``__init__`` modules (importing a package does no work)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` exporting ``name -> submodule``.

    ``where`` maps each public name to the module that defines it: a submodule relative to
    ``package`` (``"config"``), or an absolute module (``"rnafm.cohort.splits"``) for a name
    re-exported from a lower stage. The module is imported on first access only.
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            module = where[name]
            if not module.startswith("rnafm."):
                module = f"{package}.{module}"
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
