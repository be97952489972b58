"""runhub's fixed lists and bounds, as sql/00_constants.sql (runhub._constants()) says them.

Read from the deployable SQL file itself, so the renderer and the CLI need no database and cannot
disagree with what the server enforces (tests/db/test_constants.py holds the two equal)."""
from __future__ import annotations

import json
import re

from .assets import DEFAULT_SOURCE

_BLOCK = re.compile(r"\$constants\$\s*(\{.*?\})\s*\$constants\$", re.S)


def _load() -> dict:
    text = (DEFAULT_SOURCE / "sql" / "00_constants.sql").read_text(encoding="utf-8")
    return json.loads(_BLOCK.search(text).group(1))


CONSTANTS = _load()
LOCALES: tuple[str, ...] = tuple(CONSTANTS["locales"])
DEFAULT_LOCALE: str = CONSTANTS["defaultLocale"]
TEMPLATES: tuple[str, ...] = tuple(CONSTANTS["templates"])
ACTION_IDS: tuple[str, ...] = tuple(CONSTANTS["actionIds"])
MIN_LEASE_SECONDS: int = CONSTANTS["minLeaseSeconds"]
MAX_MESSAGE_LEASE_SECONDS: int = CONSTANTS["maxMessageLeaseSeconds"]
MAX_CLAIM_BATCH: int = CONSTANTS["maxClaimBatch"]
MAX_INGEST_BATCH: int = CONSTANTS["maxIngestBatch"]
MAX_INGEST_BATCH_BYTES: int = CONSTANTS["maxIngestBatchBytes"]
