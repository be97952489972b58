"""PL/Python packaging, without a server: the modules are plain Python that imports under pytest, and
the exports and their signatures are found in them. (Reaching the server through a table:
tests/db/test_plpython.py.)"""
from __future__ import annotations

import platform

import pytest

from helpers.files import REPO
from plpython import runtime
from runhub_loader.db.plpy_bundle import find_exports, parse_signature, read_modules


def test_modules_are_plain_python():
    described = runtime.describe("pkg", ["b", "a"])
    assert described["python"] == platform.python_version() and described["modules"] == ["a", "b"]


def test_exports_are_found_with_their_signatures():
    exports = find_exports(REPO, read_modules(REPO))
    by_name = {e.name: e for e in exports}
    assert by_name["runhub._plpython_runtime"].module == "runtime"
    assert by_name["runhub._plpython_runtime"].returns == "jsonb"


@pytest.mark.parametrize("signature", ["runhub.f", "runhub.f(x) RETURNS int", "f() int"])
def test_bad_signatures_are_refused(signature):
    with pytest.raises(ValueError):
        parse_signature(signature)
