"""The one RFC 5321 path parser: MAIL FROM and RCPT TO arguments.

Strict on purpose. RFC 5321 paths have no RFC 5322 comments, so
``<$(sleep 9)@example.net>`` is an error here, not ``$@example.net`` (the
misreading of case 012). Quoted local parts keep their quoting, so a relay
writes back exactly what it was given (case 013). Source routes are parsed
and dropped (RFC 5321 s4.1.1.3, appendix F.2; case 014). 8-bit text is
allowed only when the client gave SMTPUTF8 (RFC 6531 s3.3). A domain is
never invented: a mailbox without one is an error, except the reserved
``<Postmaster>`` recipient (RFC 5321 s4.5.1).

Limits: the path is limited to 256 octets and a domain to 255 (RFC 5321
s4.5.3.1.2-3); the 64-octet local-part limit of s4.5.3.1.1 is not enforced
because real list software exceeds it (case 016) and s4.5.3.1 asks servers
not to impose such limits. U-labels are checked for allowed characters only,
not against IDNA2008 tables.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

# RFC 5321 s4.5.3.1.3 and s4.5.3.1.2.
MAX_PATH = 256
MAX_DOMAIN = 255
MAX_LABEL = 63  # RFC 1035 s2.3.4

_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "!#$%&'*+-/=?^_`{|}~"
)
_LDH = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
# RFC 5321 s4.1.3: Standardized-tag ":" 1*dcontent, dcontent = %d33-90 / %d94-126
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")
# RFC 5321 s4.1.2 esmtp-keyword.
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


class AddressError(ValueError):
    """A path that RFC 5321 does not allow; ``str()`` is the reason."""

    def __init__(self, reason: str, eight_bit: bool = False):
        super().__init__(reason)
        self.eight_bit = eight_bit  # refused only for lack of SMTPUTF8


@dataclasses.dataclass(frozen=True)
class Address:
    """A parsed path. ``local`` keeps its quoting exactly as sent."""

    local: str = ""
    domain: str = ""  # as sent; "" for <> and the bare <Postmaster>

    @property
    def is_null(self) -> bool:
        return not self.local and not self.domain

    @property
    def is_bare_postmaster(self) -> bool:
        return not self.domain and self.local.lower() == "postmaster"

    @property
    def text(self) -> str:
        """The mailbox as it goes between angle brackets: ``local@domain``."""
        if not self.domain:
            return self.local
        return f"{self.local}@{self.domain}"

    @property
    def domain_key(self) -> str:
        """The domain for comparisons: lowercase, A-labels where possible."""
        return domain_key(self.domain)

    @property
    def eight_bit(self) -> bool:
        return not self.text.isascii()

    def __str__(self) -> str:
        return self.text


def domain_key(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _check_8bit(text: str, smtputf8: bool) -> None:
    if not text.isascii() and not smtputf8:
        raise AddressError("8-bit characters need SMTPUTF8", eight_bit=True)


def _is_utf8_char(ch: str) -> bool:
    # RFC 6531 s3.3 UTF8-non-ascii; surrogates stand for undecodable bytes.
    code = ord(ch)
    return code >= 0x80 and not 0xD800 <= code <= 0xDFFF and code not in (
        0x85, 0x2028, 0x2029) and not 0x80 <= code < 0xA0


def _check_dot_string(text: str) -> None:
    if not text:
        raise AddressError("empty local part")
    for atom in text.split("."):
        if not atom:
            raise AddressError("empty atom in local part (leading, trailing or "
                               "double dot)")
        for ch in atom:
            if ch not in _ATEXT and not _is_utf8_char(ch):
                raise AddressError(f"character {ch!r} not allowed in an unquoted "
                                   f"local part")


def _check_quoted(text: str) -> None:
    # RFC 5321 s4.1.2 Quoted-string, RFC 6531 s3.3 for 8-bit qtext.
    body = text[1:-1]
    index = 0
    while index < len(body):
        ch = body[index]
        if ch == "\\":
            if index + 1 >= len(body):
                raise AddressError("backslash at the end of a quoted string")
            nxt = body[index + 1]
            if not (" " <= nxt <= "~"):
                raise AddressError("bad quoted pair in local part")
            index += 2
            continue
        if ch == '"':
            raise AddressError("unescaped quote inside a quoted local part")
        if not (" " <= ch <= "~") and not _is_utf8_char(ch):
            raise AddressError("control character in a quoted local part")
        index += 1


def check_domain(domain: str) -> None:
    """Raise AddressError unless ``domain`` is an RFC 5321 Domain or literal."""
    if not domain:
        raise AddressError("missing domain")
    if domain.startswith("["):
        _check_literal(domain)
        return
    if len(domain.encode("utf-8", "surrogateescape")) > MAX_DOMAIN:
        raise AddressError(f"domain longer than {MAX_DOMAIN} octets")
    for label in domain.split("."):
        if not label:
            raise AddressError("empty label in domain")
        if len(label.encode("utf-8", "surrogateescape")) > MAX_LABEL:
            raise AddressError(f"domain label longer than {MAX_LABEL} octets")
        if label.isascii():
            if not _LDH.match(label):
                raise AddressError(f"domain label {label!r} is not letters, digits "
                                   f"and inner hyphens")
        elif not all(_is_utf8_char(ch) or ch.isascii() and (ch.isalnum() or ch == "-")
                     for ch in label):
            raise AddressError(f"domain label {label!r} has characters not allowed")


def _check_literal(literal: str) -> None:
    if not literal.endswith("]"):
        raise AddressError("address literal without closing bracket")
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            raise AddressError("bad IPv6 address literal") from None
        return
    if re.fullmatch(r"[0-9.]+", inner):
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            raise AddressError("bad IPv4 address literal") from None
        return
    if not _GENERAL_LITERAL.match(inner):
        raise AddressError("bad address literal")


def _split_mailbox(mailbox: str) -> tuple[str, str]:
    """Local part (quoting kept) and domain; the split is at the last '@'
    outside quotes."""
    if mailbox.startswith('"'):
        index = 1
        while index < len(mailbox):
            ch = mailbox[index]
            if ch == "\\":
                index += 2
                continue
            if ch == '"':
                break
            index += 1
        else:
            raise AddressError("unterminated quoted local part")
        local, rest = mailbox[:index + 1], mailbox[index + 1:]
        _check_quoted(local)
        if not rest:
            return local, ""
        if not rest.startswith("@"):
            raise AddressError("text after the quoted local part")
        return local, rest[1:]
    local, at, domain = mailbox.rpartition("@")
    if not at:
        return mailbox, ""
    _check_dot_string(local)
    return local, domain


def _strip_route(inner: str) -> str:
    """Drop an A-d-l source route (RFC 5321 s4.1.2), checking its syntax."""
    if not inner.startswith("@"):
        return inner
    route, colon, mailbox = inner.partition(":")
    if not colon:
        raise AddressError("source route without ':'")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise AddressError("source route hop without '@'")
        check_domain(hop[1:])
    return mailbox


def parse_path(text: str, smtputf8: bool = False, *, reverse: bool = False) -> Address:
    """Parse ``<...>`` exactly; raise AddressError with the reason.

    ``reverse`` (MAIL FROM) allows the null path ``<>``; a forward path
    (RCPT TO) allows the reserved ``<Postmaster>`` without a domain.
    """
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise AddressError(f"path longer than {MAX_PATH} octets (RFC 5321 "
                           f"4.5.3.1.3)")
    if not text.startswith("<") or not text.endswith(">") or len(text) < 2:
        raise AddressError("the address must be in angle brackets: <user@domain>")
    _check_8bit(text, smtputf8)
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text):
        raise AddressError("invalid UTF-8")
    inner = text[1:-1]
    if not inner:
        if reverse:
            return Address()
        raise AddressError("empty path")
    mailbox = _strip_route(inner)
    local, domain = _split_mailbox(mailbox)
    if not domain:
        if not reverse and local.lower() == "postmaster" and inner == mailbox:
            return Address(local=local)
        raise AddressError("missing domain (no default domain is added)")
    check_domain(domain)
    return Address(local=local, domain=domain)


def split_argument(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path text and the rest.

    The path ends at the first '>' outside a quoted string, so a quoted
    ``"local>part"`` and ``ENVID=<...>`` parameters are both read right.
    """
    if not arg.startswith("<"):
        raise AddressError("the address must be in angle brackets: <user@domain>")
    quoted = False
    index = 1
    while index < len(arg):
        ch = arg[index]
        if quoted and ch == "\\":
            index += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            path, rest = arg[:index + 1], arg[index + 1:]
            if rest and not rest.startswith(" "):
                raise AddressError("text right after '>'")
            return path, rest.strip(" ")
        index += 1
    raise AddressError("no closing '>'")


def parse_params(text: str) -> list[tuple[str, str | None]]:
    """ESMTP parameters (RFC 5321 s4.1.2): ``KEYWORD[=value]`` separated by
    spaces. Keywords come back uppercased; raise ValueError naming the bad one.
    """
    params: list[tuple[str, str | None]] = []
    for item in text.split(" "):
        if not item:
            continue
        keyword, eq, value = item.partition("=")
        if not _KEYWORD.match(keyword):
            raise ValueError(item)
        if eq:
            # esmtp-value: %d33-60 / %d62-126, plus UTF-8 (RFC 6531 s3.3).
            if not value or any(ch == "=" or (ch.isascii() and not "!" <= ch <= "~")
                                for ch in value):
                raise ValueError(item)
            params.append((keyword.upper(), value))
        else:
            params.append((keyword.upper(), None))
    return params
