"""add_headers / remove_headers: only the edited lines change, byte for byte."""

from __future__ import annotations

import pytest

from core.mime import add_headers, normalize_newlines, parse, remove_headers
from core.mime.rewrite import fold

MESSAGE = (b"Received: from x\r\n\tby y\r\n"
           b"From: a@example.net\r\n"
           b"X-Spam-Flag: NO\r\n"
           b"X-Spam-Status: No,\r\n score=-100\r\n"
           b"x-spam-level : *****\r\n"
           b"Subject: s\r\n"
           b"\r\n"
           b"X-Spam-Flag: NO in the body stays\r\n")


def test_add_headers_prepends_and_keeps_the_rest():
    out = add_headers(MESSAGE, [("X-Spam-Flag", "YES"), ("X-Spam-Score", "7.1")])
    assert out == b"X-Spam-Flag: YES\r\nX-Spam-Score: 7.1\r\n" + MESSAGE


def test_add_headers_follows_lf_line_ends():
    assert add_headers(b"A: b\n\nx\n", [("X", "y")]) == b"X: y\nA: b\n\nx\n"


def test_folding_at_78_columns_and_seven_bit():
    value = " ".join(["word"] * 60)
    line = fold("X-Report", value)
    assert line.endswith(b"\r\n")
    assert all(len(part) <= 78 for part in line.split(b"\r\n"))
    assert line.replace(b"\r\n ", b" ") == b"X-Report: " + value.encode() + b"\r\n"

    encoded = fold("X-Attachment", "Übersicht_Dezember.exe \u202e und mehr " * 5)
    assert encoded.isascii()
    assert all(len(part) <= 78 for part in encoded.split(b"\r\n"))
    parsed = parse(encoded + b"\r\n")
    assert parsed.header_values("x-attachment")[0].startswith("Übersicht_Dezember.exe")


def test_fold_refuses_injection():
    assert fold("X-A", "one\r\nBcc: evil@x") == b"X-A: one Bcc: evil@x\r\n"
    with pytest.raises(ValueError):
        fold("Bad Name", "x")
    with pytest.raises(ValueError):
        fold("X-A:\r\nBcc", "x")


def test_remove_headers_drops_fields_with_continuations():
    out = remove_headers(MESSAGE, ["X-Spam-*"])
    assert out == (b"Received: from x\r\n\tby y\r\n"
                   b"From: a@example.net\r\n"
                   b"Subject: s\r\n"
                   b"\r\n"
                   b"X-Spam-Flag: NO in the body stays\r\n")


def test_remove_headers_by_exact_name_and_nothing_to_remove():
    out = remove_headers(MESSAGE, ["x-spam-flag"])
    assert b"X-Spam-Flag: NO\r\n" not in out.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"X-Spam-Status" in out
    same = remove_headers(MESSAGE, ["X-Nothing"])
    assert same is MESSAGE


def test_remove_then_add_roundtrip_is_byte_exact_elsewhere():
    cleaned = remove_headers(MESSAGE, ["X-Spam-*"])
    out = add_headers(cleaned, [("X-Spam-Flag", "YES")])
    assert out[len(b"X-Spam-Flag: YES\r\n"):] == cleaned


def test_normalize_newlines():
    assert normalize_newlines(b"a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\nd"
    assert normalize_newlines(b"a\nb") == b"a\r\nb"
    assert normalize_newlines(b"a\r\n") == b"a\r\n"


def test_remove_headers_reads_the_block_as_parse_does():
    """A junk line does not hide the field after it (and goes with it); a
    body without a blank line is never edited."""
    data = b"From: a@x.org\r\nnot a header\r\nX-Spam-Flag: NO\r\n\r\nbody\r\n"
    assert parse(data).header_values("X-Spam-Flag") == ["NO"]
    assert remove_headers(data, ["X-Spam-*"]) == b"From: a@x.org\r\n\r\nbody\r\n"

    data = b"From: a@x.org\r\nbody line\r\nmore body\r\nX-Spam-Flag: NO\r\n"
    assert parse(data).header_values("X-Spam-Flag") == []
    assert remove_headers(data, ["X-Spam-*"]) == data
