"""E-mail addresses as the mail tests feed them to the grammar (plpython/addresses.py), ingest,
suppressions and the renderer: good ones with how they are stored and sent, bad ones, the hypothesis
strategy of strings near the grammar's every edge, and names that look like RFC 2047 encoded words."""
from __future__ import annotations

import base64
import email.policy
import string
from encodings import idna

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Deterministic examples and no example database written into the repository.
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
STRICT = email.policy.default.clone(raise_on_defect=True)

# The three addresses ingest accepted before and the sender could not render.
RENDER_FAILURES = ["\x01a@b.com", "<a@b.com>", "a\x85b@c.com"]
LABEL_63, LABEL_64 = "l" * 63, "l" * 64

# (as given, stored (lower-cased), on the wire)
GOOD = [
    ("ann@example.com", "ann@example.com", "ann@example.com"),
    ("Ann.Lee@Example.COM", "ann.lee@example.com", "ann.lee@example.com"),
    ("o'brien+tag@shop.example.ie", "o'brien+tag@shop.example.ie", "o'brien+tag@shop.example.ie"),
    ("!#$%&'*+-/?=^_`{|}~@example.com", "!#$%&'*+-/?=^_`{|}~@example.com", "!#$%&'*+-/?=^_`{|}~@example.com"),
    ("ann@bücher.de", "ann@bücher.de", "ann@xn--bcher-kva.de"),
    ("Ann@BÜCHER.de", "ann@bücher.de", "ann@xn--bcher-kva.de"),
    ("ann@xn--bcher-kva.de", "ann@bücher.de", "ann@xn--bcher-kva.de"),  # an A-label: stored as its Unicode
    ("ann@пример.рф", "ann@пример.рф", "ann@xn--e1afmkfd.xn--p1ai"),
    ("ann@例え.テスト", "ann@例え.テスト", "ann@xn--r8jz45g.xn--zckzah"),
    ("ann@😀.ws", "ann@😀.ws", "ann@xn--e28h.ws"),
    ("a@b.co", "a@b.co", "a@b.co"),
    ("a@1.example.com", "a@1.example.com", "a@1.example.com"),  # digits in labels, not the last
    ("a@b.c-d", "a@b.c-d", "a@b.c-d"),
    ("a@a-b--c.example", "a@a-b--c.example", "a@a-b--c.example"),
    (f"a@{LABEL_63}.com", f"a@{LABEL_63}.com", f"a@{LABEL_63}.com"),
    ("a" * 242 + "@example.com", "a" * 242 + "@example.com", "a" * 242 + "@example.com"),  # 254
]

BAD = RENDER_FAILURES + [
    "", " ", "ann", "ann@", "@example.com", "ann@example", "ann@@example.com", "ann@ex@ample.com",
    "ann smith@example.com", " ann@example.com", "ann@example.com\n", "ann@exa mple.com",
    "a\x00@b.com", "a@b\x01.com", "a\x7f@b.com", "a@b\x85c.com", "a\u2028@b.com",
    ".ann@example.com", "ann.@example.com", "an..n@example.com",              # not a dot-atom
    '"ann"@example.com', '"a b"@example.com', "a(b)@c.com", "a,b@c.com", "a;b@c.com", "a:b@c.com",
    "a\\b@c.com", "a[b@c.com", "ann@example.com>", "Ann <ann@example.com>", "ann@<example.com>",
    "=?utf-8?q?x?=@example.com", "a=?b@example.com",                        # encoded-word look-alikes
    "annë@example.com",                                                     # a non-ASCII local part
    "ann@exa\u0308mple.com",  # "ä" as "a" and a combining mark: not IDNA's canonical form
    "ann@example.com.", "ann@.example.com", "ann@example..com",             # trailing / empty labels
    "ann@-example.com", "ann@example-.com", "ann@exa_mple.com", "ann@example.-com",
    f"a@{LABEL_64}.com", f"a@b.{LABEL_64}",                                  # labels of 64
    "a" * 243 + "@example.com",                                             # 255 characters
    "a" * 230 + "@bücherbücherbü.de",  # 248 characters as given, 255 on the wire
    "ann@[192.0.2.1]", "ann@[IPv6:2001:db8::1]", "ann@192.0.2.1", "ann@example.123",  # IP literals
    "ann@straße.de",                 # IDNA 2003 maps ß to ss: another domain than the one shown
    "ann@ＥＸＡＭＰＬＥ.com",          # full-width letters map to ASCII: another spelling of example.com
    "ann@exam\u200bple.com", "ann@exam\u00adple.com",  # zero-width space, soft hyphen: mapped away
    "ann@bücher。de", "ann@bücher．de",   # dots IDNA reads but a split on "." does not
    "ann@bü_cher.de", "ann@bü cher.de", "ann@bü\x01cher.de",  # an A-label that is not a hostname label
    "ann@\u05d0a.com",  # a right-to-left letter next to a left-to-right one (IDNA's bidi rule)
    "ann@" + "ü" * 60 + ".de",  # a Unicode label whose A-label is over 63
]



# -- property: strings near the grammar's edges -------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# What breaks parsers, headers and IDNA, and what maps to something else.
HOSTILE = ["\x00", "\x01", "\x1f", "\x7f", "\x85", "\u200b", "\u00a0", "\u00ad", "\u2028", "\u202e", "\ufeff",
           " ", "\t", "\r\n", "\n", "<", ">", '"', "(", ")", ",", ";", ":", "\\", "[", "]", "@", ".", "..",
           "=?", "?=", "=?utf-8?q?x?=", "-", "_", "xn--", "\u3002", "\uff0e", "\uff61", "ß", "İ", "\u212a",
           "ＡＢ", "é", "É", "ü", "Ü", "😀", "ς", "\u05d0", "ا", "1", "0x", "IPv6:", "\ud7ff"]
ldh_labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
unicode_labels = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd", "Mn", "So")), min_size=1, max_size=8)
labels = st.one_of(ldh_labels, unicode_labels, st.sampled_from(HOSTILE), st.sampled_from(["com", "de", "xn--p1ai", "123"]),
                   st.integers(60, 66).map(lambda n: "x" * n),
                   st.lists(st.one_of(ldh_labels, unicode_labels, st.sampled_from(HOSTILE)), min_size=2, max_size=4).map("".join))
domains = st.lists(labels, min_size=1, max_size=5).map(".".join)
local_parts = st.one_of(
    st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=3).map(".".join),
    st.lists(st.one_of(st.text(ATEXT, min_size=1, max_size=6), st.sampled_from(HOSTILE)), min_size=1, max_size=5).map("".join),
    st.integers(60, 250).map(lambda n: "a" * n))


def _canonical(label: str) -> str:
    """label in IDNA's canonical form, when it has one."""
    try:
        return idna.ToUnicode(idna.ToASCII(label))
    except UnicodeError:
        return "bücher"


# Well-formed addresses, ASCII and internationalized, then the same with one thing wrong.
well_formed = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels + [tld])}",
    st.lists(st.text(ATEXT, min_size=1, max_size=10), min_size=1, max_size=3).map(".".join),
    st.lists(st.one_of(ldh_labels, unicode_labels.map(_canonical)), min_size=1, max_size=3),
    st.sampled_from(["com", "de", "co", "museum", "xn--p1ai", "рф", "テスト", "1a", "a1"]))


@st.composite
def mutated(draw):
    address = draw(well_formed)
    at = draw(st.integers(0, len(address)))
    change = draw(st.sampled_from(["insert", "replace", "delete", "upper"]))
    if change == "upper":
        return address.upper()
    piece = draw(st.sampled_from(HOSTILE)) if change != "delete" else ""
    return address[:at] + piece + address[at + (change != "insert"):]


# Strings near the grammar's every edge: well-formed, with one thing wrong, assembled from any
# pieces, and arbitrary text.
candidates = st.one_of(well_formed, mutated(), st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains),
                       st.text(max_size=40))


# -- names that look like encoded words ------------------------------------------------------------

def encoded(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


INJECTING_NAME = encoded("x\r\nBcc: evil@x.com")  # =?utf-8?b?eA0KQmNjOiBldmlsQHguY29t?=
