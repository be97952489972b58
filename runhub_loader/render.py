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
from datetime import date, datetime, timedelta, timezone
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
from babel.dates import format_date, format_timedelta, get_day_names
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


class _Messages:
    """t(key, **params): a catalog message with its params filled in. A missing key raises:
    tests/test_render.py and tests/test_digest_render.py render every branch in every locale.

    t.plural(key, n, **params): the form of `key` for the number n by the language's CLDR plural
    rules (`<key>.one`, `<key>.other`, and for Arabic also `.zero`, `.two`, `.few`, `.many`)."""

    def __init__(self, locale: str):
        self.messages = catalog(locale)
        self.plural_form = Locale.parse(locale).plural_form

    def __call__(self, key: str, **params: Any) -> str:
        return self.messages[key].format_map(params)

    def plural(self, key: str, n: int | Decimal, /, **params: Any) -> str:
        return self.messages[f"{key}.{self.plural_form(n)}"].format_map(params)


@functools.cache
def _translator(locale: str) -> _Messages:
    return _Messages(locale)


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


# -- the digest ----------------------------------------------------------------------------------
# runhub.generate_digest hands over keys and params, never sentences: every sentence, relative time
# and number is written here in the digest's locale. Generator-provided English (`text`,
# `message`, `label`, `reason`, `when`, `actionLabel`) is ignored; only keys, params and the
# project's own name reach the mail. A key the catalogs do not know is refused (RenderError), so
# a mismatch between generator and renderer fails loudly instead of printing something else.

METRICS = ("revenue", "leads", "conversion")
HEADLINE_KEYS = frozenset({f"digest.headline.{m}{d}" for m in METRICS for d in ("Up", "Down", "FromZero")}
                          | {"digest.headline.noChange"})
DROP_ANOMALY_KEYS = frozenset(f"digest.anomaly.{m}Drop" for m in METRICS)
ANOMALY_KEYS = DROP_ANOMALY_KEYS | {"digest.anomaly.paymentFailures"}
ACTION_IDS = ("recover_abandoned", "send_promo", "onboard_users")  # label: digest.actionLabel.<id>
RECOMMEND_KEYS = frozenset({"digest.recommend.recoverAbandoned", "digest.recommend.sendPromo",
                            "digest.recommend.onboardUsers"})
CONFIDENCE_NOTES = {"medium": "digest.proof.confidence.medium", "low": "digest.proof.confidence.low"}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(value: Any, name: str) -> int:
    number = _decimal(value, name)
    if number is None or number != number.to_integral_value() or number < 0:
        raise RenderError(f"digest: {name} must be a whole number ≥ 0, got {value!r}")
    return int(number)


def _share(value: Any, name: str) -> Decimal:
    """A percent param (25.0 is 25 %), ≥ 0."""
    number = _decimal(value, name)
    if number is None or number < 0:
        raise RenderError(f"digest: {name} must be a percent ≥ 0, got {value!r}")
    return number


def _key(value: Any, allowed: frozenset[str], name: str) -> str:
    if value not in allowed:
        raise RenderError(f"digest: unknown {name} {value!r}; one of {', '.join(sorted(allowed))}")
    return value


def _timestamp(value: Any, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise RenderError(f"digest: {name} is not an ISO 8601 timestamp: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _metric_formats(currency: str, loc: Locale) -> dict[str, Callable[[Decimal], str]]:
    """How each KPI's value is written: money in minor units, a count, a ratio as a percent."""
    return {
        "revenue": lambda v: format_money(int(v), currency, loc),
        "leads": lambda v: format_decimal(v, locale=loc),
        "conversion": lambda v: _percent(v, loc, places=2),  # a ratio: 0.034 is 3.4 %
    }


def _kpi_rows(kpis: Mapping[str, Any], order: Any, currency: str, loc: Locale,
              t: _Messages) -> tuple[list[KpiRow], str | None]:
    """The KPI rows in the digest's `kpiOrder`, and the note on payments left out of revenue."""
    formats = _metric_formats(currency, loc)
    if order is None:
        order = METRICS
    if (not isinstance(order, (list, tuple)) or sorted(map(str, order)) != sorted(METRICS)
            or len(order) != len(METRICS)):
        raise RenderError(f"digest: kpiOrder must order {', '.join(METRICS)}, got {order!r}")
    rows = []
    for metric in order:
        kpi = kpis.get(metric)
        if not isinstance(kpi, Mapping):
            continue
        fmt, name = formats[metric], f"kpis.{metric}"
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
    other = _mapping(kpis.get("revenue")).get("otherCurrencyPayments")
    count = _count(other, "kpis.revenue.otherCurrencyPayments") if other is not None else 0
    note = t.plural("digest.kpi.otherCurrency", count, count=format_decimal(count, locale=loc)) if count else None
    return rows, note


def _headline(headline: Mapping[str, Any], currency: str, loc: Locale, t: _Messages) -> str:
    key = headline.get("key")
    if key is None and not headline:
        key = "digest.headline.noChange"  # a digest without a headline: nothing moved
    key = _key(key, HEADLINE_KEYS, "headline.key")
    if key == "digest.headline.noChange":
        return t(key)
    if key.endswith("FromZero"):  # up from nothing: there is no percent, say the value itself
        metric = key.removeprefix("digest.headline.").removesuffix("FromZero")
        value = _decimal(_mapping(headline.get("params")).get("value"), "headline.params.value")
        if value is None or value < 0:
            raise RenderError(f"digest: headline.params.value must be a number ≥ 0, got {value!r}")
        return t(key, value=_metric_formats(currency, loc)[metric](value))
    percent = _share(_mapping(headline.get("params")).get("percent"), "headline.params.percent")
    return t(key, percent=_percent(percent / 100, loc))


def _anomaly(anomaly: Mapping[str, Any], loc: Locale, t: _Messages) -> dict | None:
    if not anomaly:
        return None
    key = _key(anomaly.get("key"), ANOMALY_KEYS, "anomaly.key")
    params = _mapping(anomaly.get("params"))
    percent = _percent(_share(params.get("percent"), "anomaly.params.percent") / 100, loc)
    if key in DROP_ANOMALY_KEYS:
        weekday = params.get("weekday")
        if isinstance(weekday, bool) or weekday not in range(1, 8):
            raise RenderError(f"digest: anomaly.params.weekday must be an ISO weekday 1..7, got {weekday!r}")
        text = t(key, percent=percent, weekday=get_day_names("wide", locale=loc)[weekday - 1])
    else:
        failed = _count(params.get("failed"), "anomaly.params.failed")
        attempts = _count(params.get("attempts"), "anomaly.params.attempts")
        text = t.plural(key, failed, percent=percent, failed=format_decimal(failed, locale=loc),
                        attempts=format_decimal(attempts, locale=loc))
    return {"text": text, "color": RED if anomaly.get("severity") == "high" else AMBER}


def _action_label(action_id: Any, name: str, t: _Messages) -> str:
    if action_id not in ACTION_IDS:
        raise RenderError(f"digest: unknown {name} {action_id!r}; one of {', '.join(ACTION_IDS)}")
    return t(f"digest.actionLabel.{action_id}")


def _action(action: Mapping[str, Any], loc: Locale, t: _Messages) -> dict | None:
    if not action:
        return None
    label = _action_label(action.get("id"), "recommendedAction.id", t)
    key = _key(action.get("key"), RECOMMEND_KEYS, "recommendedAction.key")
    count = _count(_mapping(action.get("params")).get("count"), "recommendedAction.params.count")
    return {"label": label, "reason": t.plural(key, count, count=format_decimal(count, locale=loc))}


def _proof(last: Mapping[str, Any], currency: str, loc: Locale, t: _Messages, now: datetime) -> dict | None:
    """The last outcome: what it brought in, when, and how sure that figure is — an estimate or a
    window still open is said so."""
    if not last:
        return None
    label = _action_label(last.get("actionId"), "lastOutcome.actionId", t)
    outcome = _mapping(last.get("outcome"))
    conversions = _count(outcome.get("conversions") or 0, "lastOutcome.outcome.conversions")
    final = outcome.get("final") is True  # not said to be final: it may still change
    if conversions:
        cents = _minor_units(outcome.get("revenueCents"), "lastOutcome.outcome.revenueCents") or 0
        code = _currency(outcome.get("currency") or currency, "lastOutcome.outcome.currency")
        text = t("digest.proof.recovered", action=label, amount=format_money(cents, code, loc))
    elif outcome:
        text = t("digest.proof.noConversions" if final else "digest.proof.noConversionsYet", action=label)
    else:
        text = label
    completed = _timestamp(last.get("completedAt"), "lastOutcome.completedAt")
    if completed is not None:  # "il y a 2 jours"; a completion after the send (clock skew) is "1 minute ago"
        ago = min(completed - now, -timedelta(minutes=1))
        text = t("digest.proof.when", text=text,
                 when=format_timedelta(ago, granularity="minute", add_direction=True, locale=loc))
    notes = []
    if outcome and not final:
        notes.append(t("digest.proof.provisional"))
    if conversions and outcome.get("confidence") in CONFIDENCE_NOTES:
        notes.append(t(CONFIDENCE_NOTES[outcome["confidence"]]))
    return {"prefix": t("digest.proof.prefix" if conversions else "digest.proof.prefixNoResult"), "text": text,
            "conversions": format_decimal(conversions, locale=loc) if conversions else None, "notes": notes}


def _digest_context(v: Mapping[str, Any], loc: Locale, t: _Messages, now: datetime) -> tuple[str, dict]:
    project = _require(v, "projectName", "digest")
    raw_date = v.get("date")
    try:
        day = raw_date if isinstance(raw_date, date) else date.fromisoformat(str(raw_date).strip()[:10])
    except ValueError:
        raise RenderError(f"digest: variable 'date' must be YYYY-MM-DD, got {raw_date!r}") from None
    run_hub_url = _url(_require(v, "runHubUrl", "digest"), "runHubUrl")
    currency = _currency(v.get("currency") or "USD")  # revenue is in minor units of it
    kpis, other_currency = _kpi_rows(_mapping(v.get("kpis")), v.get("kpiOrder"), currency, loc, t)
    context = {
        "project_name": project,
        "date_text": format_date(day, "full", locale=loc),
        "headline": _headline(_mapping(v.get("headline")), currency, loc, t),
        "kpis": kpis,
        "kpi_note": other_currency,
        "anomaly": _anomaly(_mapping(v.get("anomaly")), loc, t),
        "action": _action(_mapping(v.get("recommendedAction")), loc, t),
        "proof": _proof(_mapping(v.get("lastOutcome")), currency, loc, t, now),
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
                   unsubscribe_url: str | None = None, now: datetime | None = None) -> Rendered:
    """Subject, text and HTML of one e-mail (no headers: see render_message). `now`: the send
    time, which the digest's relative times are counted from (default: now)."""
    keys = _RECIPIENT_KEYS.get(template)
    if keys is None or not unsubscribe_url:
        return _render_content(template, locale, variables, unsubscribe_url=unsubscribe_url, now=now)
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
                    recovery: Mapping[str, str | None] | None = None, now: datetime | None = None) -> Rendered:
    if template not in TEMPLATES:
        raise RenderError(f"unknown template {template!r}; one of {', '.join(TEMPLATES)}")
    language = resolve_locale(locale)
    loc = _babel_locale(locale, language)
    t = _translator(language)
    if template == "digest":
        now = now or datetime.now(timezone.utc)
        subject, context = _digest_context(variables, loc, t, now if now.tzinfo else now.replace(tzinfo=timezone.utc))
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
    sent_at = sent_at or datetime.now(timezone.utc)
    rendered = render_content(template, locale, variables, unsubscribe_url=uris[0] if uris else None, now=sent_at)
    headers += [
        mime.header("Subject", rendered.subject),
        f"Date: {format_datetime(sent_at)}\r\n",
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
        unsubscribe_url=unsubscribe_url, unsubscribe_mailto=None)
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
