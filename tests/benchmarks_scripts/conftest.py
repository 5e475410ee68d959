"""The ``bench`` fixture: the script ``benchmarks/<SCRIPT>.py`` of a test module, as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench(request):
    """Import ``benchmarks/<SCRIPT>.py`` (``SCRIPT`` set by the test module) as a module."""
    name = request.module.SCRIPT
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
