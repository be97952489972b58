"""Every statement runhub_loader sends is a call of runhub's SQL API, written where it is made, or
a named query of runhub_loader/db/queries.py. No database needed: this reads the sources."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from psycopg import sql

from runhub_loader.db import queries

PACKAGE = Path(queries.__file__).resolve().parent.parent

# A call of the API, alone: `SELECT runhub.f(...)` (maybe `AS name`), `CALL runhub.p(...)`, `LISTEN channel`.
API_CALL = re.compile(r"(SELECT|CALL) runhub\.\w+\(.*\)( AS \w+)?|LISTEN \w+", re.S)
NOT_A_CALL_ALONE = re.compile(r"\bFROM\b|;", re.I)  # a read of a table, or a second statement

# The calls that send the statement given as their first argument.
SENDING_CALLS = ("execute", "_database_call")

# Calls that send something other than a literal or a named query, each for a reason.
ALLOWED = {
    # deploy applies each sql/ file: deployment of a file, not a query.
    ("db/deploy.py", "conn.execute(path.read_text())"),
    # deploy installs the PL/Python bundle: plpy_bundle.bundle_statements(), deployment of files.
    ("db/deploy.py", "conn.execute(statement, params)"),
    # The sender's _database_call(sql, params): its callers pass API calls (checked here too).
    ("mail/daemon.py", "conn.execute(sql, params)"),
    # The proxy's deploy applies proxy/sql/ files, and the API functions it generates from a
    # shard's catalog (proxy/deploy.py remote_function, wrapper_function): deployment of code.
    ("proxy/deploy.py", "proxy.execute(path.read_text())"),
    ("proxy/deploy.py", "conn.execute(remote_function(fn))"),
    ("proxy/deploy.py", "conn.execute(wrapper_function(fn))"),
}


def test_every_query_is_a_string_or_a_composable():
    names = [name for name in vars(queries) if name.isupper()]
    assert names
    for name in names:
        assert isinstance(getattr(queries, name), (str, sql.Composable)), name


def test_the_recorders_statement_is_built_from_its_halves():
    assert queries.record_sent_and_start(True, False) == queries.RECORD_SENT
    assert queries.record_sent_and_start(False, True) == queries.START_MESSAGES
    assert queries.record_sent_and_start(True, True) == f"{queries.RECORD_SENT} UNION ALL {queries.START_MESSAGES}"


def _sent_statements():
    """(file, call's source, its first argument) of every call that sends a statement."""
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name == "db/queries.py":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SENDING_CALLS and node.args):
                yield name, ast.get_source_segment(source, node), node.args[0]


def _names_a_query(node) -> bool:
    return any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "queries"
               for n in ast.walk(node))


def test_statements_other_than_api_calls_live_in_queries():
    found = list(_sent_statements())
    assert len(found) > 20  # the scan sees the package
    wrong = []
    for name, call, statement in found:
        if isinstance(statement, ast.Constant) and isinstance(statement.value, str):
            text = statement.value.strip()
            ok = API_CALL.fullmatch(text) and not NOT_A_CALL_ALONE.search(text)
        else:  # a named query (maybe formatted), or one of the allowed exceptions
            ok = _names_a_query(statement) or (name, call) in ALLOWED
        if not ok:
            wrong.append(f"{name}: {call}")
    assert not wrong, "move these statements into runhub_loader/db/queries.py:\n" + "\n".join(wrong)


def test_every_allowed_exception_still_exists():
    found = {(name, call) for name, call, _ in _sent_statements()}
    assert ALLOWED <= found, ALLOWED - found
