"""The daily digest as its owner reads it. runhub.generate_digest hands over keys and params
(DigestContent); the renderer writes every sentence, number and relative time in the digest's
locale, and nothing the generator wrote in English reaches the mail. (`runhub digest preview` and a
queued digest's delivery, against a real database: tests/db/test_digest_preview.py.)"""
from __future__ import annotations

import email
import email.policy
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from babel import Locale
from babel.numbers import format_currency, format_decimal
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st
from markupsafe import escape

from helpers.digest import (INCREMENTAL, ENGLISH, GENERATOR_ENGLISH, NON_ENGLISH, NOW, PROJECT, RECOMMEND_KEYS, URL, VARIANTS,
                            action, digest, drop, english_in, failures, format_percent_of, headline, kpis, outcome,
                            plain, render, visible, with_generator_text)
from helpers.mail import render_message
from runhub_loader import cli
from runhub_loader.mail import defaults as sender_defaults
from runhub_loader.constants import ACTION_IDS, LOCALES
from runhub_loader.mail import daemon as sender_module
from runhub_loader.mail.digest import GREEN, GREY, RED
from runhub_loader.mail.locales import catalog, format_money
from runhub_loader.mail.preview import SAMPLES

NON_ARABIC = tuple(locale for locale in LOCALES if locale != "ar")
from runhub_loader.mail.smtp import SmtpConfig
from runhub_loader.mail.values import RenderError


def kpi_rows(html: str) -> list[tuple[str, str, str, str]]:
    """(label, value, colour, delta) of each KPI row, in order."""
    return re.findall(r'<td[^>]*>([^<]+)</td>\s*<td[^>]*>([^<]*)</td>\s*'
                      r'<td[^>]*color:(#[0-9a-f]{6});">([^<]*)</td>', html)


def label(locale: str, key: str) -> str:
    return catalog(locale)[key]


# -- the key test: no English outside the project's own name ---------------------------------------

def test_the_english_vocabulary_is_what_it_should_be():
    assert {"yesterday", "revenue", "abandoned", "checkout", "estimated", "ago", "dropped", "awaiting",
            "promo", "tuesday", "january", "provisional", "customers"} <= ENGLISH
    assert not {"sunrise", "bakery", "runhub", "example", "https"} & ENGLISH


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("locale", NON_ENGLISH)
def test_no_english_outside_the_project_name(locale, variant):
    rendered = render(with_generator_text(VARIANTS[variant]), locale)
    assert rendered.locale == locale
    assert english_in(rendered, locale) == set()


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_arabic_mail_has_no_latin_letters_but_names_and_links(variant):
    rendered = render(with_generator_text(VARIANTS[variant]), "ar")
    text = URL.sub(" ", visible(rendered)).replace(PROJECT, " ").replace("Run Hub", " ")
    if VARIANTS[variant]["currency"] == "USD":
        text = text.replace("US$", " ")  # Babel's Arabic symbol of the dollar
    assert re.findall(r"[A-Za-z]+", text) == []


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("locale", LOCALES)
def test_no_generator_text_is_ever_printed(locale, variant):
    """The plan's `text`, `message`, `label`, `reason`, `when` and the registry's English label are
    ignored, in English too: only keys, params and the project's name reach the mail."""
    sentinels = {path: f"Sentinel{n}x" for n, path in enumerate(GENERATOR_ENGLISH)}
    rendered = render(with_generator_text(VARIANTS[variant], sentinels), locale)
    shown = visible(rendered)
    assert "Sentinel" not in shown
    assert "{" not in shown and "None" not in shown


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("locale", LOCALES)
def test_every_variant_renders_a_complete_message(locale, variant):
    msg = render_message("digest", locale, VARIANTS[variant], message_id="<digest.1@runhub>",
                         to_email="owner@sunrise.example", to_name=None, from_addr="Run Hub <runhub@example.com>",
                         unsubscribe_url=None, sent_at=NOW)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    html = parsed.get_body(("html",)).get_content()
    direction = "rtl" if locale == "ar" else "ltr"
    assert f'<html dir="{direction}" lang="{locale}">' in html
    assert parsed["Content-Language"] == locale
    assert PROJECT in parsed["Subject"]
    assert f'href="{escape(VARIANTS[variant]["runHubUrl"])}"' in html


# -- numbers in the locale's own format ------------------------------------------------------------

MONEY = {"en": "€1,500.00", "fr": "1 500,00 €", "es": "1.500,00 €", "de": "1.500,00 €", "ar": "1,500.00 €"}
PROOF_MONEY = {"en": "€170.00", "fr": "170,00 €", "es": "170,00 €", "de": "170,00 €", "ar": "170.00 €"}


@pytest.mark.parametrize("locale", LOCALES)
def test_money_is_in_the_locales_format(locale):
    rendered = render(digest(), locale)
    revenue, proof = format_money(150000, "EUR", locale), format_money(17000, "EUR", locale)
    assert (plain(revenue), plain(proof)) == (MONEY[locale], PROOF_MONEY[locale])
    assert revenue == format_currency(Decimal("1500.00"), "EUR", locale=locale)  # exactly as Babel writes it
    for amount in (revenue, proof):
        assert amount in rendered.text and str(escape(amount)) in rendered.html
    if locale == "ar":
        assert revenue.startswith("\u200f")  # Babel's right-to-left mark: the amount reads right in RTL text


@pytest.mark.parametrize("locale", LOCALES)
def test_money_with_other_currencies_and_big_numbers(locale):
    text = render(VARIANTS["big numbers"], locale).text
    assert format_money(123456789, "EUR", locale) in text
    assert format_money(987654321, "EUR", locale) in text
    assert format_decimal(1000000, locale=locale) in text
    dollars = render(VARIANTS["dollars, leads first"], locale).text
    assert format_money(150000, "USD", locale) in dollars and format_money(17000, "USD", locale) in dollars


@pytest.mark.parametrize("locale", LOCALES)
def test_kpis_lead_in_the_digests_order_coloured_by_direction(locale):
    def rows(variant):
        return [(label, colour) for label, _, colour, _ in kpi_rows(render(VARIANTS[variant], locale).html)]

    def names(*metrics):
        return [str(escape(label(locale, f"digest.kpi.{m}"))) for m in metrics]

    assert rows("sample") == list(zip(names("revenue", "conversion", "leads"), [GREEN, GREY, RED]))
    assert rows("everything down") == list(zip(names("leads", "revenue", "conversion"), [RED, RED, RED]))
    assert rows("steady day") == list(zip(names("revenue", "conversion", "leads"), [GREY, GREY, GREY]))
    assert rows("dollars, leads first") == list(zip(names("leads", "conversion", "revenue"), [RED, GREY, GREEN]))


def test_kpi_values_and_deltas_as_written_in_english_and_french():
    rows = {label: (value, colour, delta) for label, value, colour, delta in kpi_rows(render(digest(), "en").html)}
    assert rows == {"Revenue": ("€1,500.00", GREEN, "+25%"), "Conversion rate": ("3.4%", GREY, "0 pts"),
                    "Leads": ("3", RED, "-40%")}
    down = kpi_rows(render(VARIANTS["everything down"], "fr").html)  # a rate's change in points
    assert [(plain(value), plain(delta)) for _, value, _, delta in down] == [
        ("1", "-75 %"), ("800,00 €", "-20 %"), ("10 %", "-10 pts")]


@pytest.mark.parametrize("locale", LOCALES)
def test_conversion_up_from_nothing_shows_the_change_in_points(locale):
    rows = kpi_rows(render(VARIANTS["conversion up from nothing"], locale).html)
    conversion = [row for row in rows if row[0] == str(escape(label(locale, "digest.kpi.conversion")))]
    assert len(conversion) == 1
    _, value, colour, delta = conversion[0]
    points = catalog(locale)["digest.kpi.points"].format(points="25")  # from 0 % to 25 %: +25 points
    assert colour == GREEN and plain(delta).lstrip("+") == plain(points)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_day_without_checkouts_says_so_and_shows_no_change(locale):
    """Not "0 %": no checkout, no rate; and no change against a day without one."""
    content = digest(kpis=kpis(conversion=(None, 0.25, None, None)))
    rows = {row[0]: row for row in kpi_rows(render(content, locale).html)}
    _, value, colour, delta = rows[str(escape(label(locale, "digest.kpi.conversion")))]
    assert (value, delta, colour) == (str(escape(catalog(locale)["digest.kpi.noCheckouts"])), "—", GREY)


@pytest.mark.parametrize("locale", LOCALES)
def test_counts_and_money_up_from_nothing_are_new_not_a_bare_number(locale):
    content = digest(kpis=kpis(leads=(3, 0, 3, None), revenue=(150000, 0, 150000, None)))
    deltas = {row[0]: row[3] for row in kpi_rows(render(content, locale).html)}
    new = str(escape(catalog(locale)["digest.kpi.new"]))
    assert deltas[str(escape(label(locale, "digest.kpi.leads")))] == new
    assert deltas[str(escape(label(locale, "digest.kpi.revenue")))] == new


def test_rtl_figures_and_links_are_isolated_and_signs_sit_before_them():
    """In Arabic every amount, percent, point change and count is a left-to-right isolate (it reads
    as Babel wrote it: "‏150.00 US$", never "US$ 150.00"), with its sign inside, before it, for money
    and percent alike; the dashboard link too. No isolate in left-to-right mail."""
    from runhub_loader.mail.render import render_content

    from babel.numbers import get_minus_sign_symbol, get_plus_sign_symbol

    content = digest(currency="USD", kpis=kpis(revenue=(150000, 120000, 30000, 25.0)))
    arabic = render_content("digest", "ar", content, now=NOW)
    plus, minus = get_plus_sign_symbol("ar"), get_minus_sign_symbol("ar")
    for figure in (format_money(150000, "USD", "ar"), format_percent_of(25, "ar"), plus + format_percent_of(25, "ar"),
                   minus + format_percent_of(40, "ar")):
        assert f"\u2066{figure}\u2069" in arabic.text and f"\u2066{figure}\u2069" in arabic.html, figure
    assert f"\u2066{content['runHubUrl']}\u2069" in arabic.text
    for locale in NON_ARABIC:
        english = render_content("digest", locale, content, now=NOW)
        assert not any(c in english.text + english.html for c in "\u2066\u2067\u2068\u2069"), locale


def test_a_preview_of_today_says_today():
    """A digest of the day so far (runhub digest preview --day today) says "today", not "yesterday"."""
    from runhub_loader.mail.render import render_content

    today = render_content("digest", "en", digest(date="2026-01-28", timezone="UTC"), now=NOW)
    assert today.text.splitlines()[1] == "Revenue up 25% today so far"
    assert render_content("digest", "en", digest(date="2026-01-27", timezone="UTC"), now=NOW).text.splitlines()[1] \
        == "Revenue up 25% yesterday"



# -- sentences ------------------------------------------------------------------------------------

HEADLINES = {
    "en": "Revenue up 25% yesterday", "fr": "Chiffre d’affaires en hausse de 25 % hier",
    "es": "Los ingresos subieron un 25 % ayer", "de": "Umsatz gestern um 25 % gestiegen",
    "ar": "ارتفعت الإيرادات بنسبة 25% أمس",
}


@pytest.mark.parametrize("locale", LOCALES)
def test_headline_from_its_key_and_percent(locale):
    assert plain(render(digest(), locale).text).splitlines()[1] == HEADLINES[locale]
    down = render(VARIANTS["everything down"], locale).text
    assert catalog(locale)["digest.headline.revenueDown"].format(percent=format_percent_of(20, locale)) in down
    steady = render(VARIANTS["steady day"], locale).text
    assert catalog(locale)["digest.headline.noChange"] in steady


ANOMALIES = [
    ("en", drop("revenue", 80, 1), "Revenue fell 80% yesterday compared with the previous Monday."),
    ("fr", drop("revenue", 80, 1), "Le chiffre d’affaires a baissé de 80 % hier par rapport au lundi précédent."),
    ("es", drop("leads", 62.5, 2), "Los clientes potenciales de ayer bajaron un 62,5 % respecto al martes anterior."),
    ("de", drop("conversion", 55.5, 7),
     "Die Konversionsrate ist gestern gegenüber dem vorigen Sonntag um 55,5 % gesunken."),
    ("ar", drop("revenue", 80, 1), "انخفضت الإيرادات أمس بنسبة 80% مقارنةً بيوم الاثنين السابق."),
    ("ar", drop("leads", 51, 7), "انخفض عدد العملاء المحتملين أمس بنسبة 51% مقارنةً بيوم الأحد السابق."),
    ("en", failures(1, 3), "1 payment attempt out of 3 failed yesterday (33.3%)."),
    ("en", failures(4, 10), "4 payment attempts out of 10 failed yesterday (40%)."),
    ("fr", failures(1, 3), "1 tentative de paiement sur 3 a échoué hier (33,3 %)."),
    ("fr", failures(4, 10), "4 tentatives de paiement sur 10 ont échoué hier (40 %)."),
    ("es", failures(1, 3), "Ayer falló 1 de 3 intentos de pago (33,3 %)."),
    ("es", failures(4, 10), "Ayer fallaron 4 de 10 intentos de pago (40 %)."),
    ("de", failures(1, 3), "Gestern ist 1 von 3 Zahlungsversuchen fehlgeschlagen (33,3 %)."),
    ("de", failures(4, 10), "Gestern sind 4 von 10 Zahlungsversuchen fehlgeschlagen (40 %)."),
    ("ar", failures(2, 4), "فشلت أمس محاولتا دفع من أصل 4 (50%)."),
    ("ar", failures(4, 10), "فشلت أمس 4 محاولات دفع من أصل 10 (40%)."),
    ("ar", failures(12, 20), "فشلت أمس 12 محاولةً للدفع من أصل 20 (60%)."),
]


@pytest.mark.parametrize(("locale", "anomaly", "expected"), ANOMALIES)
def test_anomaly_sentences_name_the_weekday_and_agree_with_the_number(locale, anomaly, expected):
    rendered = render(digest(anomaly=anomaly), locale)
    assert expected in plain(rendered.text)
    assert str(escape(expected)) in plain(rendered.html)


REASONS = [
    ("en", "recover_abandoned", 1, "1 customer recently left a checkout without paying."),
    ("en", "recover_abandoned", 3, "3 customers recently left a checkout without paying."),
    ("en", "send_promo", 1000000, "1,000,000 recently active customers can receive it."),
    ("fr", "recover_abandoned", 1, "1 client a récemment abandonné son panier sans payer."),
    ("fr", "recover_abandoned", 2, "2 clients ont récemment abandonné leur panier sans payer."),
    ("fr", "onboard_users", 1000000, "1 000 000 de nouveaux inscrits n’ont pas encore reçu de message de bienvenue."),
    ("es", "send_promo", 1, "1 cliente activo recientemente puede recibirla."),
    ("es", "send_promo", 5, "5 clientes activos recientemente pueden recibirla."),
    ("es", "recover_abandoned", 1000000, "1.000.000 de clientes abandonaron hace poco su carrito sin pagar."),
    ("de", "onboard_users", 1, "1 neue Anmeldung wurde noch nicht begrüßt."),
    ("de", "recover_abandoned", 2, "2 Kunden haben kürzlich einen Kauf abgebrochen, ohne zu bezahlen."),
    ("ar", "recover_abandoned", 1, "عميل واحد ترك سلته مؤخرًا دون أن يدفع."),
    ("ar", "recover_abandoned", 2, "عميلان تركا سلتيهما مؤخرًا دون أن يدفعا."),
    ("ar", "recover_abandoned", 3, "3 عملاء تركوا سلالهم مؤخرًا دون أن يدفعوا."),
    ("ar", "recover_abandoned", 11, "11 عميلًا تركوا سلالهم مؤخرًا دون أن يدفعوا."),
    ("ar", "recover_abandoned", 100, "100 عميل تركوا سلالهم مؤخرًا دون أن يدفعوا."),
    ("ar", "send_promo", 2, "يمكن أن يصل إلى عميلَين نشطَين مؤخرًا."),
    ("ar", "onboard_users", 5, "5 مسجّلين جدد لم يتلقَّوا رسالة ترحيب بعد."),
]


@pytest.mark.parametrize(("locale", "action_id", "count", "expected"), REASONS)
def test_recommended_action_label_and_reason_agree_with_the_count(locale, action_id, count, expected):
    text = plain(render(digest(recommendedAction=action(action_id, count)), locale).text)
    assert plain(f"{label(locale, 'digest.action.prefix')} {label(locale, f'digest.actionLabel.{action_id}')}") in text
    assert expected in text


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("action_id", ACTION_IDS)
def test_every_plural_form_of_every_language_is_reachable(locale, action_id):
    """0, 1, 2, 3, 11, 100 and a million cover every CLDR category of the five languages."""
    rule, seen = Locale.parse(locale).plural_form, set()
    for count in (0, 1, 2, 3, 11, 100, 1000000):
        form = rule(count)
        seen.add(form)
        key = f"digest.recommend.{RECOMMEND_KEYS[action_id]}.{form}"
        expected = catalog(locale)[key].format(count=format_decimal(count, locale=locale))
        assert expected in render(digest(recommendedAction=action(action_id, count)), locale).text
    assert seen == set(rule.tags) | {"other"}


AGO = {"en": "2 days ago", "fr": "il y a 2 jours", "es": "hace 2 días", "de": "vor 2 Tagen", "ar": "قبل يومين"}


@pytest.mark.parametrize("locale", LOCALES)
def test_proof_point_action_money_and_relative_time_in_the_locale(locale):
    content = digest(lastOutcome={**outcome(confidence="high"), "completedAt": "2026-01-26T07:00:00.000000Z"})
    text = render(content, locale).text
    t = catalog(locale)
    what = t["digest.proof.recovered"].format(action=t["digest.actionLabel.recover_abandoned"],
                                              amount=format_money(17000, "EUR", locale))
    assert f'{t["digest.proof.prefixNoResult"]} {t["digest.proof.when"].format(text=what, when=AGO[locale])}' in text
    assert t["digest.proof.conversions"].format(count="2") in text
    later = render(content, locale, now=NOW + timedelta(days=7)).text  # counted from the send time
    assert AGO[locale] not in later


def test_proof_point_in_english_and_french():
    content = digest(lastOutcome={**outcome(confidence="high"), "completedAt": "2026-01-26T07:00:00Z"})
    assert ("Your last action: Recover abandoned checkouts: €170.00 in sales attributed to it (finished 2 days ago)"
            in render(content, "en").text)
    assert ("Votre dernière action : Relancer les paniers abandonnés : 170,00 € de ventes lui sont attribuées "
            "(terminée il y a 2 jours)" in plain(render(content, "fr").text))
    measured = digest(lastOutcome={**outcome(confidence="high", incremental=INCREMENTAL), "completedAt": "2026-01-26T07:00:00Z"})
    assert ("Your last action worked: Recover abandoned checkouts brought in €90.00 more than without its e-mail "
            "(measured against a holdout group) (finished 2 days ago)" in render(measured, "en").text)


def test_a_completion_after_the_send_time_is_a_minute_ago_not_in_the_future():
    content = digest(lastOutcome={**outcome(), "completedAt": (NOW + timedelta(seconds=30)).isoformat()})
    assert "(finished 1 minute ago)" in render(content, "en").text


HONESTY = {  # variant: (prefix key, sentence key, notes)
    "sample": ("digest.proof.prefixNoResult", "digest.proof.recovered", ["digest.proof.confidence.medium"]),
    "final, by link": ("digest.proof.prefixNoResult", "digest.proof.recovered", []),
    "low confidence": ("digest.proof.prefixNoResult", "digest.proof.recovered", ["digest.proof.confidence.low"]),
    "outcome not final, not completed": ("digest.proof.prefixNoResult", "digest.proof.recovered",
                                         ["digest.proof.provisional"]),
    "caused, measured": ("digest.proof.prefix", "digest.proof.incremental", []),
    "held out, not significant": ("digest.proof.prefixNoResult", "digest.proof.recovered", []),
    "held out, not enough data": ("digest.proof.prefixNoResult", "digest.proof.recovered", []),
    "not final, no sales yet": ("digest.proof.prefixNoResult", "digest.proof.noConversionsYet",
                                ["digest.proof.provisional"]),
    "final, no sales": ("digest.proof.prefixNoResult", "digest.proof.noConversions", []),
}
NOTE_KEYS = ("digest.proof.provisional", "digest.proof.confidence.medium", "digest.proof.confidence.low")


@pytest.mark.parametrize("variant", HONESTY)
@pytest.mark.parametrize("locale", LOCALES)
def test_the_proof_point_says_when_it_is_an_estimate_or_not_final(locale, variant):
    """Only what a holdout comparison shows the mail caused earns "your last action worked" (and is
    quoted as made by it); sales credited otherwise are said to be attributed; an open window and a
    match weaker than the link are said, in the owner's language."""
    prefix, sentence, notes = HONESTY[variant]
    t = catalog(locale)
    rendered = render(VARIANTS[variant], locale)
    assert t[prefix] in rendered.text
    other_prefix = "digest.proof.prefixNoResult" if prefix == "digest.proof.prefix" else "digest.proof.prefix"
    assert t[other_prefix] not in rendered.text
    label_ = t["digest.actionLabel.recover_abandoned"]
    cents = 9000 if sentence == "digest.proof.incremental" else 17000
    stem = t[sentence].format(action=label_, amount=format_money(cents, "EUR", locale))
    assert stem in rendered.text and str(escape(stem)) in rendered.html
    for key in NOTE_KEYS:
        assert (t[key] in rendered.text) == (key in notes), key
        assert (str(escape(t[key])) in rendered.html) == (key in notes), key


@pytest.mark.parametrize("locale", LOCALES)
def test_payments_in_other_currencies_are_said_to_be_left_out(locale):
    rule = Locale.parse(locale).plural_form
    for count in (1, 3):
        expected = catalog(locale)[f"digest.kpi.otherCurrency.{rule(count)}"].format(count=count)
        assert expected in render(digest(kpis=kpis(other_currency=count)), locale).text
    none = render(digest(kpis=kpis(other_currency=0)), locale).text
    assert not any(text in none for key, text in catalog(locale).items() if key.startswith("digest.kpi.otherCurrency"))


# -- what the renderer refuses --------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    (dict(headline={**headline("revenue", "Up", 25.0), "key": "digest.headline.revenueSoared"}), "headline.key"),
    (dict(headline={"text": "Revenue up 25% yesterday", "delta": 25, "metric": "revenue"}), "headline.key"),
    (dict(headline={**headline("revenue", "Up", 25.0), "params": {}}), "headline.params.percent"),
    (dict(anomaly={**drop("revenue", 60, 1), "key": "digest.anomaly.weird"}), "anomaly.key"),
    (dict(anomaly={"type": "leads_drop", "message": "Leads dropped 40%", "severity": "high"}), "anomaly.key"),
    (dict(anomaly=drop("revenue", 60, 0)), "weekday"),
    (dict(anomaly=drop("revenue", 60, 8)), "weekday"),
    (dict(anomaly=drop("revenue", 60, True)), "weekday"),
    (dict(anomaly=drop("revenue", -5, 1)), "anomaly.params.percent"),
    (dict(anomaly=failures(2, 3) | {"params": {"failed": 2.5, "attempts": 3, "percent": 80}}), "failed"),
    (dict(recommendedAction={**action("send_promo", 3), "id": "send_spam"}), "recommendedAction.id"),
    (dict(recommendedAction={**action("send_promo", 3), "key": "digest.recommend.spam"}), "recommendedAction.key"),
    (dict(recommendedAction={"id": "send_promo", "label": "Send a promo", "reason": "3 new leads"}), "recommendedAction.key"),
    (dict(recommendedAction=action("send_promo", -1)), "count"),
    (dict(lastOutcome={**outcome(), "actionId": "mystery"}), "lastOutcome.actionId"),
    (dict(lastOutcome={**outcome(), "completedAt": "last Tuesday"}), "completedAt"),
    (dict(lastOutcome=outcome(revenueCents=12.5)), "revenueCents"),
    (dict(kpiOrder=["revenue", "leads"]), "kpiOrder"),
    (dict(kpiOrder=["revenue", "leads", "leads"]), "kpiOrder"),
    (dict(kpiOrder=["revenue", "leads", "profit"]), "kpiOrder"),
    (dict(runHubUrl=None), "runHubUrl"),
    (dict(runHubUrl="javascript:alert(1)"), "runHubUrl"),
])
def test_a_digest_outside_the_contract_is_refused(changes, message):
    """A key the catalogs do not know is a generator/renderer mismatch: refused loudly (the sender
    records the mail as failed and logs why) rather than printed some other way."""
    with pytest.raises(RenderError, match=re.escape(message)):
        render(digest(**changes), "en")


# -- any numbers ----------------------------------------------------------------------------------

_percent = st.one_of(st.integers(0, 10**6), st.floats(0, 10**6, allow_nan=False).map(lambda x: round(x, 4)))
_signed = st.one_of(st.integers(-10**9, 10**9), st.floats(-10**6, 10**6, allow_nan=False).map(lambda x: round(x, 4)))
_count = st.integers(0, 10**9)


@st.composite
def digests(draw) -> dict:
    def kpi():
        return {"value": draw(st.integers(0, 10**10)), "previous": draw(st.integers(0, 10**10)),
                "delta": draw(_signed), "deltaPercent": draw(st.one_of(st.none(), _signed))}
    metric = draw(st.sampled_from(["revenue", "leads", "conversion", None]))
    anomaly = draw(st.sampled_from(["none", "drop", "failures"]))
    chosen = draw(st.sampled_from(ACTION_IDS + (None,)))
    return digest(
        currency=draw(st.sampled_from(["EUR", "USD", "JPY", "KWD", "SAR"])),
        kpiOrder=draw(st.permutations(["revenue", "leads", "conversion"])),
        kpis={"revenue": {**kpi(), "otherCurrencyPayments": draw(_count)}, "leads": kpi(), "conversion": kpi()},
        headline=headline(metric, draw(st.sampled_from(["Up", "Down"])), draw(_percent)),
        anomaly=None if anomaly == "none" else
        drop(draw(st.sampled_from(["revenue", "leads", "conversion"])), draw(_percent), draw(st.integers(1, 7)))
        if anomaly == "drop" else
        {**failures(1, 1), "params": {"failed": draw(_count), "attempts": draw(_count), "percent": draw(_percent)}},
        recommendedAction=action(chosen, draw(_count)) if chosen else None,
        lastOutcome=None if draw(st.booleans()) else {
            **outcome(conversions=draw(_count), revenueCents=draw(st.integers(0, 10**12)),
                      confidence=draw(st.sampled_from(["high", "medium", "low", None])), final=draw(st.booleans())),
            "actionId": draw(st.sampled_from(ACTION_IDS)),
            "completedAt": draw(st.one_of(st.none(), st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1),
                                                                  timezones=st.just(timezone.utc)).map(datetime.isoformat)))},
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=digests(), locale=st.sampled_from(LOCALES + ("fr-CA", "de-AT", "es-MX", "ar-EG")))
def test_any_numbers_render_in_the_locale_with_no_english(content, locale):
    rendered = render(with_generator_text(content), locale)
    shown = visible(rendered)
    assert "{" not in shown and "None" not in shown and "Sentinel" not in shown
    if rendered.locale != "en":
        assert english_in(rendered, rendered.locale) == set()


# -- the sender puts the dashboard link in -----------------------------------------------------------

def test_the_sender_links_each_digest_to_its_projects_dashboard():
    config = sender_module.SenderConfig(database_url="postgresql:///unused", smtp=SmtpConfig("127.0.0.1", 1),
                                        dashboard_url="https://app.example/p/{projectId}/run?from=digest")
    project = str(uuid.uuid4())
    variables = {k: v for k, v in SAMPLES["digest"].items() if k != "runHubUrl"}
    message = {"id": 1, "messageId": "<digest.1@runhub>", "template": "digest", "locale": "fr",
               "toEmail": "owner@sunrise.example", "toName": None, "projectId": project, "variables": variables}
    sent = [sender_module.compose(config, message),
            sender_module.compose(config, {**message, "variables": {**variables, "runHubUrl": "https://evil.example/"}})]
    assert [recipient for _, recipient in sent] == ["owner@sunrise.example"] * 2
    for data in (data for data, _ in sent):
        html = email.message_from_bytes(data, policy=email.policy.default).get_body(("html",)).get_content()
        assert f'href="https://app.example/p/{project}/run?from=digest"' in html
        assert "evil.example" not in html and 'lang="fr"' in html
    assert "runHubUrl" not in message["variables"]  # the claimed message is not changed


def test_the_dashboard_link_option_and_its_default():
    assert sender_module.SenderConfig("postgresql:///x", SmtpConfig("h", 1)).dashboard_url == \
        "https://localhost/projects/{projectId}/run" == sender_defaults.DASHBOARD_URL
    for command in (cli.main.commands["sender"], cli.main.commands["digest"].commands["preview"]):
        option = next(p for p in command.params if p.name == "dashboard_url")
        assert option.envvar == "RUNHUB_DASHBOARD_URL" and option.default == sender_defaults.DASHBOARD_URL


def test_the_sender_options_default_to_the_configs_defaults():
    """One place (runhub_loader/mail/defaults.py) for what `runhub sender` and SenderConfig assume."""
    config = sender_module.SenderConfig("postgresql:///x", SmtpConfig("h", 1))
    options = {p.name: p.default for p in cli.main.commands["sender"].params}
    shared = ("from_addr", "unsubscribe_url", "dashboard_url", "concurrency", "batch", "lease_seconds", "poll_seconds",
              "wake_seconds", "metrics_host")
    assert {name: options[name] for name in shared} == {name: getattr(config, name) for name in shared}
    assert sender_module.dashboard_link("https://x.example/{projectId}/run", "a b/c") == "https://x.example/a%20b%2Fc/run"


def test_render_sample_digest_in_arabic(tmp_path):
    result = CliRunner().invoke(cli.main, ["render", "digest", "--locale", "ar", "--sample", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "digest.ar.html").read_text(encoding="utf-8")
    assert '<html dir="rtl" lang="ar">' in page and SAMPLES["digest"]["runHubUrl"] in page
    assert catalog("ar")["digest.actionLabel.recover_abandoned"] in page
