"""Byte helpers of the end of DATA (core/smtp/content.py) and the XCLIENT
parser (core/smtp/proxy.py), without a server."""

from __future__ import annotations

import ipaddress

import pytest

from core.smtp import content, proxy


@pytest.mark.parametrize("raw, clean", [
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\nb\r\n", b"a\r\nb\r\n"),
    (b"a\rb\r\n", b"a\r\nb\r\n"),
    (b"a\r\r\nb\n\n", b"a\r\n\r\nb\r\n\r\n"),
    (b"\n.\r\n", b"\r\n.\r\n"),
])
def test_normalise_line_ends(raw, clean):
    assert content.has_bare_line_ends(raw) == (raw != clean)
    assert content.normalise_line_ends(raw) == clean
    assert not content.has_bare_line_ends(clean)


def test_longest_line():
    assert content.longest_line(b"ab\r\n" + b"x" * 999 + b"\r\nc\r\n") == 999
    assert content.longest_line(b"") == 0


def test_header_values_unfold_and_decode():
    block = (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  menu\r\n"
             b"message-id:\r\n <a@b>\r\nSubject: second\r\n\r\n")
    found = content.header_values(content.header_block(block + b"body"),
                                  ("message-id", "subject"))
    assert found == {"subject": "café menu", "message-id": "<a@b>"}
    assert content.header_block(b"\r\nbody") == b""


def test_received_header_is_7bit_and_cannot_be_broken_out_of():
    header = content.received_header(
        helo="evil\r\nBcc: x (nested) ünï", client_ip="2001:db8::1",
        client_name="", hostname="mx.example.com", protocol="ESMTP",
        qid="ABC123ABC123", recipients=["δ@example.com"])
    assert header.isascii()
    lines = header.split(b"\r\n")
    assert lines[0].startswith(b"Received: from evil??Bcc:?x??nested???n? "
                               b"(unknown [IPv6:2001:db8::1])")
    assert all(line[:1] in (b"\t", b"") for line in lines[1:])
    assert b"for <" not in header  # non-ASCII recipient left out
    assert content.header_line("X-A", "b\r\nBcc: c") == b"X-A: b  Bcc: c\r\n"


def test_xclient_attributes():
    attrs = proxy.parse_xclient("ADDR=IPV6:2001:db8::5 NAME=[UNAVAILABLE] "
                                "HELO=mx+2Eexample.net PORT=25")
    assert attrs == {"ADDR": "2001:db8::5", "NAME": None,
                     "HELO": "mx.example.net", "PORT": "25"}
    for bad in ("", "FOO=1", "ADDR=999.1.1.1", "PORT=70000", "NAME=a+zz"):
        with pytest.raises(ValueError):
            proxy.parse_xclient(bad)


def test_networks_match_mapped_addresses():
    nets = (ipaddress.ip_network("192.0.2.0/24"),)
    assert proxy.in_networks("::ffff:192.0.2.9", nets)
    assert proxy.plain_ip("::ffff:192.0.2.9") == "192.0.2.9"
    assert not proxy.in_networks("198.51.100.1", nets)
    assert not proxy.in_networks("not an ip", nets)
