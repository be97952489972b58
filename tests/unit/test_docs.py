"""The documentation a clone carries: every link in the README and docs/ resolves inside the
repository (a file, and a heading's anchor when it names one), and so does every file path and test
name they quote in backticks (the README's guarantees name the tests that prove them); nothing
points outside the repository but to the web."""
from __future__ import annotations

import re

import pytest

from helpers.files import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "tests" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FOLDERS = ("docs/", "sql/", "tests/", "bench/", "migrations/", "plpython/", "runhub_loader/", "scripts/", ".ci/")
QUOTED_PATH = re.compile(r"`((?:%s)[\w./-]*)`" % "|".join(re.escape(f) for f in FOLDERS))
QUOTED_TEST = re.compile(r"`(test_\w+)(\.py|\*|`|\(|\[)")
NOT_IN_A_CLONE = {"runhub_loader/deployable/"}  # where the wheel puts sql/, plpython/, migrations/


def anchors(path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def links(path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return LINK.findall(text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(document):
    broken = []
    for target in links(document):
        if re.match(r"https?://", target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert broken == [], f"{document.name}: links that do not resolve in a clone"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_document_names_a_file_outside_the_repository(document):
    assert not re.search(r"\.\./shared|DESIGN\.md|run-hub-phase4-plan", document.read_text())


def _test_names() -> tuple[set[str], set[str]]:
    """(test functions, test modules) of the repository."""
    modules = sorted((REPO / "tests").rglob("test_*.py"))
    functions = {name for path in modules
                 for name in re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(), re.M)}
    return functions, {path.stem for path in modules}


def _exists(document, path: str) -> bool:
    """A path as the README quotes it (from the top) or as a document in a folder does (from there)."""
    path = path.rstrip(".")
    return path in NOT_IN_A_CLONE or (REPO / path).exists() or (document.parent / path).exists()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_and_test_a_document_quotes_exists(document):
    text = document.read_text()
    missing = sorted({p for p in QUOTED_PATH.findall(text) if not _exists(document, p)})
    functions, modules = _test_names()
    unknown = set()
    for name, after in QUOTED_TEST.findall(text):
        known = (name in modules if after == ".py" else any(f.startswith(name) for f in functions) if after == "*"
                 else name in functions or name in modules)
        if not known:
            unknown.add(name + after)
    assert (missing, sorted(unknown)) == ([], []), f"{document.name} quotes files or tests a clone does not have"


def test_the_readme_quotes_paths_and_tests_so_the_check_above_checks_something():
    text = (REPO / "README.md").read_text()
    assert len(QUOTED_PATH.findall(text)) > 20 and len(QUOTED_TEST.findall(text)) > 20


def test_every_name_the_architecture_page_quotes_is_in_the_code():
    """docs/architecture.md walks the code function by function: each name it quotes (a function,
    table, trigger or method with an underscore in it) exists in sql/, migrations/, plpython/ or
    runhub_loader/."""
    code = "\n".join(p.read_text() for folder in ("sql", "migrations", "plpython", "runhub_loader")
                     for p in (REPO / folder).rglob("*") if p.suffix in (".sql", ".py"))
    text = (REPO / "docs" / "architecture.md").read_text()
    names = {n.split(".")[-1] for n in re.findall(r"`(?:runhub\.)?((?:[A-Za-z]+\.)?_?[a-z]+_[a-z_]+)(?:\(|`)", text)}
    assert len(names) > 30
    assert sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", code)) == []
