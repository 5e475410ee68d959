"""Atomic writes and the lazy CLI group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rnafm._io import atomic_path, file_digest, read_json, write_json


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_file_digest_changes_with_content(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 10)
    d1 = file_digest(a)
    a.write_bytes(b"x" * 9 + b"y")
    assert file_digest(a) != d1


def test_import_rnafm_is_light() -> None:
    code = "import sys, rnafm; bad = [m for m in ('torch', 'anndata', 'h5py', 'openslide') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_lists_every_command() -> None:
    from click.testing import CliRunner

    from rnafm.cli.main import _COMMANDS, cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in _COMMANDS:
        assert name in result.output, f"command {name} missing from rnafm --help"


def test_atomic_path_uses_ordinary_permissions(tmp_path: Path) -> None:
    import os

    target = tmp_path / "perm.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
