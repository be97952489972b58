"""The contract's role table (docs/sql-contract.md, "Roles") is the catalog's truth: every function a
runhub role may execute, and every relation it may read, is listed there, and nothing more. (Reading
the table: tests/unit/test_contract_table.py.)"""
from __future__ import annotations

import re

import psycopg
import pytest

from helpers.contract import ROLES, contract_errors, contract_roles, contract_signatures


@pytest.mark.parametrize("role", ROLES)
def test_a_role_executes_exactly_what_the_contract_lists(conn, role):
    granted = conn.execute(
        """SELECT p.proname, count(*) FROM pg_proc p
            WHERE p.pronamespace = 'runhub'::regnamespace AND has_function_privilege(%s, p.oid, 'EXECUTE')
            GROUP BY p.proname""", (role,)).fetchall()
    assert {name for name, _ in granted} == contract_roles()[role]["execute"]
    assert all(overloads == 1 for _, overloads in granted), "one signature per granted name"


@pytest.mark.parametrize("role", ROLES)
def test_a_role_reads_exactly_what_the_contract_lists(conn, role):
    readable = conn.execute(
        """SELECT c.relname FROM pg_class c
            WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')""",
        (role,)).fetchall()
    assert {r[0] for r in readable} == contract_roles()[role]["select"]


def test_the_owner_is_nobody_and_owns_everything(conn):
    can_login, superuser, members = conn.execute(
        """SELECT r.rolcanlogin, r.rolsuper,
                  (SELECT count(*) FROM pg_auth_members m WHERE m.roleid = r.oid)
             FROM pg_roles r WHERE r.rolname = 'runhub_owner'""").fetchone()
    assert (can_login, superuser, members) == (False, False, 0)
    not_owned = conn.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'runhub'::regnamespace AND p.proowner <> 'runhub_owner'::regrole""").fetchall()
    assert not_owned == []


def _granted_signatures(conn) -> list[tuple[str, str, list[str], list[str]]]:
    """(name, kind, input names, input types) of every function a runhub role may execute."""
    rows = conn.execute(
        """SELECT p.proname, p.prokind, coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'),
                  ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, i) ORDER BY i)
             FROM pg_proc p
            WHERE p.pronamespace = 'runhub'::regnamespace
              AND EXISTS (SELECT 1 FROM unnest(%s::text[]) r WHERE has_function_privilege(r, p.oid, 'EXECUTE'))
            ORDER BY 1""", (list(ROLES),)).fetchall()
    signatures = []
    for name, kind, names, modes, types in rows:
        modes = modes or ["i"] * len(names)
        signatures.append((name, kind, [n for n, m in zip(names, modes) if m in ("i", "b")], types))
    return signatures


def test_every_granted_function_has_the_parameter_names_the_contract_gives_it(conn):
    documented = contract_signatures()
    mismatched = {name: (names, documented.get(name)) for name, _, names, _ in _granted_signatures(conn)
                  if documented.get(name) != names}
    assert mismatched == {}, "catalog vs docs/sql-contract.md"


def test_every_granted_function_takes_named_notation(conn):
    """Called with every argument by its documented name (all null): the call reaches the function,
    which answers or refuses with its documented PTxxx; a name it does not take would be 42883."""
    documented = contract_signatures()
    for name, kind, names, types in _granted_signatures(conn):
        arguments = ", ".join(f"{arg} => NULL::{type_}" for arg, type_ in zip(documented[name], types))
        statement = f"{'CALL' if kind == 'p' else 'SELECT'} runhub.{name}({arguments})"
        try:
            if kind == "p":  # a procedure that commits: outside any transaction block
                conn.execute(statement)
            else:
                with conn.transaction(force_rollback=True):
                    conn.execute(statement)
        except psycopg.Error as err:
            assert err.sqlstate.startswith("PT"), (statement, err.sqlstate, str(err))


def test_the_contracts_error_table_is_the_catalog_both_ways(conn):
    """Every key runhub can raise is in docs/sql-contract.md with its SQLSTATE, and every key there
    is one it can raise; each placeholder of a key's hint is among the params the table gives it."""
    catalog = {key: (sqlstate, set(re.findall(r"\{(\w+)\}", hint)))
               for key, sqlstate, hint in conn.execute("SELECT key, sqlstate, hint FROM runhub.error_catalog()")}
    documented = contract_errors()
    assert {k: v[0] for k, v in documented.items()} == {k: v[0] for k, v in catalog.items()}
    unnamed = {key: placeholders - documented[key][1] for key, (_, placeholders) in catalog.items()
               if placeholders - documented[key][1]}
    assert unnamed == {}, "hint placeholders the contract's table does not list as params"
