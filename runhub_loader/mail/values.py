"""A message's values checked and cleaned: user text, numbers, currencies, links."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping
from urllib.parse import urlsplit


class RenderError(ValueError):
    """The inputs cannot make a valid message (unknown template, missing or malformed variable)."""



LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls but tab and newline


def clean_text(value: Any) -> str | None:
    """Multi-line user text: newlines normalized, control characters dropped; None when empty."""
    if value is None:
        return None
    text = _CONTROLS.sub("", LINE_BREAKS.sub("\n", str(value))).strip()
    return text or None


def clean_line(value: Any) -> str | None:
    """One-line user text, safe in a header: every run of white space (newlines too) is one space.
    This is what neutralizes header injection in a subject or a name."""
    text = clean_text(value)
    return (" ".join(text.split()) or None) if text else None


def decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RenderError(f"{name}: not a number: {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise RenderError(f"{name}: not a number: {value!r}") from None
    if not number.is_finite():
        raise RenderError(f"{name}: not a finite number: {value!r}")
    return number


def minor_units(value: Any, name: str) -> int | None:
    number = decimal(value, name)
    if number is None:
        return None
    if number != number.to_integral_value() or number < 0:
        raise RenderError(f"{name}: not a whole number of minor units ≥ 0: {value!r}")
    return int(number)


def currency(value: Any, name: str = "currency") -> str:
    code = str(value or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise RenderError(f"{name}: not an ISO 4217 code: {value!r}")
    return code


def url(value: Any, name: str) -> str | None:
    """An http(s) link for the body; anything else (javascript:, relative) is refused."""
    text = clean_line(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or " " in text:
        raise RenderError(f"{name}: not an http(s) URL: {value!r}")
    return text


def header_uri(value: str, name: str) -> str:
    """An https URI for List-Unsubscribe (RFC 8058 one-click): it goes between angle brackets in a
    header, so ASCII only."""
    text = value.strip()
    parts = urlsplit(text)
    if (not text.isascii() or not text.isprintable() or any(c in text for c in ' <>"')
            or parts.scheme.lower() != "https" or not parts.netloc):
        raise RenderError(f"{name}: not an https URI usable in List-Unsubscribe: {value!r}")
    return text


def require(variables: Mapping[str, Any], key: str, template: str, clean=clean_line) -> Any:
    value = clean(variables.get(key))
    if value is None:
        raise RenderError(f"{template}: variable {key!r} is required")
    return value
