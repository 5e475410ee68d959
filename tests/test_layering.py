"""Stage layering: a module may import its own stage or a lower one, never a higher one.

Every ``rnafm.*`` import is collected with ``ast`` (module level, inside functions, under
``TYPE_CHECKING``) together with ``importlib.import_module("rnafm....")`` calls on constant
strings and uses of the public facade (``rnafm.fit`` counts as an import of the module that
defines ``fit``), so neither a lazy import nor the facade can hide a reverse dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rnafm"

# low -> high; the first dotted component under ``rnafm`` decides a module's stage
STAGES: tuple[tuple[str, ...], ...] = (
    ("_io", "_lazy", "errors", "runtime", "metrics"),  # below every stage
    ("slides",),
    ("features",),
    ("cohort",),
    ("pathways",),
    ("model",),
    ("flow",),
    ("training",),
    ("predict",),
    ("maps",),  # spatial expression maps from a trained model
    ("evaluate",),
    ("synth",),  # synthetic data for tests, benchmarks and the demo
    ("report",),
    ("demo",),
    ("cli", "__main__"),
)
RANK = {name: i for i, names in enumerate(STAGES) for name in names}
ROOT = "rnafm"  # the package root: ``__version__`` (base) and the lazy public facade


def facade() -> dict[str, str]:
    """Public name -> defining module, from the ``_WHERE`` table of ``rnafm/__init__.py``."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_WHERE":
            return ast.literal_eval(node.value)
    return {}


FACADE = facade()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage(module: str) -> int:
    """Stage rank of ``rnafm.<x>...``; the package root counts as the base."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    if parts[1] not in RANK:
        raise AssertionError(f"{module}: no stage; add its package to STAGES in {__file__}")
    return RANK[parts[1]]


def _resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if node.level:
        base = importer.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module != ROOT:
        return [module]
    # ``from rnafm import x``: a submodule when x is one, else a name of the root (base)
    out = []
    for alias in node.names:
        sub = SRC / alias.name
        out.append(
            f"{ROOT}.{alias.name}" if sub.is_dir() or sub.with_suffix(".py").is_file() else ROOT
        )
    return out


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every rnafm import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, m) for m in _resolve_from(node, importer, is_package)]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == ROOT
            and node.attr in FACADE
        ):
            found.append((node.lineno, FACADE[node.attr]))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, m) for line, m in found if m == ROOT or m.startswith(ROOT + ".")]


def all_modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def violations(path: Path) -> list[str]:
    importer = module_name(path)
    if importer == ROOT:
        return []  # the public facade re-exports names of every stage, lazily
    own = stage(importer)
    return [
        f"{path.relative_to(SRC.parent)}:{line}: {importer} (stage {STAGES[own][0]}) imports "
        f"{target} (stage {STAGES[stage(target)][0]})"
        for line, target in imports_of(path)
        if stage(target) > own
    ]


def test_no_lower_stage_imports_a_higher_one() -> None:
    bad = [v for path in all_modules() for v in violations(path)]
    assert not bad, "reverse imports:\n" + "\n".join(bad)


def test_every_package_has_a_stage() -> None:
    for path in all_modules():
        stage(module_name(path))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from rnafm.training.config import TrainConfig\n", ["rnafm.training.config"]),
        ("def f():\n    from rnafm.predict import load_model\n", ["rnafm.predict"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rnafm.report\n",
            ["rnafm.report"],
        ),
        ("import importlib\nimportlib.import_module('rnafm.cli.main')\n", ["rnafm.cli.main"]),
        ("from rnafm import __version__, training\n", ["rnafm", "rnafm.training"]),
        ("from . import figures\n", ["rnafm.slides"]),
        (
            "def f():\n    import rnafm\n    return rnafm.load_model\n",
            ["rnafm", FACADE["load_model"]],
        ),
    ],
)
def test_imports_are_found(tmp_path: Path, monkeypatch, source: str, expected: list[str]) -> None:
    """The collector sees imports in functions, TYPE_CHECKING blocks and import_module calls."""
    fake = SRC / "slides" / "wsi.py"  # parsed as if it were this module; the file is not touched
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    assert [m for _, m in imports_of(fake)] == expected


def test_a_reverse_import_is_reported(monkeypatch) -> None:
    fake = SRC / "model" / "network.py"
    src = "def f():\n    from rnafm.training.loop import fit\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: src)
    (bad,) = violations(fake)
    assert "rnafm.training.loop" in bad and "stage model" in bad
