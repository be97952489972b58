"""Digest composition: a DigestContent's keys and params as the mail's sentences and figures."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_date, format_timedelta, get_day_names
from babel.numbers import format_decimal

from ..constants import ACTION_IDS  # an action's label: digest.actionLabel.<id>
from . import locales, values
from .locales import Messages, format_money
from .values import RenderError

GREEN, RED, GREY, AMBER = "#16a34a", "#dc2626", "#6b7280", "#d97706"


def delta_color(delta: Decimal | float | int) -> str:
    """Green up, red down, grey flat; every KPI here is better higher."""
    return GREEN if delta > 0 else RED if delta < 0 else GREY


@dataclass(frozen=True)
class KpiRow:
    label: str
    value: str
    delta: str
    color: str


# runhub.generate_digest hands over keys and params, never sentences: every sentence, relative time
# and number is written here in the digest's locale. Generator-provided English (`text`,
# `message`, `label`, `reason`, `when`, `actionLabel`) is ignored; only keys, params and the
# project's own name reach the mail. A key the catalogs do not know is refused (RenderError), so
# a mismatch between generator and renderer fails loudly instead of printing something else.

METRICS = ("revenue", "leads", "conversion")
HEADLINE_KEYS = frozenset({f"digest.headline.{m}{d}" for m in METRICS for d in ("Up", "Down", "FromZero")}
                          | {"digest.headline.noChange"})
NO_CHANGE = "—"  # a change against a day without a value (a conversion rate without checkouts)
DROP_ANOMALY_KEYS = frozenset(f"digest.anomaly.{m}Drop" for m in METRICS)
ANOMALY_KEYS = DROP_ANOMALY_KEYS | {"digest.anomaly.paymentFailures"}
RECOMMEND_KEYS = frozenset({"digest.recommend.recoverAbandoned", "digest.recommend.sendPromo",
                            "digest.recommend.onboardUsers"})
CONFIDENCE_NOTES = {"medium": "digest.proof.confidence.medium", "low": "digest.proof.confidence.low"}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(value: Any, name: str) -> int:
    number = values.decimal(value, name)
    if number is None or number != number.to_integral_value() or number < 0:
        raise RenderError(f"digest: {name} must be a whole number ≥ 0, got {value!r}")
    return int(number)


def _share(value: Any, name: str) -> Decimal:
    """A percent param (25.0 is 25 %), ≥ 0."""
    number = values.decimal(value, name)
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


def _rtl(loc: Locale) -> bool:
    return loc.character_order == "right-to-left"


def _fig(text: str, loc: Locale) -> str:
    """A figure kept whole in right-to-left text (locales.isolated)."""
    return locales.isolated(text, _rtl(loc))


def _metric_formats(currency: str, loc: Locale) -> dict[str, Callable[[Decimal], str]]:
    """How each KPI's value is written: money in minor units, a count, a ratio as a percent."""
    return {
        "revenue": lambda v: format_money(int(v), currency, loc),
        "leads": lambda v: format_decimal(v, locale=loc),
        "conversion": lambda v: locales.percent(v, loc, places=2),  # a ratio: 0.034 is 3.4 %
    }


def _points(points: Decimal, loc: Locale, t: Messages) -> str:
    """A difference of rates in percentage points, to a tenth, signed: "+3.3 pts". Only the signed
    number is isolated in right-to-left text: the unit is a word of the sentence ("نقطة")."""
    number = locales.signed(points, format_decimal(round(abs(points), 1), format="#,##0.#", locale=loc), loc)
    return t("digest.kpi.points", points=_fig(number, loc))


def _change(metric: str, kpi: Mapping[str, Any], fmt, loc: Locale, t: Messages) -> tuple[str, Decimal]:
    """The change column and the sign it colors by: percent for money and counts, points for the
    conversion rate, "new" for a count or amount up from nothing, a dash against a day without a
    value; the sign written by the locale, before the magnitude, the whole kept together."""
    name = f"kpis.{metric}"
    delta = values.decimal(kpi.get("delta"), f"{name}.delta")
    if metric == "conversion":
        points = values.decimal(kpi.get("deltaPoints"), f"{name}.deltaPoints")
        if points is None and delta is not None:  # content from before deltaPoints
            points = delta * 100
        if points is None:
            return NO_CHANGE, Decimal(0)
        return _points(points, loc, t), points
    percent = values.decimal(kpi.get("deltaPercent"), f"{name}.deltaPercent")
    if percent is not None:
        return _fig(locales.signed(percent, locales.percent(abs(percent) / 100, loc), loc), loc), percent
    if delta is None:
        return NO_CHANGE, Decimal(0)
    if delta > 0:  # up from nothing: no percent of nothing
        return t("digest.kpi.new"), delta
    if delta < 0:  # content without its percent (older than the rule that always gives one)
        return _fig(locales.signed(delta, fmt(abs(delta)), loc), loc), delta
    return _fig(locales.percent(Decimal(0), loc), loc), Decimal(0)


def _kpi_rows(kpis: Mapping[str, Any], order: Any, currency: str, loc: Locale,
              t: Messages) -> tuple[list[KpiRow], str | None]:
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
        value = values.decimal(kpi.get("value"), f"{name}.value")
        if value is None and metric == "conversion" and "value" in kpi:  # a day without checkouts
            shown = t("digest.kpi.noCheckouts")
        else:
            shown = _fig(fmt(value or Decimal(0)), loc)
        change, sign = _change(metric, kpi, fmt, loc, t)
        rows.append(KpiRow(t(f"digest.kpi.{metric}"), shown, change, delta_color(sign)))
    other = _mapping(kpis.get("revenue")).get("otherCurrencyPayments")
    count = _count(other, "kpis.revenue.otherCurrencyPayments") if other is not None else 0
    note = t.plural("digest.kpi.otherCurrency", count, count=_fig(format_decimal(count, locale=loc), loc)) if count else None
    return rows, note


def _headline(headline: Mapping[str, Any], currency: str, loc: Locale, t: Messages, today: bool) -> str:
    """The headline, of yesterday (the digest's day) or, for a preview of the day so far, of today."""
    key = headline.get("key")
    if key is None and not headline:
        key = "digest.headline.noChange"  # a digest without a headline: nothing moved
    key = _key(key, HEADLINE_KEYS, "headline.key")
    said = key.replace("digest.headline.", "digest.headline.today.") if today else key
    params = _mapping(headline.get("params"))
    if key == "digest.headline.noChange":
        return t(said)
    if key.endswith("FromZero"):  # up from nothing: there is no percent, say the value itself
        metric = key.removeprefix("digest.headline.").removesuffix("FromZero")
        value = values.decimal(params.get("value"), "headline.params.value")
        if value is None or value < 0:
            raise RenderError(f"digest: headline.params.value must be a number ≥ 0, got {value!r}")
        return t(said, value=_fig(_metric_formats(currency, loc)[metric](value), loc))
    if key.startswith("digest.headline.conversion"):  # a rate moves in points
        points = values.decimal(params.get("points"), "headline.params.points")
        if points is None or points < 0:
            raise RenderError(f"digest: headline.params.points must be a number ≥ 0, got {points!r}")
        return t(said, points=_fig(format_decimal(round(points, 1), format="#,##0.#", locale=loc), loc))
    percent = _share(params.get("percent"), "headline.params.percent")
    return t(said, percent=_fig(locales.percent(percent / 100, loc), loc))


def _is_today(day: date, zone: Any, now: datetime) -> bool:
    """Whether the digest's day is today in the project's time zone (a preview of the day so far)."""
    try:
        tz = ZoneInfo(str(zone)) if zone else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        tz = timezone.utc
    return day >= now.astimezone(tz).date()


def _anomaly(anomaly: Mapping[str, Any], loc: Locale, t: Messages) -> dict | None:
    if not anomaly:
        return None
    key = _key(anomaly.get("key"), ANOMALY_KEYS, "anomaly.key")
    params = _mapping(anomaly.get("params"))
    percent = _fig(locales.percent(_share(params.get("percent"), "anomaly.params.percent") / 100, loc), loc)
    if key in DROP_ANOMALY_KEYS:
        weekday = params.get("weekday")
        if isinstance(weekday, bool) or weekday not in range(1, 8):
            raise RenderError(f"digest: anomaly.params.weekday must be an ISO weekday 1..7, got {weekday!r}")
        text = t(key, percent=percent, weekday=get_day_names("wide", locale=loc)[weekday - 1])
    else:
        failed = _count(params.get("failed"), "anomaly.params.failed")
        attempts = _count(params.get("attempts"), "anomaly.params.attempts")
        text = t.plural(key, failed, percent=percent, failed=_fig(format_decimal(failed, locale=loc), loc),
                        attempts=_fig(format_decimal(attempts, locale=loc), loc))
    return {"text": text, "color": RED if anomaly.get("severity") == "high" else AMBER}


def _action_label(action_id: Any, name: str, t: Messages) -> str:
    if action_id not in ACTION_IDS:
        raise RenderError(f"digest: unknown {name} {action_id!r}; one of {', '.join(ACTION_IDS)}")
    return t(f"digest.actionLabel.{action_id}")


def _action(action: Mapping[str, Any], loc: Locale, t: Messages) -> dict | None:
    if not action:
        return None
    label = _action_label(action.get("id"), "recommendedAction.id", t)
    key = _key(action.get("key"), RECOMMEND_KEYS, "recommendedAction.key")
    count = _count(_mapping(action.get("params")).get("count"), "recommendedAction.params.count")
    return {"label": label, "reason": t.plural(key, count, count=_fig(format_decimal(count, locale=loc), loc))}


def _caused_cents(incremental: Mapping[str, Any]) -> int | None:
    """What the mail itself earned, when a holdout comparison shows it (enough data, significant,
    more than without): its incremental revenue; else None."""
    if incremental.get("enoughData") is not True or incremental.get("significant") is not True:
        return None
    name = "lastOutcome.outcome.incremental.incrementalRevenueCents"
    amount = values.decimal(incremental.get("incrementalRevenueCents"), name)
    if amount is None or amount <= 0:  # significantly less than without the mail: no figure to boast
        return None
    return values.minor_units(amount, name)


def _proof(last: Mapping[str, Any], currency: str, loc: Locale, t: Messages, now: datetime) -> dict | None:
    """The last outcome: what it brought in, when, and how sure that figure is — an estimate or a
    window still open is said so."""
    if not last:
        return None
    label = _action_label(last.get("actionId"), "lastOutcome.actionId", t)
    outcome = _mapping(last.get("outcome"))
    conversions = _count(outcome.get("conversions") or 0, "lastOutcome.outcome.conversions")
    final = outcome.get("final") is True  # not said to be final: it may still change
    caused = _caused_cents(_mapping(outcome.get("incremental")))
    code = values.currency(outcome.get("currency") or currency, "lastOutcome.outcome.currency")
    if caused:  # measured against the people it held out: what the mail itself earned
        text = t("digest.proof.incremental", action=label, amount=_fig(format_money(caused, code, loc), loc))
    elif conversions:  # credited by attribution only: said so, never claimed as caused
        cents = values.minor_units(outcome.get("revenueCents"), "lastOutcome.outcome.revenueCents") or 0
        text = t("digest.proof.recovered", action=label, amount=_fig(format_money(cents, code, loc), loc))
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
    return {"prefix": t("digest.proof.prefix" if caused else "digest.proof.prefixNoResult"), "text": text,
            "conversions": _fig(format_decimal(conversions, locale=loc), loc) if conversions else None, "notes": notes}


def digest_context(v: Mapping[str, Any], loc: Locale, t: Messages, now: datetime) -> tuple[str, dict]:
    project = values.require(v, "projectName", "digest")
    raw_date = v.get("date")
    try:
        day = raw_date if isinstance(raw_date, date) else date.fromisoformat(str(raw_date).strip()[:10])
    except ValueError:
        raise RenderError(f"digest: variable 'date' must be YYYY-MM-DD, got {raw_date!r}") from None
    run_hub_url = values.url(values.require(v, "runHubUrl", "digest"), "runHubUrl")
    currency = values.currency(v.get("currency") or "USD")  # revenue is in minor units of it
    kpis, other_currency = _kpi_rows(_mapping(v.get("kpis")), v.get("kpiOrder"), currency, loc, t)
    context = {
        "project_name": project,
        "date_text": format_date(day, "full", locale=loc),
        "headline": _headline(_mapping(v.get("headline")), currency, loc, t, _is_today(day, v.get("timezone"), now)),
        "kpis": kpis,
        "kpi_note": other_currency,
        "anomaly": _anomaly(_mapping(v.get("anomaly")), loc, t),
        "action": _action(_mapping(v.get("recommendedAction")), loc, t),
        "proof": _proof(_mapping(v.get("lastOutcome")), currency, loc, t, now),
        "run_hub_url": run_hub_url,
    }
    return t("digest.subject", projectName=project, date=format_date(day, "long", locale=loc)), context
