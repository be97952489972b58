"""The e-mail addresses runhub accepts: exactly those its sender can deliver and write in a To
header. One grammar for ingest and suppressions (runhub._mailbox) and for the renderer
(runhub_loader/mail/render.py), so that an address accepted at ingest always renders and one refused
never would.

A mailbox here is RFC 5321's, narrowed to what plain SMTP delivers and mail readers show as sent:
- local part: ASCII, a dot-atom of atext (RFC 5322 §3.2.3): no quoted strings, controls, spaces or
  brackets; and no "=?", which some readers decode as an encoded word even inside an address;
- domain: two labels or more, each a hostname label (letters, digits and inner hyphens, 1 to 63)
  or a Unicode label in IDNA canonical form (it comes back unchanged from its A-label, which must
  be a hostname label); the last label not all digits (a dotted IP address); no address literals;
  at most 253 characters as A-labels;
- the whole address at most 254 characters on the wire (RFC 5321's 256-octet path less "<>"); the
  local part's own 64 is not enforced (runhub accepted longer ones before; a server that refuses
  one answers 5xx: a failed send, not a message that cannot be written).
Addresses are lower-cased first, by one rule that never depends on a database's locale (SQL's
lower() does): the letters A-Z anywhere, and the domain's other letters by Unicode's default case
mapping (str.lower); a local part's other characters stay as given, so an address with one (İ,
the Kelvin sign K, ſ) is refused, never read as the ASCII letter it resembles. IDNA is the standard
library's (IDNA 2003): a label it would map to something else (ß to ss, a full-width letter, a
zero-width space, a final sigma to σ) is refused rather than delivered to another domain than the
one shown. runhub stores the lower-cased form.
"""
from __future__ import annotations

import re
import string
from encodings import idna

from ._export import sql_function

MAX_ADDRESS = 254
MAX_DOMAIN = 253

_ATEXT = r"a-z0-9!#$%&\x27*+/=?^_`{|}~-"  # \x27 is "'", written so to fit in a SQL literal
_LOCAL_PART = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")
_OTHER_DOTS = re.compile("[\u3002\uff0e\uff61]")  # IDNA reads these as dots, this split would not
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

# The grammar for the common case, as a plain-SQL fast path (sql/20_events.sql) that spares ingest
# a PL/Python call: lower-case ASCII, no "?" in the local part, a last label that starts with a letter,
# in the syntax PostgreSQL's regular expressions and Python's share. SQL adds the lengths (address
# <= 254; domain <= 63, so no label is longer: bounded repetitions make PostgreSQL's regex ten times
# slower). What it does not match goes to mailbox(). tests/db/test_mailbox.py proves that within those
# bounds it matches exactly the addresses mailbox() accepts as they are.
_FAST_ATEXT = _ATEXT.replace("?", "")
ASCII_FAST_PATTERN = (rf"^[{_FAST_ATEXT}]+(\.[{_FAST_ATEXT}]+)*"
                      r"@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$")


def mailbox(text: str | None) -> str | None:
    """text as runhub stores it — lower-cased, an internationalized domain in Unicode (so that
    ann@xn--bcher-kva.de and ann@bücher.de are one address, suppressed together) — when it is a
    mailbox runhub can deliver to, else None."""
    forms = _forms(lowered(text)) if isinstance(text, str) and len(text) <= MAX_ADDRESS else None
    return forms[0] if forms else None


def ascii_mailbox(text: str | None) -> str | None:
    """The address as it goes on the wire (RCPT TO and To): lower-cased, its domain in A-labels;
    None when it is not a mailbox runhub can deliver to."""
    forms = _forms(lowered(text)) if isinstance(text, str) and len(text) <= MAX_ADDRESS else None
    return forms[1] if forms else None


def lowered(text: str) -> str:
    """text lower-cased by runhub's rule (see above): A-Z anywhere, the domain (after the last @)
    by str.lower(). SQL's lower(text COLLATE "C") is the same on ASCII. (No valid address is longer
    than 254 characters: lower-casing never shortens one, and a domain's Unicode form is never
    longer than its A-labels, so callers refuse longer text before any work.)"""
    local, at, domain = text.rpartition("@")
    return local.translate(_ASCII_LOWER) + at + domain.lower()


def _forms(address: str) -> tuple[str, str] | None:
    """(stored form, wire form) of a lower-case address, or None."""
    local, at, domain = address.rpartition("@")
    if not at or "=?" in local or not _LOCAL_PART.fullmatch(local):
        return None
    labels = [_label_forms(label) for label in domain.split(".")]
    if len(labels) < 2 or None in labels or _DIGITS.fullmatch(labels[-1][1]):
        return None
    wire_domain = ".".join(a_label for _, a_label in labels)
    wire = f"{local}@{wire_domain}"
    if len(wire_domain) > MAX_DOMAIN or len(wire) > MAX_ADDRESS:
        return None
    return f"{local}@{'.'.join(u_label for u_label, _ in labels)}", wire


def _label_forms(label: str) -> tuple[str, str] | None:
    """(Unicode form, hostname-label form) of a domain label, or None. An A-label (xn--) must be
    the canonical encoding of a Unicode label; a Unicode label must be its own canonical form."""
    if label.isascii() and not label.startswith("xn--"):
        return (label, label) if _HOST_LABEL.fullmatch(label) else None
    if _OTHER_DOTS.search(label):
        return None
    try:
        u_label = idna.ToUnicode(label) if label.isascii() else label
        a_label = idna.ToASCII(u_label).decode("ascii")
        canonical = idna.ToUnicode(a_label) == u_label and not u_label.isascii()
    except UnicodeError:  # a prohibited character, a bidi mix, too long, bad punycode
        return None
    if not canonical or not _HOST_LABEL.fullmatch(a_label) or (label.isascii() and a_label != label):
        return None
    return u_label, a_label


@sql_function("runhub._mailbox(p_email text) RETURNS text")
def mailbox_sql(p_email):
    """mailbox() for SQL: the address as runhub stores it, or NULL."""
    return mailbox(p_email)
