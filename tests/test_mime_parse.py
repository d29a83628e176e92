"""core.mime.parse on many shapes of message: structure, decoding, defects."""

from __future__ import annotations

import base64
import binascii

import pytest

from core.mime import Limits, addresses, charsets, params, parse, sniff, transfer, words
from core.mime.limits import DEFAULT


def msg(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def multipart(boundary: str, *parts: str, ctype: str = "multipart/mixed",
              close: bool = True) -> str:
    out = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return out + (f"--{boundary}--\r\n" if close else "")


def test_single_text_part():
    parsed = parse(msg("From: A <a@example.net>", "Subject: hi",
                       "Message-ID: <1@x>", body="hello\r\n"))
    assert not parsed.malformed
    assert parsed.subject == "hi"
    assert parsed.message_id == "<1@x>"
    assert parsed.from_addresses == ["a@example.net"]
    [part] = parsed.parts
    assert part.path == "" and part.content_type == "text/plain"
    assert part.text == "hello\r\n"
    assert parsed.text_parts == ["hello\r\n"]


def test_multipart_alternative_with_attachment():
    pdf = base64.b64encode(b"%PDF-1.4 test").decode()
    body = multipart(
        "outer",
        "Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
        + multipart("inner", "Content-Type: text/plain\r\n\r\nplain",
                    "Content-Type: text/html\r\n\r\n<p>html</p>"),
        "Content-Type: application/pdf; name=a.pdf\r\n"
        "Content-Disposition: attachment; filename=\"a.pdf\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + pdf)
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=\"outer\"",
                       body=body))
    assert not parsed.malformed, parsed.malformed_reason
    assert [p.path for p in parsed.parts] == ["1.1", "1.2", "2"]
    assert parsed.text_parts == ["plain"]
    assert parsed.html_parts == ["<p>html</p>"]
    [att] = parsed.attachments
    assert att.filename == "a.pdf" and att.disposition == "attachment"
    assert att.payload == b"%PDF-1.4 test"
    assert att.detected_type == "application/pdf"
    assert att.text is None


def test_boundary_prefix_of_a_longer_one_is_not_a_delimiter():
    body = multipart("ab", "Content-Type: text/plain\r\n\r\nx\r\n--abc\r\ny")
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=ab", body=body))
    assert [p.text for p in parsed.parts] == ["x\r\n--abc\r\ny"]


def test_missing_close_delimiter_is_a_defect_not_malformed():
    body = multipart("b", "Content-Type: text/plain\r\n\r\nx", close=False)
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=b", body=body))
    assert not parsed.malformed
    assert any(d.startswith("missing-close-boundary") for d in parsed.defects)


def test_multipart_without_boundary_is_malformed_and_kept_whole():
    parsed = parse(msg("From: a@example.net", "Content-Type: multipart/mixed",
                       body="--x\r\n\r\nhidden\r\n"))
    assert parsed.malformed
    assert "without boundary" in parsed.malformed_reason
    assert parsed.parts and b"hidden" in parsed.parts[0].payload


def test_boundary_not_in_body_is_malformed():
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=zzz",
                       body="--other\r\n\r\nx\r\n"))
    assert parsed.malformed


def test_default_type_in_digest_is_message_rfc822():
    inner = "From: b@example.org\r\nSubject: inner\r\n\r\ninner text"
    body = multipart("d", "\r\n" + inner)
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/digest; boundary=d", body=body))
    [part] = parsed.parts
    assert part.in_rfc822 and part.text == "inner text"
    # Headers of an attached message are not top-level headers.
    assert parsed.header_values("subject") == []


def test_message_rfc822_base64_encoded_is_decoded():
    inner = base64.b64encode(b"Subject: x\r\n\r\nsecret").decode()
    body = multipart("b", "Content-Type: message/rfc822\r\n"
                          "Content-Transfer-Encoding: base64\r\n\r\n" + inner)
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=b", body=body))
    assert [p.text for p in parsed.parts] == ["secret"]
    assert any(d.startswith("encoded-message-rfc822") for d in parsed.defects)


def test_limits_depth_parts_header_and_decoded_size():
    small = Limits(max_depth=3, max_parts=5, max_header_block=200,
                   max_decoded_bytes=100)
    nested = "".join(f"--n{i}\r\nContent-Type: multipart/mixed; boundary=n{i + 1}"
                     f"\r\n\r\n" for i in range(10))
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=n0",
                       body=nested), small)
    assert parsed.malformed and "nesting deeper than 3" in parsed.malformed_reason

    body = multipart("p", *["\r\nx"] * 20)
    parsed = parse(msg("From: a@example.net",
                       "Content-Type: multipart/mixed; boundary=p", body=body), small)
    assert parsed.malformed and "more than 5 parts" in parsed.malformed_reason

    parsed = parse(msg("From: a@example.net", "X-Long: " + "a" * 300), small)
    assert parsed.malformed and "header block" in parsed.malformed_reason

    parsed = parse(msg("From: a@example.net", body="x" * 500), small)
    assert parsed.malformed and "decoded size" in parsed.malformed_reason


def test_text_is_capped():
    limits = Limits(max_text_chars=10)
    parsed = parse(msg("From: a@example.net", body="y" * 100), limits)
    assert parsed.parts[0].text == "y" * 10
    assert "text-truncated" in parsed.parts[0].defects
    assert not parsed.malformed


def test_mbox_from_line_is_skipped_and_lf_line_ends_work():
    parsed = parse(b"From someone@x Mon Jan  1 00:00:00 2002\n"
                   b"From: a@example.net\nSubject: lf\n\nbody\n")
    assert parsed.subject == "lf"
    assert parsed.parts[0].text == "body\n"
    assert not any(d.startswith("bare-lf") for d in parsed.defects)


def test_header_without_body_and_empty_input():
    assert parse(b"").parts[0].payload == b""
    parsed = parse(b"Subject: only headers")
    assert parsed.subject == "only headers"
    assert "no-from" in parsed.defects


def test_missing_blank_line_starts_the_body():
    parsed = parse(b"From: a@example.net\r\nSubject: s\r\nno colon here\r\n"
                   b"second body line\r\n")
    assert parsed.subject == "s"
    assert "missing-header-separator" in parsed.defects
    assert parsed.parts[0].text.startswith("no colon here")


def test_duplicate_transfer_encodings_are_malformed():
    parsed = parse(msg("From: a@example.net", "Content-Transfer-Encoding: base64",
                       "Content-Transfer-Encoding: quoted-printable", body="aGk="))
    assert parsed.malformed


def test_unknown_disposition_counts_as_attachment():
    parsed = parse(msg("From: a@example.net", "Content-Disposition: attachement",
                       body="x"))
    assert parsed.parts[0].disposition == "attachment"


@pytest.mark.parametrize("raw, expected", [
    (b"=?utf-8?q?caf=C3=A9?=", "café"),
    (b"=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé"),
    # A letter split across two words is joined before decoding.
    (b"=?utf-8?B?ww==?= =?utf-8?B?qQ==?=", "é"),
    (b"=?utf-8*de?Q?x?=", "x"),
    (b"=?iso-8859-1?q?caf=E9?=", "café"),
    (b"plain \xe9t\xe9", "plain été"),
    (b"=?no-such?Q?ok?=", "ok"),
])
def test_subject_decoding(raw, expected):
    parsed = parse(b"From: a@example.net\r\nSubject: " + raw + b"\r\n\r\n")
    assert parsed.subject == expected


def test_no_surrogates_anywhere():
    raw = (b"From: \xff\xfe <a@example.net>\r\nSubject: \xed\xa0\x80 \x80\r\n"
           b"Content-Type: text/plain; charset=utf-7\r\n\r\n+2D0- \xff")
    parsed = parse(raw)
    for _, value in parsed.headers:
        value.encode("utf-8")
    parsed.parts[0].text.encode("utf-8")


@pytest.mark.parametrize("text, expected", [
    ("a@example.net", ["a@example.net"]),
    ("A <a@Example.NET>", ["a@example.net"]),
    ('"Doe, J" <j@x.org>, k@y.org (K)', ["j@x.org", "k@y.org"]),
    ("J. Q. Public <jqp@x.org>", ["jqp@x.org"]),
    ('"a b"@x.org', ['"a b"@x.org']),
    ("<@relay.x:u@h.org>", ["u@h.org"]),
])
def test_address_parser_accepts(text, expected):
    assert addresses.parse_mailbox_list(text) == expected


@pytest.mark.parametrize("text", [
    "payroll@example.com)<collector@example.net>",
    "audit@example.com(<collector@example.net>",
    "collector@example.net@example.com",
    "a@example.com <b@example.net>",
    "group: a@x.org;",
    "", "<>", "a@", "@x.org", "a@x..org", "a@x.org,",
    "(" * 50 + "a@x.org",
])
def test_address_parser_refuses(text):
    with pytest.raises(addresses.AddressError):
        addresses.parse_mailbox_list(text)


def test_charset_aliases_and_refused_codecs():
    assert charsets.codec_for("uft-8") == "utf-8"
    assert charsets.codec_for("iso-8859-8-i") == "iso8859-8"
    for bad in ("idna", "base64", "rot13", "zlib", "1", "x" * 100, "punycode"):
        assert charsets.codec_for(bad) == ""
    text, defect = charsets.decode(b"\x80\x81abc", "utf-8")
    assert text == "€\x81abc" and not defect


def test_words_never_raise_on_garbage():
    for value in ("=?", "=??Q??=", "=?utf-8?B?====?=", "=?utf-8?Q?=?=",
                  "=?" * 1000, "=?a?b?" + "x" * 10000 + "?="):
        text, _ = words.decode_words(value)
        text.encode("utf-8")


def test_rfc2231_sections_joined_in_order():
    head = params.parse("attachment; filename*1=b.exe; filename*0*=utf-8''%C3%A4",
                        DEFAULT)
    assert head.get("filename") == "äb.exe"
    assert any("out-of-order" in d for d in head.defects) is False


def test_parameter_limits():
    head = params.parse("x/y" + "; a=b" * 5000, DEFAULT)
    assert head.malformed
    head = params.parse('x/y; name="' + "a" * 70000 + '"', DEFAULT)
    assert head.malformed


@pytest.mark.parametrize("data, expected", [
    (b"\x7fELF\x02\x01", "application/x-executable"),
    (b"MZ\x90\x00", "application/x-dosexec"),
    (b"%PDF-1.7", "application/pdf"),
    (b"PK\x03\x04" + b"\0" * 26 + b"[Content_Types].xml word/document.xml",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (b"PK\x03\x04" + b"\0" * 40, "application/zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff\xe0", "image/jpeg"),
    (b"GIF89a", "image/gif"),
    (b"  <!DOCTYPE html><html>", "text/html"),
    (b"Rar!\x1a\x07\x00", "application/x-rar"),
    (b"hello world", ""),
])
def test_sniff_table(data, expected):
    assert sniff.sniff(data) == expected


def test_type_mismatch_only_for_binary_content():
    assert sniff.mismatch("image/png", "application/x-dosexec")
    assert not sniff.mismatch("application/octet-stream", "application/x-dosexec")
    assert not sniff.mismatch("image/jpeg", "image/png")
    assert not sniff.mismatch("application/msword", "application/zip")
    assert not sniff.mismatch("text/plain", "text/html")


@pytest.mark.parametrize("data, expected", [
    (b"aGVsbG8=", b"hello"),
    (b"aGVs\r\nbG8=\r\n", b"hello"),
    (b"aGVsbG8", b"hello"),
    (b"aGk=aGk=", b"hihi"),
    (b"a note\r\naGVsbG8=\r\n", b"hello"),
    (b"aGVsbG8=x", b"hello"),
    (b"", b""),
])
def test_lenient_base64(data, expected):
    assert transfer.decode_base64(data)[0] == expected


def test_qp_and_uu():
    assert transfer.decode_qp(b"caf=C3=A9 =\r\nx =ZZ")[0] == b"caf\xc3\xa9 x =ZZ"
    uu = b"begin 644 a.txt\n%:&5L;&\\`\n`\nend\n"
    assert transfer.decode_uu(uu)[0] == b"hello"
    assert transfer.decode(b"x", "x-weird")[1]


def test_one_huge_header_line_is_cut_and_malformed():
    parsed = parse(b"Subject: " + b"x" * 1_000_000 + b"\r\n\r\nbody")
    assert parsed.malformed and "header field over" in parsed.malformed_reason
    assert len(parsed.subject) <= DEFAULT.max_field_bytes


def test_uuencoded_file_in_text_body_becomes_a_part():
    exe = b"MZ" + b"\x90" * 60
    lines = b"".join(binascii.b2a_uu(exe[i:i + 45]) for i in range(0, len(exe), 45))
    body = (b"see attached\r\n\r\nbegin 644 invoice.exe\r\n"
            + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n")
    parsed = parse(b"From: a@example.net\r\n\r\n" + body)
    text, uu = parsed.parts
    assert text.text.startswith("see attached")
    assert uu.path == "uu1" and uu.filename == "invoice.exe"
    assert uu.payload == exe and uu.detected_type == "application/x-dosexec"
    assert "uuencoded-in-text" in uu.defects
    assert parsed.attachments == [uu]
