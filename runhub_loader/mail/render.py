"""E-mail rendering: a template, a locale and variables in, a complete RFC 5322 message out.

Templates (Jinja2) and per-locale message catalogs (JSON, no compile step) live in
runhub_loader/mail/templates/. Everything computed — money, dates, KPI deltas and their colours —
is computed in Python (here, digest.py, locales.py), so templates only lay out what they are
given: the plan's digest shipped red/green logic inside a template and got it wrong for every sign.

Workflow mail (every template but `digest`) carries RFC 8058 one-click unsubscribe headers and a
visible unsubscribe link. No database is needed: the sender passes what it read from the outbox.
"""
from __future__ import annotations

import functools
import importlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address
from email.policy import SMTP
from email.utils import format_datetime
from types import ModuleType
from typing import Any, Callable, Mapping

from babel import Locale
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from ..constants import TEMPLATES
from ..assets import DEFAULT_SOURCE, import_plpython
from . import mime, values
from .digest import digest_context
from .locales import RTL_LOCALES, babel_locale, format_money, isolated, resolve_locale, translator
from .values import RenderError, clean_line, clean_text


_PLPYTHON = f"{__package__.partition('.')[0]}._plpython"  # a name of our own, not a top-level `plpython`


@functools.cache
def _plpython(name: str) -> ModuleType:
    """A module of the deployable plpython/ (runhub_loader/assets.py finds it), loaded on first use as
    a package of runhub_loader's own, so that the sender runs the very code the server runs."""
    import_plpython(DEFAULT_SOURCE, _PLPYTHON)
    return importlib.import_module(f"{_PLPYTHON}.{name}")

WORKFLOW_TEMPLATES = frozenset(TEMPLATES) - {"digest"}

_FONTS = {"ltr": "-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif",
          "rtl": "Tahoma,Segoe UI,Arial,sans-serif"}  # Tahoma: the Arabic face every client has


# -- content --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    locale: str  # the catalog used, after fallback



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
_env.filters["isolate"] = lambda text, direction: isolated(text, direction == "rtl")  # links in visible text



def _recovery_values(v: Mapping[str, Any], loc: Locale) -> dict[str, str | None]:
    """A recovery mail's own values: its cart's link, reference and amount, checked and formatted."""
    cents = values.minor_units(v.get("amountCents"), "amountCents")
    return {
        "link": values.url(values.require(v, "link", "recovery"), "link"),
        "cart_id": clean_line(v.get("cartId")),
        "amount": isolated(format_money(cents, values.currency(v.get("currency")), loc), loc.character_order == "right-to-left")
                  if cents is not None else None,
    }


def _workflow_context(template: str, v: Mapping[str, Any], loc: Locale, t: Callable[..., str],
                      recovery: Mapping[str, str | None] | None = None) -> tuple[str, dict]:
    """`recovery`: the recovery values to use instead of v's (slots: see render_content)."""
    project = values.require(v, "projectName", template)
    name = clean_line(v.get("customerName"))
    context: dict[str, Any] = {
        "project_name": project,
        "greeting": t("greeting.named", name=name) if name else t("greeting.generic"),
        # promo and update mail link to the shop with their run id (link), for attribution
        "shop_url": values.url(v.get("link"), "link") if template in ("promo", "update") and v.get("link")
                    else values.url(v.get("shopUrl"), "shopUrl"),
    }
    if template == "recovery":
        context.update(recovery if recovery is not None else _recovery_values(v, loc))
        return t("recovery.subject", projectName=project), context
    if template in ("promo", "update"):
        context.update(kicker=t(f"{template}.kicker", projectName=project),
                       content=values.require(v, "content", template, clean=clean_text))
        return values.require(v, "subject", template), context
    return t("onboarding.subject", projectName=project), context


# The recipients of a run differ only by a few values that templates interpolate as they are: the
# customer's name and unsubscribe link, and for recovery the cart's link, reference and amount. So
# a workflow mail's content is rendered once per run, locale and "which of these are present",
# with slots, and each message gets its own values put in (escaped for HTML), validated and
# formatted as a full rendering does. tests/unit/test_render.py checks that the two are the same, for
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
    """Subject, text and HTML of one e-mail (no headers: see render_bytes). `now`: the send
    time, which the digest's relative times are counted from (default: now)."""
    keys = _RECIPIENT_KEYS.get(template)
    if keys is None or not unsubscribe_url:
        return _render_content(template, locale, variables, unsubscribe_url=unsubscribe_url, now=now)
    name = clean_line(variables.get("customerName"))
    own: dict[str, str | None] = {}
    invalid = None
    if template == "recovery":
        try:
            own = _recovery_values(variables, babel_locale(locale, resolve_locale(locale)))
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
    loc = babel_locale(locale, language)
    t = translator(language)
    if template == "digest":
        now = now or datetime.now(timezone.utc)
        subject, context = digest_context(variables, loc, t, now if now.tzinfo else now.replace(tzinfo=timezone.utc))
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
            if values.LINE_BREAKS.search(value):
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


@functools.lru_cache(maxsize=4096)
def _from_header(from_addr: str | Address, from_name: str | None = None) -> str:
    """From: the platform's address, under the shop's name when it has one (each shop mails as
    itself; the address stays the platform's, whose domain signs and is trusted)."""
    name, address = _address(from_addr, "from_addr")
    return f"From: {mime.address(clean_line(from_name) or name, address)}\r\n"


def on_domain(message_id: str, domain: str) -> str:
    """A stored Message-ID (<local@runhub>, fixed when the message was written) on the platform's
    domain, as it goes in the header: the same on every retry."""
    local = message_id[1:].rpartition("@")[0]
    return f"<{local}@{domain}>"


@functools.lru_cache(maxsize=4096)
def envelope_address(to_email: str) -> str:
    """The address as it goes on the wire (RCPT TO and To): lower-case ASCII, an internationalized
    domain as A-labels. RenderError unless it is a mailbox by the grammar ingest enforces
    (plpython/addresses.py): what ingest accepts renders, what it refuses does not."""
    wire = _plpython("addresses").ascii_mailbox(to_email)
    if wire is None:
        raise RenderError(f"to_email: not an address runhub delivers to: {to_email!r}")
    return wire


def _to_header(to_email: str, to_name: str | None) -> str:
    return f"To: {mime.address(clean_line(to_name) or '', envelope_address(to_email))}\r\n"


def render_bytes(template: str, locale: str | None, variables: Mapping[str, Any], *,
                 message_id: str, to_email: str, to_name: str | None, from_addr: str | Address,
                 unsubscribe_url: str | None, sent_at: datetime | None = None,
                 from_name: str | None = None, reply_to: str | None = None) -> bytes:
    """A complete message as wire bytes: headers, and a multipart/alternative of text/plain and
    text/html.

    `message_id` is used exactly as given (the outbox fixed it when the run executed). Workflow
    templates need an https `unsubscribe_url` (RFC 8058 one-click, also shown in both parts);
    `digest` gets no List-Unsubscribe and ignores it. `from_name` replaces the display name of
    `from_addr` (the shop's name on the platform's address); `reply_to` (an address runhub stores)
    adds a Reply-To. Raises RenderError on bad input.
    """
    workflow = template in WORKFLOW_TEMPLATES
    if not (message_id.isascii() and message_id.isprintable() and len(message_id) <= 500
            and _MESSAGE_ID.fullmatch(message_id)):
        raise RenderError(f"message_id: not <local@domain>: {message_id!r}")
    uri = None
    if workflow:
        if not unsubscribe_url:
            raise RenderError(f"{template}: workflow mail needs an unsubscribe_url (RFC 8058)")
        uri = values.header_uri(unsubscribe_url, "unsubscribe_url")
    headers = [_from_header(from_addr, from_name), _to_header(to_email, to_name)]
    if reply_to:
        headers.append(f"Reply-To: {mime.address('', envelope_address(reply_to))}\r\n")
    sent_at = sent_at or datetime.now(timezone.utc)
    rendered = render_content(template, locale, variables, unsubscribe_url=uri, now=sent_at)
    headers += [
        mime.header("Subject", rendered.subject),
        f"Date: {format_datetime(sent_at)}\r\n",
        f"Message-ID: {message_id}\r\n",
    ]
    if workflow:
        # Written as is: the stock folders would turn a long URI into encoded words, which no
        # client decodes in List-Unsubscribe.
        headers.append(f"List-Unsubscribe: <{uri}>\r\n")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    return mime.alternative(headers, rendered.text, rendered.html, rendered.locale)


