"""Owner-facing texts: the API renders them in the project's language from the mail's own catalogs,
which every deploy copies into runhub.texts. The SQL rendering (runhub._text) is held to the
Python one the mail uses (runhub_loader/mail/locales.py with Babel) for every key the API answers
with, in every locale; every such key exists in every locale with every plural form it needs."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from babel import Locale
from babel.numbers import format_decimal
from psycopg.types.json import Jsonb

from runhub_loader.constants import LOCALES
from runhub_loader.mail.locales import catalog

API_PREFIXES = ("owner.", "workflows.policy.", "workflows.requires.", "digest.actionLabel.")
NUMBERS = [0, 1, 2, 3, 7, 11, 24, 99, 100, 101, 999, 1000, 1612, 12345, 1000000, 1234567, Decimal("16.5")]


def api_keys() -> set[str]:
    """The keys the API renders, without their plural suffixes."""
    keys = set()
    for key in catalog("en"):
        if key.startswith(API_PREFIXES):
            keys.add(re.sub(r"\.(zero|one|two|few|many|other)$", "", key))
    return keys


def plural_keys() -> set[str]:
    return {re.sub(r"\.other$", "", k) for k in catalog("en") if k.startswith(API_PREFIXES) and k.endswith(".other")}


@pytest.mark.parametrize("locale", LOCALES)
def test_every_key_the_api_answers_with_is_in_every_locale_with_its_plural_forms(locale):
    forms = Locale.parse(locale).plural_form.tags | {"other"}
    for key in sorted(api_keys()):
        if key in plural_keys():
            assert {f"{key}.{form}" for form in forms} <= set(catalog(locale)), (locale, key)
        else:
            assert key in catalog(locale), (locale, key)
            placeholders = set(re.findall(r"\{(\w+)\}", catalog("en")[key]))
            assert set(re.findall(r"\{(\w+)\}", catalog(locale)[key])) == placeholders, (locale, key)


@pytest.mark.parametrize("locale", LOCALES)
def test_numbers_are_written_as_babel_writes_them(conn, locale):
    for n in NUMBERS:
        assert conn.execute("SELECT runhub._format_number(%s, %s)", (locale, n)).fetchone()[0] \
            == format_decimal(n, locale=locale), (locale, n)


@pytest.mark.parametrize("locale", LOCALES)
def test_plural_forms_are_cldrs(conn, locale):
    rule = Locale.parse(locale).plural_form
    for n in [*range(0, 130), 1000, 1000000, 2000000, 1000001]:
        assert conn.execute("SELECT runhub._plural_category(%s, %s)", (locale, n)).fetchone()[0] == rule(n), (locale, n)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_api_renders_every_key_as_the_mail_would(conn, locale):
    """Each key with a number in each numeric placeholder and text in the others; plural keys with
    counts that reach every form."""
    messages = catalog(locale)
    plural_of = Locale.parse(locale).plural_form
    for key in sorted(api_keys()):
        template = messages[f"{key}.other"] if key in plural_keys() else messages[key]
        names = re.findall(r"\{(\w+)\}", template)
        for n in ([0, 1, 2, 5, 12, 1612, 1000000] if key in plural_keys() else [24]):
            params = {name: (n if name in ("count", "hours", "days", "minutes", "limit", "max", "min", "minCount",
                                          "cooldownMinutes", "retryAfterSeconds", "maxAgeMinutes") else f"<{name}>")
                      for name in names}
            formatted = {k: format_decimal(v, locale=locale) if isinstance(v, int) else v for k, v in params.items()}
            expected = (messages[f"{key}.{plural_of(params['count'])}"] if key in plural_keys() else template)
            expected = expected.format_map(formatted)
            got = conn.execute("SELECT runhub._text(%s, %s, %s, %s)",
                               (locale, key, Jsonb(params), "count" if key in plural_keys() else None)).fetchone()[0]
            assert got == expected, (locale, key, params)


def test_a_deploy_copies_the_catalogs_in(conn):
    rows = conn.execute("SELECT locale, key, text FROM runhub.texts").fetchall()
    assert {(l, k): t for l, k, t in rows} == {(l, k): t for l in LOCALES for k, t in catalog(l).items()}


def test_an_unknown_locale_falls_back_to_english_and_an_unknown_key_to_itself(conn):
    assert conn.execute("SELECT runhub._text('xx', 'owner.explain.mailed')").fetchone()[0] == "Would be e-mailed"
    assert conn.execute("SELECT runhub._text('de', 'owner.no.such.key')").fetchone()[0] == "owner.no.such.key"
