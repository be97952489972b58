"""Structured logs: one JSON object per line on stderr, carrying the current run or deploy id."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timezone

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("runhub_log_context", default={})
# Fields of every line this process writes, whatever thread writes it (setup's `fields`: a sender
# process's index under `runhub sender --processes`).
_process_fields: dict = {}


@contextmanager
def bound(**fields):
    """Add fields (e.g. run_id) to every log line written inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def thread(target, name: str) -> threading.Thread:
    """A daemon thread whose lines carry its starter's bound fields (a sender's worker id)."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target,), name=name, daemon=True)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_process_fields,
            **_context.get(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {**_process_fields, **_context.get(), **getattr(record, "fields", {})}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{record.levelname.lower():5} {record.getMessage()} {extra}".rstrip()


def setup(fmt: str = "json", level: str = "info", **fields) -> None:
    """Log lines on stderr, as JSON or text; `fields` go on every line of this process."""
    _process_fields.clear()
    _process_fields.update(fields)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("runhub")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def get(name: str) -> "FieldLogger":
    return FieldLogger(logging.getLogger(f"runhub.{name}"))


class FieldLogger:
    """logger.info("event_name", key=value, ...) with the fields kept structured."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger

    def _log(self, level: int, event: str, exc_info=None, **fields) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={"fields": fields}, exc_info=exc_info)

    def debug(self, event: str, **fields) -> None:
        self._log(logging.DEBUG, event, **fields)

    def info(self, event: str, **fields) -> None:
        self._log(logging.INFO, event, **fields)

    def warning(self, event: str, **fields) -> None:
        self._log(logging.WARNING, event, **fields)

    def error(self, event: str, exc_info=None, **fields) -> None:
        self._log(logging.ERROR, event, exc_info=exc_info, **fields)
