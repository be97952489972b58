"""The daily digest as tests build and read it: DigestContent built from the sample (digest(), kpis(),
headline(), ...), a variant of every branch (VARIANTS), what an English generator would write
(GENERATOR_ENGLISH), and a rendering read as its owner does: what is visible, and the English words
in it (english_in). Used by tests/unit/test_digest_render.py and tests/db/test_digest_preview.py."""
from __future__ import annotations

import copy
import dataclasses
import html as html_module
import re
from datetime import datetime, timezone
from decimal import Decimal

from babel.numbers import format_percent

from runhub_loader.constants import LOCALES
from runhub_loader.mail.locales import catalog
from runhub_loader.mail.preview import SAMPLES
from runhub_loader.mail.render import Rendered, render_content

NOW = datetime(2026, 1, 28, 7, 0, tzinfo=timezone.utc)  # the send time: the morning after the day
PROJECT = SAMPLES["digest"]["projectName"]
NON_ENGLISH = tuple(locale for locale in LOCALES if locale != "en")


ISOLATES = dict.fromkeys(map(ord, "\u2066\u2067\u2068\u2069"))


def unisolated(text: str) -> str:
    """Text without the bidi isolates right-to-left mail puts around each figure and link."""
    return text.translate(ISOLATES)


def render(content: dict, locale: str, now: datetime = NOW) -> Rendered:
    """The digest as rendered, its figures' isolates taken out so that its sentences compare with
    the catalog's (test_digest_render.py's test_rtl_figures_and_links_are_isolated checks them)."""
    r = render_content("digest", locale, content, now=now)
    return dataclasses.replace(r, subject=unisolated(r.subject), text=unisolated(r.text), html=unisolated(r.html))


def outcome(**changes) -> dict:
    base = copy.deepcopy(SAMPLES["digest"]["lastOutcome"])
    base["outcome"].update(changes)
    return base


def digest(**changes) -> dict:
    """The sample DigestContent with top-level fields replaced."""
    content = copy.deepcopy(SAMPLES["digest"])
    content.update(copy.deepcopy(changes))
    return content


def kpis(revenue=(150000, 120000, 30000, 25.0), leads=(3, 5, -2, -40.0), conversion=(0.034, 0.034, 0, 0),
         other_currency=0) -> dict:
    def kpi(values):
        return dict(zip(("value", "previous", "delta", "deltaPercent"), values))
    rate = kpi(conversion)  # a rate changes in points too, as runhub.generate_digest gives it
    rate["deltaPoints"] = None if rate["delta"] is None else round(rate["delta"] * 100, 6)
    return {"revenue": {**kpi(revenue), "otherCurrencyPayments": other_currency}, "leads": kpi(leads),
            "conversion": rate}


def headline(metric: str | None, direction: str = "Up", percent=None) -> dict:
    if metric is None:
        return {"metric": None, "delta": 0, "deltaPercent": None, "key": "digest.headline.noChange", "params": {}}
    return {"metric": metric, "delta": 1, "deltaPercent": percent, "key": f"digest.headline.{metric}{direction}",
            "params": {"points" if metric == "conversion" else "percent": percent}}  # a rate moves in points


def drop(metric: str, percent, weekday: int, severity="medium") -> dict:
    return {"type": f"{metric}_drop", "key": f"digest.anomaly.{metric}Drop",
            "params": {"percent": percent, "weekday": weekday}, "severity": severity}


def failures(failed: int, attempts: int, severity="high") -> dict:
    return {"type": "payment_failures", "key": "digest.anomaly.paymentFailures",
            "params": {"failed": failed, "attempts": attempts, "percent": round(failed * 100 / attempts, 4)},
            "severity": severity}


RECOMMEND_KEYS = {"recover_abandoned": "recoverAbandoned", "send_promo": "sendPromo", "onboard_users": "onboardUsers"}


def action(action_id: str, count: int) -> dict:
    return {"id": action_id, "key": f"digest.recommend.{RECOMMEND_KEYS[action_id]}", "params": {"count": count}}


# A holdout comparison that shows the mail's effect: 90.00 more than without it.
INCREMENTAL = {"enoughData": True, "significant": True, "incrementalRevenueCents": 9000, "runs": 1}

VARIANTS = {
    "sample": digest(),
    "no anomaly": digest(anomaly=None),
    "revenue drop, high, a Monday": digest(anomaly=drop("revenue", 80, 1, "high")),
    "conversion drop, a Sunday": digest(anomaly=drop("conversion", 55.5, 7)),
    "payment failures": digest(anomaly=failures(4, 10)),
    "one payment failure": digest(anomaly=failures(1, 3, "medium")),
    "recover one": digest(recommendedAction=action("recover_abandoned", 1)),
    "promo to 12": digest(recommendedAction=action("send_promo", 12)),
    "onboard 2": digest(recommendedAction=action("onboard_users", 2)),
    "no action": digest(recommendedAction=None),
    "no last outcome": digest(lastOutcome=None),
    "outcome not final, not completed": digest(lastOutcome={**outcome(final=False, confidence="high"),
                                                            "completedAt": None}),
    "not final, no sales yet": digest(lastOutcome=outcome(conversions=0, revenueCents=0, confidence=None,
                                                          matchedBy=None, byMethod={}, final=False)),
    "final, no sales": digest(lastOutcome=outcome(conversions=0, revenueCents=0, confidence=None, matchedBy=None,
                                                  byMethod={}, final=True)),
    "final, by link": digest(lastOutcome=outcome(confidence="high", matchedBy="wid_link")),
    "low confidence": digest(lastOutcome=outcome(confidence="low", matchedBy="amount_match")),
    "caused, measured": digest(lastOutcome=outcome(confidence="high", incremental=INCREMENTAL)),
    "held out, not significant": digest(lastOutcome=outcome(confidence="high",
                                                            incremental=INCREMENTAL | {"significant": False})),
    "held out, not enough data": digest(lastOutcome=outcome(confidence="high", incremental={"enoughData": False})),
    "steady day": digest(headline=headline(None), anomaly=None,
                         kpis=kpis((0, 0, 0, 0), (2, 2, 0, 0), (0.5, 0.5, 0, 0))),
    "everything down": digest(headline=headline("revenue", "Down", 20.0), kpiOrder=["leads", "revenue", "conversion"],
                              kpis=kpis((80000, 100000, -20000, -20.0), (1, 4, -3, -75.0), (0.1, 0.2, -0.1, -50.0))),
    "conversion up from nothing": digest(headline=headline("leads", "Up", 50.0),
                                         kpis=kpis(conversion=(0.25, 0, 0.25, None), leads=(3, 2, 1, 50.0))),
    "revenue up from nothing": digest(headline={"metric": "revenue", "delta": 150000, "deltaPercent": None,
                                                "key": "digest.headline.revenueFromZero", "params": {"value": 150000}},
                                      kpis=kpis(revenue=(150000, 0, 150000, None))),
    "leads up from nothing": digest(headline={"metric": "leads", "delta": 3, "deltaPercent": None,
                                              "key": "digest.headline.leadsFromZero", "params": {"value": 3}}),
    "conversion up from nothing, headline": digest(
        headline={"metric": "conversion", "delta": 0.25, "deltaPercent": None, "key": "digest.headline.conversionFromZero",
                  "params": {"value": 0.25}}),
    "dollars, leads first": digest(currency="USD", kpiOrder=["leads", "conversion", "revenue"],
                                   lastOutcome=outcome(currency="USD"), kpis=kpis(other_currency=3)),
    "big numbers": digest(kpis=kpis(revenue=(123456789, 1, 123456788, 12345678700.0)),
                          recommendedAction=action("send_promo", 1000000), anomaly=failures(1000000, 1500000),
                          lastOutcome=outcome(conversions=1000000, revenueCents=987654321)),
}

# What a generator written for English mail would put in (the plan's DigestContent): the renderer
# must print none of it, in any language.
GENERATOR_ENGLISH = {"headline.text": "Revenue up 25% yesterday", "anomaly.message": "Leads dropped 40% vs last week",
                     "recommendedAction.label": "Send a promo", "recommendedAction.reason": "3 new leads awaiting response",
                     "lastOutcome.when": "2 days ago", "lastOutcome.actionLabel": "Cart recovery workflow"}


def with_generator_text(content: dict, texts: dict[str, str] = GENERATOR_ENGLISH) -> dict:
    content = copy.deepcopy(content)
    for path, text in texts.items():
        section, field = path.split(".")
        if isinstance(content.get(section), dict):
            content[section][field] = text
    return content


# -- reading a rendering --------------------------------------------------------------------------

URL = re.compile(r"https?://\S+")
_WORD = re.compile(r"[^\W\d_]{3,}")  # three letters or more, any script
_BIDI = dict.fromkeys(map(ord, "\u200e\u200f\u061c\u2066\u2067\u2068\u2069"))  # direction marks Babel puts around numbers, isolates around figures


def plain(text: str) -> str:
    """Babel's no-break and narrow spaces as spaces, its direction marks dropped."""
    return text.replace("\u202f", " ").replace("\xa0", " ").translate(_BIDI)


def visible(rendered: Rendered) -> str:
    """All a reader can see: subject, text part, and the HTML's text (tags and styles dropped)."""
    page = html_module.unescape(re.sub(r"<[^>]+>", " ", rendered.html))
    return "\n".join((rendered.subject, rendered.text, page))


def words(text: str, owned: tuple[str, ...] = (PROJECT,)) -> set[str]:
    """The words of a rendering that are the mail's own: without links, the project's name and
    the product's (Run Hub)."""
    text = URL.sub(" ", text)
    for name in (*owned, "Run Hub"):
        text = text.replace(name, " ")
    return {word.lower() for word in _WORD.findall(text)}


def english_vocabulary() -> set[str]:
    """Every word an English digest can say: the English catalog, the English renderings of every
    variant (Babel's English dates and relative times too) and what an English generator writes."""
    vocabulary = set()
    for key, text in catalog("en").items():
        if key.startswith(("owner.", "workflows.")):  # what the API says to an owner, never in mail
            continue
        vocabulary |= words(re.sub(r"\{\w+\}", " ", text))
    for content in VARIANTS.values():
        vocabulary |= words(visible(render(content, "en")))
    for text in GENERATOR_ENGLISH.values():
        vocabulary |= words(text)
    return vocabulary


ENGLISH = english_vocabulary()

# Words that are English and also, spelled the same, ordinary words of the mail's language: French
# "action", "conversion(s)", "promotion", "notification", "attribution"; the German mail's
# "Leads", "Dashboard" and "Link" (its catalog's chosen terms); "mail" of "e-mail"/"E-Mail".
COGNATES = {
    "fr": {"action", "conversion", "conversions", "promotion", "notification", "attribution", "mail", "pts"},
    "es": set(),
    "de": {"leads", "dashboard", "link", "mail"},
    "ar": set(),
}


def english_in(rendered: Rendered, locale: str, owned: tuple[str, ...] = (PROJECT,)) -> set[str]:
    return (words(visible(rendered), owned) & ENGLISH) - COGNATES[locale]


def format_percent_of(percent, locale) -> str:
    return format_percent(Decimal(str(percent)) / 100, locale=locale, decimal_quantization=False)
