"""The RFC 5321 path parser (core/smtp/address.py), without a server."""

from __future__ import annotations

import pytest

from core.smtp.address import (
    AddressError,
    parse_params,
    parse_path,
    split_argument,
)


@pytest.mark.parametrize("text, local, domain", [
    ("<user@example.com>", "user", "example.com"),
    ("<First.Last+tag@Sub.Example.COM>", "First.Last+tag", "Sub.Example.COM"),
    ("<`sleep9`@example.net>", "`sleep9`", "example.net"),  # backquote is atext
    ('<"odd sender"@example.net>', '"odd sender"', "example.net"),
    ('<"a@b"@example.com>', '"a@b"', "example.com"),
    ('<"local>part"@example.com>', '"local>part"', "example.com"),
    ('<"|sleep 9"@example.net>', '"|sleep 9"', "example.net"),
    ('<"quote\\"inside"@example.net>', '"quote\\"inside"', "example.net"),
    ("<@hop1.example.net,@hop2.example.net:sender@example.net>", "sender",
     "example.net"),
    ("<user@[192.0.2.1]>", "user", "[192.0.2.1]"),
    ("<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]"),
    ("<" + "a" * 73 + "@example.com>", "a" * 73, "example.com"),
])
def test_valid_paths_keep_their_form(text, local, domain):
    address = parse_path(text)
    assert (address.local, address.domain) == (local, domain)
    assert address.text == f"{local}@{domain}"


@pytest.mark.parametrize("text, reason", [
    ("<;sleep 9;>", "missing domain"),
    ("<$(sleep 9)@example.net>", "not allowed"),  # no RFC 5322 comments
    ("<john\\ smith@example.com>", "not allowed"),
    ("<@route.example.org user2@example.com>", "source route"),
    ("<user>", "missing domain"),
    ("user@example.com", "angle brackets"),
    ("<user@example..com>", "empty label"),
    ("<user@-example.com>", "label"),
    ("<user@exa_mple.com>", "label"),
    ("<.user@example.com>", "empty atom"),
    ("<us..er@example.com>", "empty atom"),
    ("<user@[300.1.1.1]>", "IPv4"),
    ("<user@[IPv6:zz::1]>", "IPv6"),
    ('<"unterminated@example.com>', "unterminated"),
    ("<>", "empty path"),
    ("<" + "x" * 300 + "@example.com>", "256"),
    ("<user@" + "a" * 64 + ".com>", "63"),
])
def test_invalid_paths_name_the_reason(text, reason):
    with pytest.raises(AddressError) as caught:
        parse_path(text)
    assert reason in str(caught.value)


def test_null_sender_only_as_reverse_path():
    assert parse_path("<>", reverse=True).is_null
    with pytest.raises(AddressError):
        parse_path("<>")


def test_bare_postmaster_only_as_forward_path():
    """RFC 5321 s4.5.1: <Postmaster> without a domain must be accepted."""
    assert parse_path("<Postmaster>").is_bare_postmaster
    assert parse_path("<postmaster>").is_bare_postmaster
    with pytest.raises(AddressError):
        parse_path("<Postmaster>", reverse=True)


def test_eight_bit_needs_smtputf8():
    with pytest.raises(AddressError) as caught:
        parse_path("<jörg@example.com>")
    assert caught.value.eight_bit
    address = parse_path("<jörg@bücher.example>", smtputf8=True)
    assert address.domain_key == "xn--bcher-kva.example"


def test_split_argument_respects_quotes_and_params():
    assert split_argument('<"local>part"@example.com> SIZE=10') == (
        '<"local>part"@example.com>', "SIZE=10")
    path, rest = split_argument(
        "<bounce@example.net> RET=HDRS ENVID=<qid-77@client.example.net>")
    assert path == "<bounce@example.net>"
    assert parse_params(rest) == [("RET", "HDRS"),
                                  ("ENVID", "<qid-77@client.example.net>")]
    with pytest.raises(AddressError):
        split_argument("<user@example.com")


@pytest.mark.parametrize("text", ["SIZE=", "=1", "SI_ZE=1", "BODY=a=b"])
def test_bad_params(text):
    with pytest.raises(ValueError):
        parse_params(text)
