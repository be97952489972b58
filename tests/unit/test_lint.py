"""The Python of the repository has no unused import, unused local, undefined name or redefinition
that pyflakes finds: the package, the PL/Python modules, the tests and the benchmarks."""
from __future__ import annotations

import io

from pyflakes import api, reporter

from helpers.files import REPO

FOLDERS = ("runhub_loader", "plpython", "tests", "bench")


def test_pyflakes_finds_nothing():
    out, err = io.StringIO(), io.StringIO()
    found = api.checkRecursive([str(REPO / folder) for folder in FOLDERS], reporter.Reporter(out, err))
    assert found == 0 and not err.getvalue(), out.getvalue() + err.getvalue()


def test_pyflakes_would_say_so(tmp_path):
    """The check above can fail: the same call on a file with an unused import counts it."""
    (tmp_path / "bad.py").write_text("import os\n")
    out = io.StringIO()
    assert api.checkRecursive([str(tmp_path)], reporter.Reporter(out, io.StringIO())) == 1
    assert "'os' imported but unused" in out.getvalue()
