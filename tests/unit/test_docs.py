"""The README stays a five-minute read that points into docs/, and every page of docs/ is on
the site: the README's links to docs/ lead to files that exist, and mkdocs.yml's nav lists
every page (``scripts/dev docs`` builds the site itself, with --strict, in CI).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: The README's length bound: what a newcomer reads before the docs take over.
MAX_README_LINES = 160

#: ``[text](target)`` links of Markdown (images included); the target up to a space or ``)``.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)")


def nav_pages(entry: object) -> list[str]:
    """Every page file named in a (nested) mkdocs nav entry."""
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in nav_pages(value)]
    return []


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_the_readmes_links_into_docs_exist() -> None:
    targets = [t for t in LINK.findall(README.read_text()) if t.startswith("docs/")]
    assert targets, "README.md links to no page of docs/"
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = set(nav_pages(config["nav"]))
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert not pages - listed, f"pages missing from mkdocs.yml's nav: {sorted(pages - listed)}"
    assert not listed - pages, f"nav entries with no page: {sorted(listed - pages)}"
