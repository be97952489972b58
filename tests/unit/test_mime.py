"""mime.py writes messages by hand for speed: every one must read back, with the stdlib's parser,
as exactly what went in, and stay 7-bit with CRLF lines within RFC 5322's limits."""
from __future__ import annotations

import binascii
import email
import email.policy
import re


from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers.mail import render_message
from runhub_loader.mail import mime
from runhub_loader.mail.render import render_bytes
from runhub_loader.mail.values import clean_line

STRICT = email.policy.default.clone(raise_on_defect=True)

# Text a template can produce: any printable character, tabs, newlines (never CR: templates and
# clean_text normalize them), long lines, lines that look like MIME delimiters or SMTP's end of data.
body_text = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), max_size=200),
        st.sampled_from(["", ".", "..", "-- ", "--=_runhub_", "From me", "=", "a=b", " trailing  ", "\t"]),
        st.text("abc =é", min_size=70, max_size=300),
    ), max_size=30).map("\n".join)
one_line = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300).map(clean_line).filter(bool)


def wire_lines(raw: bytes) -> list[bytes]:
    assert raw.isascii(), "7-bit only"
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    return raw.split(b"\r\n")


def display_name(parsed, raw: bytes) -> str:
    """The To name as an RFC 2047 reader sees it. Python's address parser keeps the white space
    between encoded words (RFC 2047 §6.2 says to drop it), and so does email.header's legacy
    decoder: names in encoded words are decoded here by the RFC."""
    to = re.search(rb"\r\nTo: (.*?) ?<[^>]*>\r\n(?! )", raw, re.S)
    if to is None or b"=?" not in to.group(1):
        return parsed["To"].addresses[0].display_name
    return rfc2047_decode(to.group(1).decode("ascii").replace("\r\n ", " "))


ENCODED_WORD = re.compile(r"=\?([^?]+)\?([bBqQ])\?([^?]*)\?=")


def rfc2047_decode(value: str) -> str:
    """Encoded words decoded, the white space between two of them dropped (RFC 2047 §6.2)."""
    def decode(word: re.Match) -> str:
        charset, kind, payload = word.groups()
        raw = (binascii.a2b_base64(payload) if kind in "bB"
               else binascii.a2b_qp(payload.replace("_", " ").encode("ascii"), header=True))
        return raw.decode(charset)
    return ENCODED_WORD.sub(decode, re.sub(r"(?<=\?=)\s+(?==\?)", "", value))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(text=body_text, html=body_text, subject=one_line, name=st.one_of(st.none(), one_line))
@example(text="--=_runhub_x\n", html="", subject="s", name=None)
@example(text="x" * 2000, html="é" * 2000, subject="é" * 300, name="Zoë " * 40 + "Ann")
@example(text="", html="", subject="x", name="Ünïcode" * 30)
@example(text="", html="", subject="0" * 70, name=None)
@example(text="", html="", subject="=?utf-8?q?hi?= there " + "w" * 1000, name=None)
@example(text="", html="", subject="=?utf-8?b?eA0KQmNjOiBldmlsQHguY29t?=",  # "x\r\nBcc: evil@x.com"
         name="=?utf-8?b?eA0KQmNjOiBldmlsQHguY29t?=")
@example(text="", html="", subject="s", name='"=?utf-8?q?Ann?=" a=?b')
def test_what_goes_in_reads_back(text, html, subject, name):
    headers = [f"From: {mime.address('Shop', 'shop@example.com')}\r\n",
               f"To: {mime.address(name, 'ann@example.com')}\r\n",
               mime.header("Subject", subject)]
    raw = mime.alternative(headers, text, html, "fr")
    assert all(len(line) <= 998 for line in wire_lines(raw))

    parsed = email.message_from_bytes(raw, policy=STRICT)
    assert parsed["Subject"] == subject
    assert display_name(parsed, raw) == (name or "")
    assert parsed["To"].addresses[0].addr_spec == "ann@example.com"
    assert parsed["Content-Language"] == "fr"
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n") == html
    assert not parsed.defects and not plain.defects and not rich.defects


def test_short_ascii_stays_readable_and_the_rest_picks_the_shorter_encoding():
    assert mime._body("Hello\nworld\n") == ("7bit", b"Hello\r\nworld\r\n")
    assert mime._body("x" * 100)[0] == "quoted-printable"  # too long a line for 7bit
    assert mime._body("Café crème, s'il vous plaît\n")[0] == "quoted-printable"  # mostly ASCII
    assert mime._body("مرحبا بك في متجرنا\n" * 5)[0] == "base64"  # qp would triple it


def test_headers_fold_at_white_space_and_encode_non_ascii():
    folded = mime.header("Subject", "word " * 40)
    assert all(len(line) <= 78 for line in folded.split("\r\n"))
    assert folded.endswith("\r\n") and "=?" not in folded
    assert re.fullmatch(r"Subject: (=\?utf-8\?[bq]\?[^?]*\?=(\r\n )?)+\r\n", mime.header("Subject", "é" * 100))
    assert mime.address('Jo "the" baker, Inc', "jo@example.com") == '"Jo \\"the\\" baker, Inc" <jo@example.com>'


def test_a_body_holding_the_boundary_gets_another(monkeypatch):
    draws = iter([int("a" * 24, 16), int("b" * 24, 16)])
    monkeypatch.setattr(mime.random, "getrandbits", lambda _n: next(draws))
    text = f"--=_runhub_{'a' * 24}\n"
    raw = mime.alternative([], text, "y", "en")
    assert f'boundary="=_runhub_{"b" * 24}"'.encode() in raw
    parsed = email.message_from_bytes(raw, policy=STRICT)
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text


def test_a_rendered_message_is_written_out_again_byte_for_byte():
    raw = render_bytes("recovery", "de", {"projectName": "Bäckerei", "shopUrl": "https://b.example",
                                          "link": "https://b.example/c", "amountCents": 1999, "currency": "EUR"},
                       message_id="<m.1@runhub.example>", to_email="ann@example.com", to_name="Änne",
                       from_addr="Bäckerei <shop@b.example>",
                       unsubscribe_url="https://runhub.example/unsubscribe?token=" + "t" * 120)
    again = render_message("recovery", "de", {"projectName": "Bäckerei", "shopUrl": "https://b.example",
                                              "link": "https://b.example/c", "amountCents": 1999, "currency": "EUR"},
                           message_id="<m.1@runhub.example>", to_email="ann@example.com", to_name="Änne",
                           from_addr="Bäckerei <shop@b.example>",
                           unsubscribe_url="https://runhub.example/unsubscribe?token=" + "t" * 120)
    # Same content (Date and boundary differ between the two renderings) ...
    strip = re.compile(rb"(Date: [^\r]*|=_runhub_[0-9a-f]+)")
    assert strip.sub(b"", again.as_bytes()) == strip.sub(b"", raw)
    # ... and the long List-Unsubscribe URI is never turned into encoded words.
    assert b"List-Unsubscribe: <https://runhub.example/unsubscribe?token=" + b"t" * 120 + b">\r\n" in raw
