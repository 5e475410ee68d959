"""The user documentation stays short, linked and self-contained.

README.md is what a newcomer reads: at most 250 lines, with the two commands. Every relative link
in README.md and docs/*.md must point to an existing file (and, for a ``#anchor`` into a markdown
file, to an existing heading). README, docs and the package source speak of the project only.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_PYNAME = re.compile(r"(?<![\w./-])rnafm(?:\.[A-Za-z_]\w*)+")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...
_FORBIDDEN = {
    "the brief": re.compile(r"\bthe brief\b", re.I),
    "issue <number>": re.compile(r"\bissues?\s*#?\d+", re.I),
    "../shared": re.compile(r"\.\./shared"),
}


def _markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("**/*.md"))]


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code spans."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Targets of the markdown links and images in ``text`` (code excluded)."""
    return _LINK.findall(_prose(text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # keep a link's text only
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file (or heading) does not exist."""
    bad = []
    for target in links(path.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


def resolves(dotted: str) -> bool:
    """Whether ``rnafm.a.b.c`` names an importable module or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_readme_is_short_and_has_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    n_lines = len(text.splitlines())
    assert n_lines <= MAX_README_LINES, (
        f"README.md has {n_lines} lines (at most {MAX_README_LINES}): move details to docs/."
    )
    for command in ("make demo", "make test"):
        assert command in text, f"README.md must show `{command}` verbatim."


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    bad = sorted(set(broken_links(path)))
    assert not bad, f"{path.relative_to(ROOT)}: broken links: {', '.join(bad)}"


def test_documented_python_names_exist() -> None:
    missing = sorted(
        {
            f"{path.relative_to(ROOT)}: {name}"
            for path in _markdown_files()
            for name in _PYNAME.findall(path.read_text(encoding="utf-8"))
            if not resolves(name)
        }
    )
    assert not missing, "documented Python names that do not exist:\n" + "\n".join(missing)


def test_docs_speak_of_the_project_only() -> None:
    files = _markdown_files() + sorted((ROOT / "src" / "rnafm").glob("**/*.py"))
    hits = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            hits += [
                f"{path.relative_to(ROOT)}:{n}: {name!r}"
                for name, pattern in _FORBIDDEN.items()
                if pattern.search(line)
            ]
    assert not hits, "mentions of things outside the project:\n" + "\n".join(hits)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## A `code` heading (x.y)\n\n[ok](#title) [ok2](#a-code-heading-xy) "
        "[gone](missing.md) [web](https://example.org) [bad anchor](#nope)\n"
        "`[in code](missing2.md)`\n\n```\n[in fence](missing3.md)\n```\n",
        encoding="utf-8",
    )
    assert links(page.read_text()) == [
        "#title", "#a-code-heading-xy", "missing.md", "https://example.org", "#nope"
    ]
    assert anchors(page) == {"title", "a-code-heading-xy"}
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "#nope"]
    assert _PYNAME.findall("`rnafm.train.config` and rnafm.load_model(run) in rnafm_version") == [
        "rnafm.train.config", "rnafm.load_model"
    ]
    assert resolves("rnafm.train") and not resolves("rnafm.no_such_module.thing")
    assert _FORBIDDEN["issue <number>"].search("as issue 3 says")
    assert not _FORBIDDEN["issue <number>"].search("a known issue with 3 slides")
