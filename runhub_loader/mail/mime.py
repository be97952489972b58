"""A small, fast MIME writer for the one shape runhub sends: headers and text + HTML alternatives.

As 7-bit wire bytes with CRLF line ends.

The stdlib's EmailMessage builds the same thing, but through its header registry and generator it
costs about 1.8 ms of CPU a message, ten times the templates, and the sender would spend most of
its time there. This writes the bytes directly with the stdlib's own encoders (RFC 2047 words from
email.header, quoted-printable and base64 from binascii). The tests parse every message back with
the stdlib's strict parser and compare it with its inputs.
"""
from __future__ import annotations

import binascii
import functools
import random
from email.header import Header
from email.utils import formataddr

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322's SHOULD; every line written here stays under its 998 MUST


@functools.lru_cache(maxsize=4096)
def header(name: str, value: str) -> str:
    """`Name: value` folded to MAX_LINE at spaces; a value that is not plain ASCII (or holds what a
    reader would take for an encoded word) as RFC 2047 encoded words. The value must already be
    one line. Cached: a run's subjects repeat."""
    words = value.split(" ")
    if value.isascii() and "=?" not in value and max(map(len, words)) <= 900:
        lines, line = [], f"{name}:"
        for i, word in enumerate(words):
            if i and len(line) + 1 + len(word) > MAX_LINE:
                lines.append(line)
                line = ""
            line += " " + word
        return CRLF.join(lines + [line]) + CRLF
    folded = Header(value, "utf-8", maxlinelen=MAX_LINE, header_name=name).encode(linesep=CRLF)
    return f"{name}: {folded}{CRLF}"


def address(display_name: str | None, addr_spec: str) -> str:
    """`name <addr>` for a To or From header: a plain ASCII name quoted when it must be, anything
    else (non-ASCII, too long for one line, or holding what a reader would take for an encoded
    word, even inside quotes) as encoded words of its literal text."""
    if not display_name:
        return addr_spec
    if display_name.isascii() and len(display_name) <= 60 and "=?" not in display_name:
        return formataddr((display_name, addr_spec))
    return f"{_phrase_words(display_name)} <{addr_spec}>"


def _encoded_word(text: str) -> str:
    return f"=?utf-8?b?{binascii.b2a_base64(text.encode('utf-8'), newline=False).decode('ascii')}?="


def _phrase_words(name: str) -> str:
    """A display name as RFC 2047 encoded words of at most 75 characters, one a line. Words are
    split at spaces, each space kept inside the word before it: readers ignore the white space
    between encoded words (RFC 2047 §6.2), which is the fold. (Python's own address parser keeps
    it, and so reads a long name back with extra spaces; it does the same with its own output.)"""
    chunks: list[str] = []
    current = ""
    for piece in name.replace(" ", " \0").split("\0"):
        while len(_encoded_word(current + piece)) > 75:
            if current:
                chunks.append(current)
                current = ""
            else:  # one word too long for a line: split it by characters
                cut = max(i for i in range(1, len(piece) + 1) if len(_encoded_word(piece[:i])) <= 75)
                chunks.append(piece[:cut])
                piece = piece[cut:]
        current += piece
    if current:
        chunks.append(current)
    return f"{CRLF} ".join(_encoded_word(chunk) for chunk in chunks)


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line ends) for a text part: 7bit when it
    is short-lined ASCII, else the shorter of quoted-printable and base64 (the stdlib's choice).
    The body carries no line end of its own after the text's last one: the delimiter's CRLF ends it."""
    data = text.replace("\r\n", "\n").replace("\n", CRLF).encode("utf-8")
    if text.isascii() and all(len(line) <= MAX_LINE for line in data.split(b"\r\n")):
        return "7bit", data
    # b2a_qp takes its soft line breaks' style from the data's first line end: give it one.
    qp = binascii.b2a_qp(data + b"\r\n", istext=True)[:-2]
    if len(qp) <= (len(data) + 56) // 57 * 78:  # base64's encoded length
        return "quoted-printable", qp
    lines = [binascii.b2a_base64(data[i:i + 57], newline=False) for i in range(0, len(data), 57)]
    return "base64", b"\r\n".join(lines)


def _part(subtype: str, text: str) -> bytes:
    cte, body = _body(text)
    head = f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: {cte}{CRLF}{CRLF}'
    return head.encode("ascii") + body


def _boundary() -> str:
    # Need not be secret, only absent from the parts (checked): "=_" never occurs in quoted-
    # printable or base64 text. Not secrets.token_hex: a urandom read per message is measurable.
    return f"=_runhub_{random.getrandbits(96):024x}"


def alternative(headers: list[str], text: str, html: str, language: str) -> bytes:
    """The message: `headers` (each from header(), ending in CRLF) then MIME-Version, a
    multipart/alternative of `text` and `html`, and Content-Language."""
    parts = [_part("plain", text), _part("html", html)]
    boundary = _boundary()
    while any(boundary.encode() in part for part in parts):  # only a 7bit part could hold it
        boundary = _boundary()
    top = "".join(headers) + (
        f"MIME-Version: 1.0{CRLF}"
        f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}'
        f"Content-Language: {language}{CRLF}{CRLF}")
    # The CRLF before each delimiter belongs to the delimiter (RFC 2046), so a part's own last
    # line end survives.
    body = b"".join(f"--{boundary}{CRLF}".encode("ascii") + part + CRLF.encode("ascii") for part in parts)
    return top.encode("ascii") + body + f"--{boundary}--{CRLF}".encode("ascii")
