"""Languages: the catalogs, how a language tag falls back, numbers and money in a locale."""
from __future__ import annotations

import functools
import json
from decimal import Decimal
from importlib import resources
from typing import Any, Mapping

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, format_percent, get_currency_precision, get_minus_sign_symbol, get_plus_sign_symbol

from ..constants import DEFAULT_LOCALE, LOCALES

RTL_LOCALES = frozenset({"ar"})
LRI, PDI = "\u2066", "\u2069"  # Unicode's left-to-right isolate and its end


def isolated(text: str, rtl: bool) -> str:
    """A figure, an amount or a link as its formatter wrote it, kept whole inside right-to-left
    text: without an isolate the bidi algorithm reorders its parts against the sentence (Arabic's
    "‏89.00 US$" read as "US$ 89.00", a sign jumping to the other side). Left-to-right text is left
    as it is."""
    return f"{LRI}{text}{PDI}" if rtl and text else text


def resolve_locale(locale: str | None) -> str:
    """The catalog for a language tag: the tag itself, then its primary subtag, then 'en'."""
    tag = (locale or "").strip().replace("_", "-").lower()
    for candidate in (tag, tag.split("-")[0]):
        if candidate in LOCALES:
            return candidate
    return DEFAULT_LOCALE


@functools.lru_cache(maxsize=256)  # Locale.parse looks for the locale's data file on disk each time
def babel_locale(tag: str | None, language: str) -> Locale:
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


class Messages:
    """t(key, **params): a catalog message with its params filled in. A missing key raises:
    tests/unit/test_render.py and tests/unit/test_digest_render.py render every branch in every locale.

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
def translator(locale: str) -> Messages:
    return Messages(locale)


def format_money(amount_minor: int, currency: str, locale: Locale | str) -> str:
    """Minor units as a localized amount, with the currency's own decimals (JPY 0, KWD 3)."""
    digits = get_currency_precision(currency)
    return format_currency(Decimal(amount_minor).scaleb(-digits), currency, locale=locale)


def percent(ratio: Decimal, locale: Locale, places: int = 1) -> str:
    # Rounded to `places` decimals of a percent, with no trailing zeros: 25 %, 12,5 %.
    ratio = round(ratio * 100, places).normalize() / 100
    return format_percent(ratio, locale=locale, decimal_quantization=False)


def signed(sign: Decimal, magnitude: str, locale: Locale) -> str:
    if sign > 0:
        return get_plus_sign_symbol(locale) + magnitude
    if sign < 0:
        return get_minus_sign_symbol(locale) + magnitude
    return magnitude
