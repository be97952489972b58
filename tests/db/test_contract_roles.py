"""The contract's role table (docs/sql-contract.md, "Roles") is the catalog's truth: every function a
runhub role may execute, and every relation it may read, is listed there, and nothing more. (Reading
the table: tests/unit/test_contract_table.py.)"""
from __future__ import annotations

import pytest

from helpers.contract import ROLES, contract_roles


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
