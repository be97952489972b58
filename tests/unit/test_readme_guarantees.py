"""The README's Guarantees name the tests that prove them: each named file and test must exist, so
the table cannot outlive a renamed or deleted test."""
from __future__ import annotations

import re

from helpers.files import REPO


def _guarantees() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Guarantees")
    return readme[start:readme.index("\n## ", start + 1)]


def test_every_test_the_guarantees_name_exists():
    section = _guarantees()
    sources = {p.name: p.read_text() for room in ("unit", "db") for p in (REPO / "tests" / room).glob("test_*.py")}
    sql = {p.name for p in (REPO / "tests" / "sql").glob("*.sql")}
    files = set(re.findall(r"(test_[a-z_]+\.py)", section))
    assert files and files <= set(sources), files - set(sources)
    assert set(re.findall(r"tests/sql/([0-9a-z_]+\.sql)", section)) <= sql
    everything = "\n".join(sources.values())
    for name in re.findall(r"`(test_[a-z0-9_]+\*?)`", section):
        pattern = r"def " + re.escape(name.rstrip("*")) + ("" if name.endswith("*") else r"\(")
        assert re.search(pattern, everything), f"the README names {name}, which no test defines"
