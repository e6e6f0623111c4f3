"""Every relative link in README.md and docs/*.md points at a file of the repository, and so
does every path written in backticks that starts at the repository's root (`tests/...`,
`docs/...`) or leaves it (`../...`)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), and src="..." / href="..." in inline HTML
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|(?:src|href)=\"([^\"]+)\"")
# `path` in backticks, from the repository's root or above it; "::test" ids are cut off
CODE_PATH = re.compile(r"`((?:\.\./|(?:docs|tests|pyro_lvm|tutorials|benchmarks|\.ci)/)[^`\s:]*)")


def relative_links(text: str) -> list[str]:
    """Link targets that are paths (no scheme, no bare #anchor), without their #anchor.

    >>> relative_links('see [a](docs/a.md#top), ![i](x.png), [w](https://e.org), [s](#s)')
    ['docs/a.md', 'x.png']
    """
    targets = [a or b for a, b in LINK.findall(text)]
    return [t.split("#")[0] for t in targets
            if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def in_repository(path: Path) -> bool:
    """The file exists and is inside the repository (a sibling folder of the clone is not)."""
    path = path.resolve()
    return path.exists() and path.is_relative_to(ROOT.resolve())


def code_paths(text: str) -> list[str]:
    """Paths in backticks that start at the repository's root or above it.

    >>> code_paths("see `tests/test_x.py::test_y`, `../shared/notes.md` and `infer/`, `x/y`")
    ['tests/test_x.py', '../shared/notes.md']
    """
    return CODE_PATH.findall(text)


def test_finds_links():
    readme = relative_links((ROOT / "README.md").read_text())
    assert "docs/architecture.md" in readme


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_point_at_files(doc):
    dead = [t for t in relative_links(doc.read_text()) if not in_repository(doc.parent / t)]
    assert not dead, f"{doc.relative_to(ROOT)} links to missing files: {dead}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_paths_in_backticks_exist(doc):
    missing = [t for t in code_paths(doc.read_text()) if not in_repository(ROOT / t)]
    assert not missing, f"{doc.relative_to(ROOT)} names files that are not here: {missing}"


def test_a_dead_link_is_caught(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("[gone](../shared/design.md), notes in `../shared/design.md`")
    assert [t for t in relative_links(doc.read_text()) if not in_repository(doc.parent / t)]
    assert [t for t in code_paths(doc.read_text()) if not in_repository(ROOT / t)]
