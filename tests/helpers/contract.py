"""The SQL contract (docs/sql-contract.md) read as data: its role table."""
from __future__ import annotations

import re

from helpers.files import REPO

ROLES = ("runhub_app", "runhub_ingest", "runhub_sender", "runhub_reader", "runhub_analyst")


def contract_roles() -> dict[str, dict[str, set[str]]]:
    """{role: {"execute": names, "select": names}} from the contract's role table."""
    text = (REPO / "docs" / "sql-contract.md").read_text()
    section = text.split("\n## Roles\n", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`runhub_\w+`", cells[0]):
            names = [set(re.findall(r"`(\w+)`", cell)) for cell in cells[2:]]
            table[cells[0].strip("`")] = {"execute": names[0], "select": names[1]}
    return table


def contract_signatures() -> dict[str, list[str]]:
    """{function: its parameters' names} for each function the contract defines: a `### ` heading
    or a table row that starts with `name(parameters)`, else its first mention in backticks with
    parameters, else `name()`."""
    text = (REPO / "docs" / "sql-contract.md").read_text()
    mention = re.compile(r"`(?:runhub\.)?(\w+)\(([^)`]*)\)")
    defined: dict[str, list[str]] = {}
    mentioned: dict[str, list[str]] = {}
    for line in text.splitlines():
        head = line if line.startswith("### `") else line.split("|")[1] if line.startswith("| `") else ""
        for name, params in mention.findall(head):
            defined.setdefault(name, _names(params))
        for name, params in mention.findall(line):
            if params.strip() or name not in mentioned:
                if not mentioned.get(name):
                    mentioned[name] = _names(params)
    return mentioned | defined


def _names(params: str) -> list[str]:
    return [p.split()[0] for p in params.split(",") if p.strip() and p.strip() != "…"]


def contract_errors() -> dict[str, tuple[str, set[str]]]:
    """{i18n key: (SQLSTATE, the params it names)} from the contract's error table."""
    text = (REPO / "docs" / "sql-contract.md").read_text()
    errors = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\| `([a-z]+(?:\.[A-Za-z]+)+)` \| (PT\d{3}) \| (.*) \|", line.strip())
        if match:
            errors[match[1]] = (match[2], set(re.findall(r"\b([a-z][A-Za-z]*)\b(?![^(]*\))", match[3])))
    return errors
