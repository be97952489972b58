"""E-mail rendering: a template, a locale and variables in, a complete RFC 5322 message out.

Templates (Jinja2) and per-locale message catalogs (JSON, no compile step) live in
runhub_loader/templates/. Everything computed — money, dates, KPI deltas and their colours — is
computed here, so templates only lay out what they are given: the plan's digest shipped red/green
logic inside a template and got it wrong for every sign.

Workflow mail (every template but `digest`) carries RFC 8058 one-click unsubscribe headers and a
visible unsubscribe link. No database is needed: the sender passes what it read from the outbox.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import (format_currency, format_decimal, format_percent, get_currency_precision,
                           get_minus_sign_symbol, get_plus_sign_symbol)
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from . import mime


def _plpython(name: str) -> ModuleType:
    """A module of plpython/, the PL/Python source next to this package (where deploy's
    DEFAULT_SOURCE finds it), imported as `plpython.<name>` as plain pytest does: so the sender
    runs the very code the server runs."""
    if "plpython" not in sys.modules:
        folder = Path(__file__).resolve().parent.parent / "plpython"
        spec = importlib.util.spec_from_file_location("plpython", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["plpython"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"plpython.{name}")


addresses = _plpython("addresses")

TEMPLATES = ("recovery", "promo", "update", "onboarding", "digest")
WORKFLOW_TEMPLATES = frozenset(TEMPLATES) - {"digest"}
LOCALES = ("en", "ar", "fr", "es", "de")
DEFAULT_LOCALE = "en"
RTL_LOCALES = frozenset({"ar"})

GREEN, RED, GREY, AMBER = "#16a34a", "#dc2626", "#6b7280", "#d97706"
_FONTS = {"ltr": "-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif",
          "rtl": "Tahoma,Segoe UI,Arial,sans-serif"}  # Tahoma: the Arabic face every client has


class RenderError(ValueError):
    """The inputs cannot make a valid message (unknown template, missing or malformed variable)."""


# -- locales and catalogs -------------------------------------------------------------------------

def resolve_locale(locale: str | None) -> str:
    """The catalog for a language tag: the tag itself, then its primary subtag, then 'en'."""
    tag = (locale or "").strip().replace("_", "-").lower()
    for candidate in (tag, tag.split("-")[0]):
        if candidate in LOCALES:
            return candidate
    return DEFAULT_LOCALE


@functools.lru_cache(maxsize=256)  # Locale.parse looks for the locale's data file on disk each time
def _babel_locale(tag: str | None, language: str) -> Locale:
    """Numbers and dates follow the full tag when it is in the catalog's language (fr-CA writes
    money unlike fr), but never a language the text is not in (no Japanese dates in English mail)."""
    try:
        parsed = Locale.parse((tag or "").strip().replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return Locale.parse(language)
    return parsed if parsed.language == language else Locale.parse(language)


@functools.cache
def catalog(locale: str) -> Mapping[str, str]:
    """The messages of one locale of LOCALES (`templates/messages.<locale>.json`)."""
    path = resources.files(__package__) / "templates" / f"messages.{locale}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _translator(locale: str) -> Callable[..., str]:
    messages = catalog(locale)

    def t(key: str, **params: Any) -> str:
        # A missing key raises: tests/test_render.py renders every branch in every locale.
        return messages[key].format_map(params)
    return t


# -- values ---------------------------------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls but tab and newline


def clean_text(value: Any) -> str | None:
    """Multi-line user text: newlines normalized, control characters dropped; None when empty."""
    if value is None:
        return None
    text = _CONTROLS.sub("", _LINE_BREAKS.sub("\n", str(value))).strip()
    return text or None


def clean_line(value: Any) -> str | None:
    """One-line user text, safe in a header: every run of white space (newlines too) is one space.
    This is what neutralizes header injection in a subject or a name."""
    text = clean_text(value)
    return (" ".join(text.split()) or None) if text else None


def _decimal(value: Any, name: str) -> Decimal | None:
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


def _minor_units(value: Any, name: str) -> int | None:
    number = _decimal(value, name)
    if number is None:
        return None
    if number != number.to_integral_value() or number < 0:
        raise RenderError(f"{name}: not a whole number of minor units ≥ 0: {value!r}")
    return int(number)


def _currency(value: Any, name: str = "currency") -> str:
    code = str(value or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise RenderError(f"{name}: not an ISO 4217 code: {value!r}")
    return code


def format_money(amount_minor: int, currency: str, locale: Locale | str) -> str:
    """Minor units as a localized amount, with the currency's own decimals (JPY 0, KWD 3)."""
    digits = get_currency_precision(currency)
    return format_currency(Decimal(amount_minor).scaleb(-digits), currency, locale=locale)


def _percent(ratio: Decimal, locale: Locale, places: int = 1) -> str:
    # Rounded to `places` decimals of a percent, with no trailing zeros: 25 %, 12,5 %.
    ratio = round(ratio * 100, places).normalize() / 100
    return format_percent(ratio, locale=locale, decimal_quantization=False)


def _signed(sign: Decimal, magnitude: str, locale: Locale) -> str:
    if sign > 0:
        return get_plus_sign_symbol(locale) + magnitude
    if sign < 0:
        return get_minus_sign_symbol(locale) + magnitude
    return magnitude


def delta_color(delta: Decimal | float | int) -> str:
    """Green up, red down, grey flat; every KPI here is better higher."""
    return GREEN if delta > 0 else RED if delta < 0 else GREY


def _url(value: Any, name: str) -> str | None:
    """An http(s) link for the body; anything else (javascript:, relative) is refused."""
    text = clean_line(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or " " in text:
        raise RenderError(f"{name}: not an http(s) URL: {value!r}")
    return text


def _header_uri(value: str, scheme: str, name: str) -> str:
    """A URI for List-Unsubscribe: it goes between angle brackets in a header, so ASCII only."""
    text = value.strip()
    parts = urlsplit(text)
    if (not text.isascii() or not text.isprintable() or any(c in text for c in ' <>"')
            or parts.scheme.lower() != scheme or not (parts.netloc or (scheme == "mailto" and parts.path))):
        raise RenderError(f"{name}: not a {scheme} URI usable in List-Unsubscribe: {value!r}")
    return text


def _require(variables: Mapping[str, Any], key: str, template: str, clean=clean_line) -> Any:
    value = clean(variables.get(key))
    if value is None:
        raise RenderError(f"{template}: variable {key!r} is required")
    return value


# -- content --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    locale: str  # the catalog used, after fallback


@dataclass(frozen=True)
class KpiRow:
    label: str
    value: str
    delta: str
    color: str


def paragraphs(text: str | None) -> Markup:
    """Plain text as HTML: blank lines part paragraphs, single newlines become <br>. Escaped
    first, so shop-owner content can never be markup."""
    if not text:
        return Markup("")
    blocks = [block for block in re.split(r"\n[ \t]*\n", text) if block.strip()]
    return Markup("\n").join(
        Markup('<p style="margin:0 0 16px;">{}</p>').format(
            Markup("<br>\n").join(escape(line) for line in block.strip("\n").split("\n")))
        for block in blocks)


_env = Environment(
    loader=PackageLoader(__package__, "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
    undefined=StrictUndefined,  # a typo in a template fails loudly instead of rendering nothing
    finalize=lambda value: "" if value is None else value,  # an absent optional is never "None"
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # templates ship with the package: no stat() of each one on every render
)
_env.filters["paragraphs"] = paragraphs


def _kpi_rows(kpis: Mapping[str, Any], currency: str, loc: Locale, t: Callable[..., str]) -> list[KpiRow]:
    formats: dict[str, Callable[[Decimal], str]] = {
        "revenue": lambda v: format_money(int(v), currency, loc),  # minor units
        "leads": lambda v: format_decimal(v, locale=loc),
        "conversion": lambda v: _percent(v, loc, places=2),  # a ratio: 0.034 is 3.4 %
    }
    rows = []
    for metric, fmt in formats.items():
        kpi = kpis.get(metric)
        if not isinstance(kpi, Mapping):
            continue
        name = f"kpis.{metric}"
        value = _decimal(kpi.get("value"), f"{name}.value") or Decimal(0)
        delta = _decimal(kpi.get("delta"), f"{name}.delta")
        percent = _decimal(kpi.get("deltaPercent"), f"{name}.deltaPercent")
        sign = delta if delta is not None else percent if percent is not None else Decimal(0)
        if percent is not None:  # relative change when known; absolute when there was nothing before
            delta_text = _signed(sign, _percent(abs(percent) / 100, loc), loc)
        elif delta is not None:
            delta_text = _signed(sign, fmt(abs(delta)), loc)
        else:
            delta_text = ""
        rows.append(KpiRow(t(f"digest.kpi.{metric}"), fmt(value), delta_text, delta_color(sign)))
    return rows


def _headline(headline: Mapping[str, Any], loc: Locale, t: Callable[..., str]) -> str:
    """Written in the mail's language from metric and delta (a percent) when it has them; the
    generator's own `text` (likely English) is the fallback."""
    metric = headline.get("metric")
    delta = _decimal(headline.get("delta"), "headline.delta")
    if metric in ("revenue", "leads", "conversion") and delta is not None:
        if delta == 0:
            return t("digest.headline.noChange")
        direction = "Up" if delta > 0 else "Down"
        return t(f"digest.headline.{metric}{direction}", percent=_percent(abs(delta) / 100, loc))
    return clean_line(headline.get("text")) or t("digest.headline.noChange")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _proof(last: Mapping[str, Any], currency: str, loc: Locale, t: Callable[..., str]) -> dict | None:
    """The last outcome, with its revenue formatted (the plan once showed "USD 129900")."""
    label = clean_line(last.get("actionLabel"))
    if label is None:
        return None
    outcome = _mapping(last.get("outcome"))
    cents = _minor_units(outcome.get("revenueCents"), "lastOutcome.outcome.revenueCents")
    conversions = _decimal(outcome.get("conversions"), "lastOutcome.outcome.conversions")
    if cents is not None:
        code = _currency(outcome.get("currency") or currency, "lastOutcome.outcome.currency")
        amount = format_money(cents, code, loc)
        text = t("digest.proof.recovered", action=label, amount=amount)
    else:
        text = label
    return {"text": text, "when": clean_line(last.get("when")),
            "conversions": format_decimal(conversions, locale=loc) if conversions else None}


def _digest_context(v: Mapping[str, Any], loc: Locale, t: Callable[..., str]) -> tuple[str, dict]:
    project = _require(v, "projectName", "digest")
    raw_date = v.get("date")
    try:
        day = raw_date if isinstance(raw_date, date) else date.fromisoformat(str(raw_date).strip()[:10])
    except ValueError:
        raise RenderError(f"digest: variable 'date' must be YYYY-MM-DD, got {raw_date!r}") from None
    run_hub_url = _url(_require(v, "runHubUrl", "digest"), "runHubUrl")
    # The plan's DigestContent has no currency; revenue is in minor units of `currency` (default USD).
    currency = _currency(v.get("currency") or "USD")

    anomaly, action = _mapping(v.get("anomaly")), _mapping(v.get("recommendedAction"))
    anomaly_message, action_label = clean_line(anomaly.get("message")), clean_line(action.get("label"))
    context = {
        "project_name": project,
        "date_text": format_date(day, "full", locale=loc),
        "headline": _headline(_mapping(v.get("headline")), loc, t),
        "kpis": _kpi_rows(_mapping(v.get("kpis")), currency, loc, t),
        "anomaly": anomaly_message and {
            "message": anomaly_message, "color": RED if anomaly.get("severity") == "high" else AMBER},
        "action": action_label and {"label": action_label, "reason": clean_line(action.get("reason"))},
        "proof": _proof(_mapping(v.get("lastOutcome")), currency, loc, t),
        "run_hub_url": run_hub_url,
    }
    return t("digest.subject", projectName=project, date=format_date(day, "long", locale=loc)), context


def _recovery_values(v: Mapping[str, Any], loc: Locale) -> dict[str, str | None]:
    """A recovery mail's own values: its cart's link, reference and amount, checked and formatted."""
    cents = _minor_units(v.get("amountCents"), "amountCents")
    return {
        "link": _url(_require(v, "link", "recovery"), "link"),
        "cart_id": clean_line(v.get("cartId")),
        "amount": format_money(cents, _currency(v.get("currency")), loc) if cents is not None else None,
    }


def _workflow_context(template: str, v: Mapping[str, Any], loc: Locale, t: Callable[..., str],
                      recovery: Mapping[str, str | None] | None = None) -> tuple[str, dict]:
    """`recovery`: the recovery values to use instead of v's (slots: see render_content)."""
    project = _require(v, "projectName", template)
    name = clean_line(v.get("customerName"))
    context: dict[str, Any] = {
        "project_name": project,
        "greeting": t("greeting.named", name=name) if name else t("greeting.generic"),
        # promo and update mail link to the shop with their run id (link), for attribution
        "shop_url": _url(v.get("link"), "link") if template in ("promo", "update") and v.get("link")
                    else _url(v.get("shopUrl"), "shopUrl"),
    }
    if template == "recovery":
        context.update(recovery if recovery is not None else _recovery_values(v, loc))
        return t("recovery.subject", projectName=project), context
    if template in ("promo", "update"):
        context.update(kicker=t(f"{template}.kicker", projectName=project),
                       content=_require(v, "content", template, clean=clean_text))
        return _require(v, "subject", template), context
    return t("onboarding.subject", projectName=project), context


# The recipients of a run differ only by a few values that templates interpolate as they are: the
# customer's name and unsubscribe link, and for recovery the cart's link, reference and amount. So
# a workflow mail's content is rendered once per run, locale and "which of these are present",
# with slots, and each message gets its own values put in (escaped for HTML), validated and
# formatted as a full rendering does. tests/test_render.py checks that the two are the same, for
# any values.
_RECIPIENT_KEYS = {"promo": ("customerName",), "update": ("customerName",), "onboarding": ("customerName",),
                   "recovery": ("customerName", "link", "cartId", "amountCents", "currency")}
_SLOT_KEY = secrets.token_hex(8)  # per process, like the cache: no content can hold a slot by chance
_NAME_SLOT = f"Runhub{_SLOT_KEY}Name"
_UNSUBSCRIBE_SLOT = f"https://unsubscribe.runhub.invalid/{_SLOT_KEY}"
_RECOVERY_SLOTS = {"link": f"https://link.runhub.invalid/{_SLOT_KEY}",  # a link slot must pass as a URL
                   "cart_id": f"Runhub{_SLOT_KEY}Cart", "amount": f"Runhub{_SLOT_KEY}Amount"}
_SLOTS = re.compile("|".join(re.escape(slot) for slot in (_UNSUBSCRIBE_SLOT, _NAME_SLOT, *_RECOVERY_SLOTS.values())))


def render_content(template: str, locale: str | None, variables: Mapping[str, Any], *,
                   unsubscribe_url: str | None = None) -> Rendered:
    """Subject, text and HTML of one e-mail (no headers: see render_message)."""
    keys = _RECIPIENT_KEYS.get(template)
    if keys is None or not unsubscribe_url:
        return _render_content(template, locale, variables, unsubscribe_url=unsubscribe_url)
    name = clean_line(variables.get("customerName"))
    own: dict[str, str | None] = {}
    invalid = None
    if template == "recovery":
        try:
            own = _recovery_values(variables, _babel_locale(locale, resolve_locale(locale)))
        except RenderError as exc:  # raised after the shared values are checked, as a full rendering does
            invalid = exc
    shared = json.dumps({k: v for k, v in variables.items() if k not in keys}, sort_keys=True, default=str)
    slotted = _slotted_content(template, locale, shared, name is not None,
                               tuple(key for key, value in own.items() if value is not None))
    if invalid is not None:
        raise invalid
    values = {_UNSUBSCRIBE_SLOT: unsubscribe_url, _NAME_SLOT: name,
              **{_RECOVERY_SLOTS[key]: value for key, value in own.items()}}
    html_values = {slot: str(escape(value)) for slot, value in values.items() if value is not None}
    return Rendered(_fill(slotted.subject, values), _fill(slotted.text, values),
                    _fill(slotted.html, html_values), slotted.locale)


@functools.lru_cache(maxsize=512)
def _slotted_content(template: str, locale: str | None, shared_json: str, named: bool,
                     present: tuple[str, ...]) -> Rendered:
    """The content with slots for the recipient's values (`present`: the recovery values it has)."""
    variables = json.loads(shared_json)
    if named:
        variables["customerName"] = _NAME_SLOT
    recovery = None
    if template == "recovery":
        recovery = {key: slot if key in present else None for key, slot in _RECOVERY_SLOTS.items()}
    return _render_content(template, locale, variables, unsubscribe_url=_UNSUBSCRIBE_SLOT, recovery=recovery)


def _fill(text: str, values: Mapping[str, str | None]) -> str:
    return _SLOTS.sub(lambda m: values[m.group(0)], text)  # one pass: a value is never read as a slot


def _render_content(template: str, locale: str | None, variables: Mapping[str, Any], *,
                    unsubscribe_url: str | None = None,
                    recovery: Mapping[str, str | None] | None = None) -> Rendered:
    if template not in TEMPLATES:
        raise RenderError(f"unknown template {template!r}; one of {', '.join(TEMPLATES)}")
    language = resolve_locale(locale)
    loc = _babel_locale(locale, language)
    t = _translator(language)
    if template == "digest":
        subject, context = _digest_context(variables, loc, t)
    else:
        subject, context = _workflow_context(template, variables, loc, t, recovery)
    direction = "rtl" if language in RTL_LOCALES else "ltr"
    context.update(
        t=t, subject=subject, lang=language, dir=direction, font=_FONTS[direction],
        align="right" if direction == "rtl" else "left", end="left" if direction == "rtl" else "right",
        unsubscribe_url=unsubscribe_url,
    )
    name = "promo" if template == "update" else template  # one layout, different kicker
    html = _env.get_template(f"{name}.html").render(context)
    text = _env.get_template(f"{name}.txt").render(context)
    return Rendered(subject, _tidy(text), _tidy(html), language)


def _tidy(text: str) -> str:
    # Template whitespace control leaves some blank-line runs; collapse them, strip line ends
    # (but not the signature separator's: "-- " is what clients look for).
    lines = (line if line == "-- " else line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


# -- the message ----------------------------------------------------------------------------------

# Parsing (and so checking) a From or To address, and reading a rendered message back, use the
# stdlib's SMTP policy (CRLF) with 7-bit transfer encodings: a relay that downgrades 8bit bodies
# would break the DKIM signature; a message read back is written out again as it came (no
# refolding: the stock folder would turn a long List-Unsubscribe URI into encoded words, which
# no client decodes there). Writing is mime.py's.
POLICY = SMTP.clone(cte_type="7bit", refold_source="none")

_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")


def _address(value: str | Address, name: str) -> tuple[str, str]:
    """(display name, ASCII addr-spec) of one address, or RenderError."""
    try:
        if isinstance(value, str):
            if _LINE_BREAKS.search(value):
                raise ValueError("contains a line break")
            parsed = POLICY.header_factory("from", value)
            if parsed.defects or len(parsed.addresses) != 1:
                raise ValueError("not one address")
            value = parsed.addresses[0]
        if not value.addr_spec.isascii() or not value.username or not value.domain:
            raise ValueError("not an ASCII address")
        return clean_line(value.display_name) or "", value.addr_spec
    except (ValueError, IndexError) as exc:
        raise RenderError(f"{name}: {exc}: {value!r}") from None


@functools.lru_cache(maxsize=64)
def _from_header(from_addr: str | Address) -> str:
    return f"From: {mime.address(*_address(from_addr, 'from_addr'))}\r\n"


@functools.lru_cache(maxsize=4096)
def envelope_address(to_email: str) -> str:
    """The address as it goes on the wire (RCPT TO and To): lower-case ASCII, an internationalized
    domain as A-labels. RenderError unless it is a mailbox by the grammar ingest enforces
    (plpython/addresses.py): what ingest accepts renders, what it refuses does not."""
    wire = addresses.ascii_mailbox(to_email)
    if wire is None:
        raise RenderError(f"to_email: not an address runhub delivers to: {to_email!r}")
    return wire


def _to_header(to_email: str, to_name: str | None) -> str:
    return f"To: {mime.address(clean_line(to_name) or '', envelope_address(to_email))}\r\n"


def render_bytes(template: str, locale: str | None, variables: Mapping[str, Any], *,
                 message_id: str, to_email: str, to_name: str | None, from_addr: str | Address,
                 unsubscribe_url: str | None, unsubscribe_mailto: str | None = None,
                 sent_at: datetime | None = None) -> bytes:
    """A complete message as wire bytes: headers, and a multipart/alternative of text/plain and
    text/html.

    `message_id` is used exactly as given (the outbox fixed it when the run executed). Workflow
    templates need an https `unsubscribe_url` (RFC 8058 one-click, also shown in both parts);
    `digest` gets no List-Unsubscribe and ignores it. Raises RenderError on bad input.
    """
    workflow = template in WORKFLOW_TEMPLATES
    if not (message_id.isascii() and message_id.isprintable() and len(message_id) <= 500
            and _MESSAGE_ID.fullmatch(message_id)):
        raise RenderError(f"message_id: not <local@domain>: {message_id!r}")
    uris: list[str] = []
    if workflow:
        if not unsubscribe_url:
            raise RenderError(f"{template}: workflow mail needs an unsubscribe_url (RFC 8058)")
        uris.append(_header_uri(unsubscribe_url, "https", "unsubscribe_url"))
        if unsubscribe_mailto:
            uris.append(_header_uri(unsubscribe_mailto, "mailto", "unsubscribe_mailto"))
    headers = [_from_header(from_addr), _to_header(to_email, to_name)]
    rendered = render_content(template, locale, variables, unsubscribe_url=uris[0] if uris else None)
    headers += [
        mime.header("Subject", rendered.subject),
        f"Date: {format_datetime(sent_at or datetime.now(timezone.utc))}\r\n",
        f"Message-ID: {message_id}\r\n",
    ]
    if workflow:
        # One <URI> a line: the stock folders would turn a long URI into encoded words, which no
        # client decodes in List-Unsubscribe.
        headers.append("List-Unsubscribe: " + ",\r\n ".join(f"<{uri}>" for uri in uris) + "\r\n")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    return mime.alternative(headers, rendered.text, rendered.html, rendered.locale)


def render_message(template: str, locale: str | None, variables: Mapping[str, Any], **kwargs) -> EmailMessage:
    """render_bytes, parsed back into an EmailMessage (for previews and inspection)."""
    return message_from_bytes(render_bytes(template, locale, variables, **kwargs), policy=POLICY)


# -- previews -------------------------------------------------------------------------------------

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
    "digest": {
        "projectName": "Sunrise Bakery", "date": "2026-01-27", "timezone": "Europe/Paris",
        "currency": "EUR", "runHubUrl": "https://app.runhub.example/projects/sunrise/run",
        "headline": {"text": "Revenue up 25% yesterday", "delta": 25, "metric": "revenue"},
        "kpis": {"revenue": {"value": 150000, "delta": 30000, "deltaPercent": 25},
                 "leads": {"value": 3, "delta": -2, "deltaPercent": -40},
                 "conversion": {"value": 0.034, "delta": 0, "deltaPercent": 0}},
        "anomaly": {"type": "leads_drop", "message": "Leads dropped 40% vs last week", "severity": "high"},
        "recommendedAction": {"id": "send_promo", "label": "Send a promo",
                              "reason": "3 new leads awaiting response"},
        "lastOutcome": {"actionLabel": "Cart recovery", "when": "2 days ago",
                        "outcome": {"conversions": 2, "revenueCents": 17000, "currency": "EUR"}},
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
        unsubscribe_url=unsubscribe_url, unsubscribe_mailto=None)
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing folder keeps its mode
    eml_path, html_path = out / f"{template}.{tag}.eml", out / f"{template}.{tag}.html"
    html = message_from_bytes(wire, policy=POLICY).get_body(("html",)).get_content()
    _write_private(eml_path, wire)
    _write_private(html_path, html.encode("utf-8"))
    return eml_path, html_path


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (a preview may hold a real customer's name and link),
    also when it existed before; never through a symlink someone planted in a shared folder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)
        file.write(data)
