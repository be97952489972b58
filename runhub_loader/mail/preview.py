"""Previews for a person: sample variables per template, messages and digests as private files."""
from __future__ import annotations

import os
import re
from email import message_from_bytes
from pathlib import Path
from typing import Any, Mapping

from datetime import datetime

from .locales import DEFAULT_LOCALE
from .render import POLICY, render_bytes, render_content


_SHOP = "https://sunrise-bakery.example"
SAMPLES: dict[str, dict[str, Any]] = {
    "recovery": {"projectName": "Sunrise Bakery", "customerName": "Ann", "cartId": "cart-123",
                 "link": f"{_SHOP}/checkout?wid=8d2f0c1e-5b7a-4c3e-9f1d-2a6b3c4d5e6f&cart=cart-123",
                 "amountCents": 4200, "currency": "EUR", "shopUrl": _SHOP},
    "promo": {"projectName": "Sunrise Bakery", "customerName": "Ann", "shopUrl": _SHOP,
              "subject": "20% off all pastries this weekend",
              "content": "Our weekend sale starts Saturday at 7:00.\n\nUse the code SUNRISE20 at checkout.\n"
                         "It is valid until Sunday evening."},
    "update": {"projectName": "Sunrise Bakery", "customerName": "Ann", "shopUrl": _SHOP,
               "subject": "New opening hours",
               "content": "From 1 March we open at 7:00 every day.\n\nSee you soon!"},
    "onboarding": {"projectName": "Sunrise Bakery", "customerName": "Ann", "shopUrl": _SHOP},
    # The DigestContent runhub.generate_digest returns (keys and params, no sentences), plus the
    # dashboard link the sender adds (runHubUrl).
    "digest": {
        "projectId": "5f0c8e7a-3b1d-4c2e-9a6f-1d2e3f4a5b6c", "projectName": "Sunrise Bakery",
        "date": "2026-01-27", "timezone": "Europe/Paris", "currency": "EUR", "locale": "en",
        "industryTag": "retail", "kpiOrder": ["revenue", "conversion", "leads"],
        "kpis": {"revenue": {"value": 150000, "previous": 120000, "delta": 30000, "deltaPercent": 25.0,
                             "otherCurrencyPayments": 1},
                 "leads": {"value": 3, "previous": 5, "delta": -2, "deltaPercent": -40.0},
                 "conversion": {"value": 0.034, "previous": 0.034, "delta": 0, "deltaPercent": 0}},
        "headline": {"metric": "revenue", "delta": 30000, "deltaPercent": 25.0,
                     "key": "digest.headline.revenueUp", "params": {"percent": 25.0}},
        "anomaly": {"type": "leads_drop", "key": "digest.anomaly.leadsDrop",
                    "params": {"percent": 62.5, "weekday": 2}, "severity": "medium"},
        "recommendedAction": {"id": "recover_abandoned", "key": "digest.recommend.recoverAbandoned",
                              "params": {"count": 3}},
        "lastOutcome": {"runId": "8d2f0c1e-5b7a-4c3e-9f1d-2a6b3c4d5e6f", "actionId": "recover_abandoned",
                        "actionLabel": "Recover abandoned checkouts", "completedAt": "2026-01-25T10:00:00.000000Z",
                        "outcome": {"model": "last_touch_48h", "windowHours": 48, "conversions": 2,
                                    "revenueCents": 17000, "currency": "EUR", "confidence": "medium",
                                    "matchedBy": "cart_match",
                                    "byMethod": {"cart_match": {"conversions": 2, "revenueCents": 17000}},
                                    "windowEndsAt": "2026-01-27T10:00:00.000000Z", "final": True}},
        "runHubUrl": "https://app.runhub.example/projects/5f0c8e7a-3b1d-4c2e-9a6f-1d2e3f4a5b6c/run",
    },
}


def write_preview(template: str, locale: str | None, variables: Mapping[str, Any], out_dir: Path | str,
                  *, to_email: str = "customer@example.com",
                  from_addr: str = "Run Hub <noreply@runhub.example>",
                  unsubscribe_url: str = "https://runhub.example/unsubscribe/preview") -> tuple[Path, Path]:
    """Render to `<template>.<locale>.eml` and `.html` in out_dir, for a person to look at."""
    tag = re.sub(r"[^A-Za-z0-9-]", "-", locale or DEFAULT_LOCALE)
    wire = render_bytes(
        template, locale, variables, message_id=f"<preview.{template}.{tag}@runhub.example>",
        to_email=to_email, to_name=variables.get("customerName"), from_addr=from_addr,
        unsubscribe_url=unsubscribe_url)
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing folder keeps its mode
    eml_path, html_path = out / f"{template}.{tag}.eml", out / f"{template}.{tag}.html"
    html = message_from_bytes(wire, policy=POLICY).get_body(("html",)).get_content()
    _write_private(eml_path, wire)
    _write_private(html_path, html.encode("utf-8"))
    return eml_path, html_path


def write_digest_preview(content: Mapping[str, Any], locale: str | None, out_dir: Path | str, *,
                         now: datetime | None = None) -> tuple[Path, Path]:
    """A DigestContent rendered to `digest.<project>.<day>.<locale>.html` and `.txt` in out_dir
    (private files, as write_preview's); the .txt starts with the subject."""
    rendered = render_content("digest", locale, content, now=now)
    names = [re.sub(r"[^A-Za-z0-9-]", "-", str(part))
             for part in (content.get("projectId") or "project", str(content.get("date") or "day")[:10],
                          locale or DEFAULT_LOCALE)]
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing folder keeps its mode
    stem = out / f"digest.{'.'.join(names)}"
    html_path, text_path = stem.with_name(stem.name + ".html"), stem.with_name(stem.name + ".txt")
    _write_private(html_path, rendered.html.encode("utf-8"))
    _write_private(text_path, f"{rendered.subject}\n\n{rendered.text}".encode("utf-8"))
    return html_path, text_path


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (a preview may hold a real customer's name and link),
    also when it existed before; never through a symlink someone planted in a shared folder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)
        file.write(data)
