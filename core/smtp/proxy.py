"""Who the client really is when a trusted front host passes it on.

Two ways, both off unless configured: the PROXY protocol v1/v2 from hosts
in ``proxy_protocol_networks`` (the header must come first on those
connections, and only on those), and Postfix's XCLIENT command from hosts in
``xclient_networks`` (attributes as in Postfix's XCLIENT_README).
"""

from __future__ import annotations

import ipaddress
import re

XCLIENT_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN",
                 "DESTADDR", "DESTPORT")
# Values a front host sends when it does not know the attribute.
UNKNOWN_VALUES = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")

_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


def in_networks(ip: str, networks) -> bool:
    """True if the address ``ip`` lies in one of ``networks``."""
    if not networks or not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def plain_ip(ip: str) -> str:
    """An address in its usual text form (IPv4-mapped IPv6 shown as IPv4)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def decode_xtext(text: str) -> str:
    """RFC 3461 s4 xtext: ``+HH`` stands for one octet."""
    if "+" not in text:
        return text
    decoded = _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "+" in _XTEXT_HEX.sub("", text):
        raise ValueError("bad xtext")
    return decoded


def parse_xclient(arg: str) -> dict[str, str | None]:
    """``NAME=value ...`` -> {attr: value, None when unknown to the sender}.

    Raises ValueError with the offending attribute.
    """
    result: dict[str, str | None] = {}
    items = arg.split()
    if not items:
        raise ValueError("no attributes")
    for item in items:
        name, eq, raw = item.partition("=")
        name = name.upper()
        if not eq or name not in XCLIENT_ATTRS:
            raise ValueError(item)
        try:
            value = decode_xtext(raw)
        except ValueError:
            raise ValueError(item) from None
        if value.upper() in UNKNOWN_VALUES:
            result[name] = None
            continue
        if name == "ADDR":
            if value[:5].upper() == "IPV6:":
                value = value[5:]
            try:
                value = str(ipaddress.ip_address(value))
            except ValueError:
                raise ValueError(item) from None
        elif name in ("PORT", "DESTPORT"):
            if not value.isdigit() or not 0 <= int(value) <= 65535:
                raise ValueError(item)
        elif any(ord(ch) < 33 or ord(ch) > 126 for ch in value):
            raise ValueError(item)
        result[name] = value
    return result
