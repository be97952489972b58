"""Every statement runhub_loader sends is a call of runhub's SQL API, written once in
runhub_loader/db/api.py (a method per function), or a named query of runhub_loader/db/queries.py.
No database needed: this reads the sources."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from psycopg import sql

from runhub_loader.db import queries

PACKAGE = Path(queries.__file__).resolve().parent.parent

# A call of the API, alone: `SELECT runhub.f(...)`, `SELECT * FROM runhub.f(...)` (a set) or `CALL runhub.p(...)`.
API_CALL = re.compile(r"(SELECT |SELECT \* FROM |CALL )(runhub\.\w+)\((.*)\)", re.S)
API_MODULE = "db/api.py"
NOT_A_CALL_ALONE = re.compile(r"\bFROM\b|;", re.I)  # a read of a table, or a second statement

# The calls that send the statement given as their first argument.
SENDING_CALLS = ("execute", "_value")

# Calls that send something other than a literal or a named query, each for a reason.
ALLOWED = {
    # deploy applies each sql/ file: deployment of a file, not a query.
    ("db/deploy.py", "conn.execute(path.read_text())"),
    # deploy installs the PL/Python bundle: plpy_bundle.bundle_statements(), deployment of files.
    ("db/deploy.py", "conn.execute(statement, params)"),
    # The typed door's one sending call: its methods pass it their API calls (checked here too).
    ("db/api.py", "self.conn.execute(statement, params)"),
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
            text = statement.value.strip()  # an API call, written in the typed door only
            call_alone = API_CALL.fullmatch(text)
            ok = name == API_MODULE and call_alone and not NOT_A_CALL_ALONE.search(call_alone.group(3))
        else:  # a named query (maybe formatted), or one of the allowed exceptions
            ok = _names_a_query(statement) or (name, call) in ALLOWED
        if not ok:
            wrong.append(f"{name}: {call}")
    assert not wrong, ("call the API through runhub_loader/db/api.py, and move other statements into "
                       "runhub_loader/db/queries.py:\n" + "\n".join(wrong))


def test_each_api_call_is_written_once():
    calls = [statement.value for name, _, statement in _sent_statements()
             if name == API_MODULE and isinstance(statement, ast.Constant)]
    functions = [API_CALL.fullmatch(text.strip()).group(2) for text in calls]
    assert len(functions) > 15 and len(set(functions)) == len(functions), sorted(functions)


def test_every_allowed_exception_still_exists():
    found = {(name, call) for name, call, _ in _sent_statements()}
    assert ALLOWED <= found, ALLOWED - found


def test_the_test_helpers_call_the_api_through_the_typed_door():
    """tests/helpers speak to runhub as the package does (runhub_loader/db/api.py); the tests
    themselves may send any statement: they probe the contract."""
    helpers = PACKAGE.parent / "tests" / "helpers"
    public_call = re.compile(r"(SELECT|CALL) (\* FROM )?runhub\.[a-z]\w*\(")
    written = [f"{path.name}: {m.group(0)}" for path in sorted(helpers.glob("*.py"))
               for m in public_call.finditer(path.read_text())]
    assert list(helpers.glob("*.py")) and not written, written
