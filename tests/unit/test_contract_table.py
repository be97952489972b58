"""The contract's role table (docs/sql-contract.md, "Roles") can be read, and names every role. (That
the catalog grants exactly what it lists: tests/db/test_contract_roles.py.)"""
from __future__ import annotations

from helpers.contract import ROLES, contract_roles


def test_the_contract_lists_every_role():
    assert set(contract_roles()) == {*ROLES, "runhub_owner"}
