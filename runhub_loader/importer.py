"""`runhub import`: a shop's history from JSON lines (one event a line, the shape ingest_event takes),
streamed through runhub.ingest_events in batches. Idempotent (events are stored once per idempotency
key, so re-running imports nothing twice); a refused line never stops the import: the summary lists
the refusals by reason, with their line numbers."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import psycopg

from .constants import MAX_INGEST_BATCH, MAX_INGEST_BATCH_BYTES
from .db.api import Api

# A batch: at most this many events (a fifth of what ingest_events takes), and this much JSON text —
# an eighth of what it refuses as held (maxIngestBatchBytes; PostgreSQL holds small numbers' arrays at
# up to 4x their text), so a batch is never refused whole.
BATCH_EVENTS = MAX_INGEST_BATCH // 5
BATCH_BYTES = MAX_INGEST_BATCH_BYTES // 8
NOT_JSON = "import.notJsonObject"  # a line that is no JSON object: refused here, never sent
LINES_SHOWN = 10  # line numbers listed per reason


@dataclass
class ImportReport:
    lines: int = 0
    stored: int = 0
    already_there: int = 0
    refused: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # reason -> line numbers
    seconds: float = 0.0

    @property
    def refused_count(self) -> int:
        return sum(len(lines) for lines in self.refused.values())

    @property
    def events_per_second(self) -> float:
        return (self.stored + self.already_there) / self.seconds if self.seconds else 0.0


def _reason(error: dict) -> str:
    """A refusal's key, with the field it names (events.invalid: which field)."""
    field_name = (error.get("params") or {}).get("field")
    return f"{error.get('key')} ({field_name})" if field_name else str(error.get("key"))


def _send(conn, project: str, batch: list[tuple[int, dict]], report: ImportReport) -> None:
    answers = Api(conn).ingest_events(project, [e for _, e in batch])
    for (line_no, _), answer in zip(batch, answers):
        if "error" in answer:
            report.refused[_reason(answer["error"])].append(line_no)
        elif answer.get("inserted"):
            report.stored += 1
        else:
            report.already_there += 1


def import_events(database_url: str, project: str, lines: Iterable[str],
                  progress: Callable[[ImportReport, int], None] | None = None) -> ImportReport:
    """Imports every line; progress(report, bytes read) after each batch. Raises psycopg.Error when a
    whole call is refused (an unknown project, no right to ingest): nothing of that batch was stored."""
    report, started, batch, size, read = ImportReport(), time.monotonic(), [], 0, 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        for report.lines, line in enumerate(lines, start=1):
            read += len(line.encode("utf-8")) if isinstance(line, str) else len(line)
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                report.refused[NOT_JSON].append(report.lines)
                continue
            batch.append((report.lines, event))
            size += len(line)
            if len(batch) >= BATCH_EVENTS or size >= BATCH_BYTES:
                _send(conn, project, batch, report)
                batch, size = [], 0
                report.seconds = time.monotonic() - started
                if progress:
                    progress(report, read)
        if batch:
            _send(conn, project, batch, report)
    report.seconds = time.monotonic() - started
    if progress:
        progress(report, read)
    return report


def summary(report: ImportReport) -> list[str]:
    lines = [f"{report.lines:,} line(s): {report.stored:,} event(s) stored, {report.already_there:,} already there, "
             f"{report.refused_count:,} refused; {report.events_per_second:,.0f} events/s"]
    for reason, numbers in sorted(report.refused.items(), key=lambda item: (-len(item[1]), item[0])):
        shown = ", ".join(map(str, numbers[:LINES_SHOWN])) + (", …" if len(numbers) > LINES_SHOWN else "")
        lines.append(f"  refused {len(numbers):,} x {reason}: line(s) {shown}")
    return lines
