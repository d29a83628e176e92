"""URIs of a message: hosts found in text and HTML, normalised, with their
registrable domain from the Public Suffix List (shipped in publicsuffix2).

The scanner is compiled (``core.fast._uri``) when built, else its twin
(``core.spam.uri_py``). Found: ``scheme://`` forms (any scheme, so ``hxxp``
too, spaces after ``//`` and ``user@`` skipped), bare ``www.`` and other
dotted names, dots written ``[.]``, ``(.)`` or `` . ``. HTML entities are
decoded first, percent escapes and IDN names (to punycode) in the host, and
numeric IPv4 forms (``0xC0000201``, ``3221225985``) become dotted quads.

Limits: a bare name counts only when its top-level domain is in the Public
Suffix List; at most ``MAX_SCAN`` characters of each part are scanned.
"""

from __future__ import annotations

import dataclasses
import html
import ipaddress
from urllib.parse import unquote_to_bytes

from publicsuffix2 import PublicSuffixList

from core.message import ParsedMessage
from core.spam import uri_py

try:
    from core.fast import _uri as _compiled
except ImportError:  # not built: the twin does the same, slower
    _compiled = None

COMPILED = _compiled is not None
MAX_SCAN = 500_000
MAX_PARTS = 20

_PSL = PublicSuffixList()
_LABEL_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclasses.dataclass(frozen=True)
class Uri:
    """One host of a message and the domain a blocklist is asked about."""

    host: str  # normalised: lowercase, punycode, dotted quad for IPs
    domain: str  # registrable domain, or the IP address itself
    is_ip: bool = False


def scanner(compiled: bool | None = None):
    if compiled is None:
        return _compiled if COMPILED else uri_py
    return _compiled if compiled and COMPILED else uri_py


def _numeric_ip(host: str) -> str | None:
    """Dotted quad of an all-numeric host (dotted, decimal, hex or octal)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        try:
            if part.startswith("0x"):
                values.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            return None
    # inet_aton rules: the last part fills the remaining bytes.
    last = values.pop()
    if any(v > 255 for v in values) or last >= 256 ** (4 - len(values)):
        return None
    number = 0
    for v in values:
        number = number * 256 + v
    number = number * 256 ** (4 - len(values)) + last
    return str(ipaddress.IPv4Address(number))


def normalise(raw: bytes, bare: bool = False) -> Uri | None:
    """A Uri for a raw host candidate, or None when it is not a usable host."""
    try:
        text = unquote_to_bytes(raw).decode("utf-8").lower()
    except (UnicodeDecodeError, ValueError):
        return None
    text = text.strip(".-")
    if not text or ".." in text or len(text) > 253:
        return None
    if all(c in "0123456789abcdefx." for c in text) and text[0].isdigit():
        ip = _numeric_ip(text)
        if ip is not None:
            return None if bare and text.count(".") != 3 else Uri(ip, ip, True)
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = text.split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 or
                              not set(label) <= _LABEL_OK for label in labels):
        return None
    domain = _PSL.get_sld(text, strict=True)
    if domain is None or domain == _PSL.get_tld(text, strict=True):
        return None
    if bare and not labels[-1].isalpha() and not labels[-1].startswith("xn--"):
        return None
    return Uri(text, domain)


def _texts(parsed: ParsedMessage):
    count = 0
    for part in parsed.parts:
        if part.text is None or count >= MAX_PARTS:
            continue
        count += 1
        text = part.text[:MAX_SCAN]
        if part.content_type == "text/html" or "&" in text:
            text = html.unescape(text)
        yield text.encode("utf-8", "surrogatepass")
    yield parsed.subject[:2000].encode("utf-8", "surrogatepass")


def extract(parsed: ParsedMessage, limit: int = 200, compiled=None) -> list[Uri]:
    """Distinct URIs of the message's text and HTML parts, in order found."""
    scan = scanner(compiled)
    seen: dict[str, Uri] = {}
    for data in _texts(parsed):
        for raw, authority in scan.hosts(data):
            uri = normalise(raw, bare=not authority and not raw.startswith(b"www."))
            if uri is not None and uri.host not in seen:
                seen[uri.host] = uri
                if len(seen) >= limit:
                    return list(seen.values())
    return list(seen.values())


def domains(parsed: ParsedMessage, limit: int = 20, compiled=None) -> list[Uri]:
    """One Uri per distinct registrable domain (or IP), at most ``limit``."""
    out: dict[str, Uri] = {}
    for uri in extract(parsed, compiled=compiled):
        if uri.domain not in out:
            out[uri.domain] = uri
            if len(out) >= limit:
                break
    return list(out.values())
