"""`runhub import`: JSON lines through ingest_events — idempotent, refusals listed by reason and line,
never stopping the import; from a file (progress bar) or a pipe."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from helpers.db import event, new_project
from runhub_loader import cli, importer


def lines_file(tmp_path, lines) -> str:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def good(n: int) -> str:
    return json.dumps(event(key=f"hist-{n}", at="2026-11-01T10:00:00Z", customer={"email": f"h{n}@example.com"}))


def run_import(db_url, project, source, stdin=None):
    return CliRunner().invoke(cli.main, ["--log-format", "text", "import", "--project", str(project), source,
                                         "--database-url", db_url], input=stdin)


def test_an_import_stores_each_event_once_and_lists_what_it_refused(db_url, conn, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "BATCH_EVENTS", 7)  # several batches out of a small file
    project, _ = new_project(conn)
    lines = [good(n) for n in range(20)]
    lines.insert(3, "{not json")
    lines.insert(9, json.dumps(event(key="bad-1", at="yesterday")))  # no UTC offset: refused by ingest
    lines.insert(12, "")  # blank lines are skipped
    lines.insert(15, json.dumps([1, 2]))
    lines.append(good(5))  # a key twice: stored once
    path = lines_file(tmp_path, lines)
    first = run_import(db_url, project, path)
    assert first.exit_code == 0, first.output
    assert "25 line(s): 20 event(s) stored, 1 already there, 3 refused" in first.output
    assert "refused 2 x import.notJsonObject: line(s) 4, 16" in first.output
    assert "refused 1 x events.invalid (occurredAt): line(s) 10" in first.output
    stored = conn.execute("SELECT count(*) FROM runhub.business_events WHERE project_id = %s", (project,)).fetchone()[0]
    assert stored == 20
    again = run_import(db_url, project, path)  # idempotent: nothing twice
    assert "25 line(s): 0 event(s) stored, 21 already there, 3 refused" in again.output
    assert conn.execute("SELECT count(*) FROM runhub.business_events WHERE project_id = %s", (project,)).fetchone()[0] == 20


def test_an_import_reads_a_pipe(db_url, conn):
    project, _ = new_project(conn)
    result = run_import(db_url, project, "-", stdin="".join(good(n) + "\n" for n in range(5)))
    assert result.exit_code == 0 and "5 line(s): 5 event(s) stored" in result.output


def test_an_unknown_project_stops_the_import_and_says_why(db_url, tmp_path):
    result = run_import(db_url, "00000000-0000-0000-0000-000000000001", lines_file(tmp_path, [good(1)]))
    assert result.exit_code == 1 and "import stopped: projects.notFound" in result.output


@pytest.mark.parametrize("batch_bytes", [1, 400])
def test_batches_are_cut_by_size_too(db_url, conn, tmp_path, monkeypatch, batch_bytes):
    monkeypatch.setattr(importer, "BATCH_BYTES", batch_bytes)
    project, _ = new_project(conn)
    report = importer.import_events(db_url, str(project), [good(n) + "\n" for n in range(9)])
    assert (report.lines, report.stored, report.refused_count) == (9, 9, 0)
