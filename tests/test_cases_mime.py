"""The shared cases about headers, MIME structure, encodings, viruses and parser
DoS, checked at the level of core.mime and the clamd scanner.

Each test feeds the case's input.eml to ``parse`` (and the scanner where the
case carries EICAR) and checks what the case says a correct gateway must do.
Time bounds are hang guards taken from the cases, not benchmarks.
"""

from __future__ import annotations

import time

import pytest

from core import config
from core.filters.virus import VirusScanner
from core.mime import add_headers, normalize_newlines, parse
from tests.support import paths
from tests.support.clamd import EICAR

ADDED = [("X-Spam-Status", "No, score=0.0 required=3.0 tests=NONE"),
         ("X-Spam-Flag", "NO")]


def case_input(number: str) -> bytes:
    folder = paths.case(number) if paths.CASES.is_dir() else None
    if folder is None:
        pytest.skip(f"cases not found under {paths.CASES}")
    return (folder / "input.eml").read_bytes()


def timed_parse(data: bytes, limit: float = 2.0):
    started = time.monotonic()
    parsed = parse(data)
    took = time.monotonic() - started
    assert took < limit, f"parse took {took:.2f} s, the case allows {limit} s"
    return parsed


def assert_utf8_clean(parsed) -> None:
    for _, value in parsed.headers:
        value.encode("utf-8")
    for part in parsed.parts:
        part.filename.encode("utf-8")
        if part.text is not None:
            part.text.encode("utf-8")
    for defect in parsed.defects:
        defect.encode("utf-8")


def assert_edit_is_exact(data: bytes) -> None:
    """add_headers changes nothing but the added lines (no re-serialising)."""
    started = time.monotonic()
    out = add_headers(data, ADDED)
    assert time.monotonic() - started < 2.0
    top = b"".join(f"{n}: {v}\r\n".encode() for n, v in ADDED)
    assert out == top + data


@pytest.fixture
def scanner(clamd_running):
    settings = config.load().replace(clamd=clamd_running.setting, clamd_timeout=10,
                                     clamd_stream_max=clamd_running.stream_max)
    return VirusScanner(settings)


def part_named(parsed, name: str):
    matches = [p for p in parsed.parts if p.filename == name]
    assert matches, [p.filename for p in parsed.parts]
    return matches[0]


@pytest.mark.case("003")
def test_003_bare_lf_in_header_counts_the_same_fields_as_relayed():
    """A bare LF in Subject and a bare CR in X-Reference hide Reply-To/Bcc
    from a CRLF-only reader: both are named, and after normalising, the
    parser sees exactly the header fields the relayed copy has."""
    data = case_input("003")
    parsed = timed_parse(data)
    assert any(d.startswith("bare-lf") for d in parsed.defects)
    assert any(d.startswith("bare-cr") for d in parsed.defects)

    relayed = add_headers(normalize_newlines(data), ADDED)
    assert b"\r" not in relayed.replace(b"\r\n", b"")
    assert b"\n" not in relayed.replace(b"\r\n", b"")
    head = relayed.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    relayed_fields = [line for line in head if line[:1] not in (b" ", b"\t")]
    assert len(timed_parse(relayed).headers) == len(relayed_fields)


@pytest.mark.case("017")
def test_017_duplicate_from_is_malformed_and_both_values_seen():
    """Two From and two Subject fields: 'first wins' in the scanner against
    'last wins' in the client is a spoof; both values must be visible and
    the message must not pass as clean."""
    parsed = timed_parse(case_input("017"))
    assert parsed.malformed
    assert any(d.startswith("duplicate-from") for d in parsed.defects)
    assert any(d.startswith("duplicate-subject") for d in parsed.defects)
    assert parsed.from_addresses == ["payroll@example.com", "payroll@example.net"]
    assert len(parsed.header_values("From")) == 2
    assert len(parsed.header_values("Subject")) == 2


@pytest.mark.case("019")
def test_019_paren_confusion_lists_no_from_address():
    """``payroll@example.com)<collector@example.net>``: legacy parseaddr
    returns the trusted address; the strict parser lists none and names it."""
    parsed = timed_parse(case_input("019"))
    assert parsed.from_addresses == []
    assert any(d.startswith("invalid-from") for d in parsed.defects)


@pytest.mark.case("020")
def test_020_double_at_lists_no_from_address():
    """``collector@example.net@example.com``: a split on the last @ would
    trust example.com; the address is invalid and not listed."""
    parsed = timed_parse(case_input("020"))
    assert parsed.from_addresses == []
    assert any("second @" in d for d in parsed.defects if d.startswith("invalid-from"))


@pytest.mark.case("021")
def test_021_unindented_boundary_recovered_and_malformed():
    """``boundary=`` on an unindented line: the stdlib sees no boundary and
    no attachment. We join it as lenient clients do, so the .exe is seen,
    and mark the message malformed."""
    parsed = timed_parse(case_input("021"))
    assert parsed.malformed
    exe = part_named(parsed, "scan_1203.exe")
    assert exe.detected_type == "application/x-dosexec"


@pytest.mark.case("023")
def test_023_nul_bytes_named_and_the_rest_still_scanned(scanner):
    """NUL in Subject and body: nothing may stop at the NUL; the EICAR part
    after it is found."""
    data = case_input("023")
    parsed = timed_parse(data)
    assert any(d.startswith("nul-bytes") for d in parsed.defects)
    assert "overdue" in parsed.subject and "\x00" not in parsed.subject
    assert "Everything after the NUL" in parsed.parts[0].text
    assert part_named(parsed, "tool.com").payload == EICAR
    assert scanner.scan(data, parsed).infected


@pytest.mark.case("024")
def test_024_raw_8bit_headers_never_leak_surrogates():
    """Latin-1 From, broken UTF-8 Subject, raw UTF-8 filename: surrogates in
    str values explode later in logs, JSON and the database."""
    data = case_input("024")
    parsed = timed_parse(data)
    assert_utf8_clean(parsed)
    assert parsed.from_addresses == ["joerg@example.net"]
    exe = part_named(parsed, "Übersicht_Dezember.exe")
    assert exe.filename.endswith(".exe")
    out = add_headers(data, [("X-Portcullis-Attachment", exe.filename)])
    assert out[:out.index(b"From:")].isascii()
    assert out.endswith(data)


@pytest.mark.case("025")
def test_025_bad_charsets_decode_what_they_can():
    """idna, unknown, typo and numeric charsets, broken base64 and Q: no
    error escapes, ``uft-8`` still reads URGENT, the relayed Subject bytes
    stay as they were."""
    data = case_input("025")
    parsed = timed_parse(data, 1.0)
    assert_utf8_clean(parsed)
    assert "URGENT" in parsed.subject
    assert parsed.from_addresses == ["accounts@example.net"]
    assert parsed.parts[0].text.startswith("Quarterly report text.")
    assert_edit_is_exact(data)


@pytest.mark.case("031")
def test_031_duplicate_boundary_is_malformed_and_eicar_found(scanner):
    """``boundary="outer-A"; boundary="outer-B"``: split by A it is harmless
    text, by B it carries EICAR. Both readings are parsed, it is malformed,
    and the scanner finds the virus."""
    data = case_input("031")
    parsed = timed_parse(data)
    assert parsed.malformed and "ambiguous boundary" in parsed.malformed_reason
    assert part_named(parsed, "tool.com").payload == EICAR
    assert scanner.scan(data, parsed).infected


@pytest.mark.case("034")
def test_034_nesting_bomb_hits_the_depth_limit(scanner):
    """1200 nested multiparts: the stdlib raises RecursionError. We stop at
    the depth limit in time, mark it malformed, and clamd still answers."""
    data = case_input("034")
    parsed = timed_parse(data)
    assert parsed.malformed and "nesting deeper" in parsed.malformed_reason
    scanner.scan(data, parsed)
    assert_edit_is_exact(data)


@pytest.mark.case("035")
def test_035_rfc822_chain_edit_needs_no_reserialising():
    """300 nested message/rfc822: the stdlib dies in as_bytes() after the
    checks; adding our headers touches no nesting, the rest is byte-exact."""
    data = case_input("035")
    parsed = timed_parse(data)
    assert parsed.malformed or parsed.parts
    assert any(d.startswith("nested-message") for d in parsed.defects)
    assert_edit_is_exact(data)


@pytest.mark.case("036")
def test_036_many_parts_is_malformed_and_the_tail_is_scanned(scanner):
    """30,000 empty parts then EICAR: a part limit must not leave the tail
    unscanned; the message is malformed and the raw scan finds EICAR."""
    data = case_input("036")
    parsed = timed_parse(data)
    assert parsed.malformed and "parts" in parsed.malformed_reason
    assert len(parsed.parts) <= 1000
    assert scanner.scan(data, parsed).infected


@pytest.mark.case("037")
def test_037_junk_line_after_part_headers_is_skipped(scanner):
    """A junk line ends the part's headers: the stdlib decodes it into the
    base64 and the EICAR becomes garbage. We skip it as Office does."""
    data = case_input("037")
    parsed = timed_parse(data)
    part = part_named(parsed, "order.com")
    assert part.payload == EICAR
    assert "junk-header-line" in part.defects
    assert scanner.scan(data, parsed).infected


@pytest.mark.case("040")
def test_040_eicar_inline_in_forwarded_message(scanner):
    """EICAR as the inline text/plain body of an attached message/rfc822;
    its ``X-Spam-Flag: NO`` is not a top-level header."""
    data = case_input("040")
    parsed = timed_parse(data)
    inner = [p for p in parsed.parts if p.in_rfc822 and p.payload == EICAR]
    assert inner and inner[0].content_type == "text/plain"
    assert parsed.header_values("X-Spam-Flag") == []
    result = scanner.scan(data, parsed)
    assert result.infected


@pytest.mark.case("041")
def test_041_base64_chunked_padding_decoded_like_clients(scanner):
    """``WDU=TyE=...``: decoders that stop at the first '=' see 'X5'; we go
    on like the clients, name the oddity, and the EICAR file is found."""
    data = case_input("041")
    parsed = timed_parse(data)
    part = part_named(parsed, "tool.com")
    assert part.payload == EICAR
    assert "base64-padding-inside" in part.defects
    assert scanner.scan(data, parsed).infected


@pytest.mark.case("043")
def test_043_qp_artifacts_in_part_headers(scanner):
    """``name=3D"Bestellung_7781.doc"``: the stdlib reads '3D'; we read the
    name, name the artefact, and scan regardless of the name."""
    data = case_input("043")
    parsed = timed_parse(data)
    part = part_named(parsed, "Bestellung_7781.doc")
    assert "qp-artifact-in-header" in part.defects
    assert parsed.parts[0].charset == "iso-8859-1"
    assert scanner.scan(data, parsed).infected


@pytest.mark.case("060")
def test_060_long_parameter_name_no_refolding_hang():
    """A 200-character parameter name hangs the stdlib folder on
    as_bytes(); our edit leaves that header as it came."""
    data = case_input("060")
    parsed = timed_parse(data)
    assert part_named(parsed, "report.pdf").detected_type == "application/pdf"
    assert_edit_is_exact(data)


@pytest.mark.case("061")
def test_061_semicolon_stuffing_parsed_linearly():
    """``text/plain`` plus 30,000 ';': quadratic in the stdlib (seconds);
    linear here, read as text/plain with the stuffing named."""
    data = case_input("061")
    parsed = timed_parse(data)
    [part] = parsed.parts
    assert part.content_type == "text/plain"
    assert part.text.startswith("hello")
    assert any(d.startswith("stray-semicolons") for d in part.defects)
    assert_edit_is_exact(data)


# The attachment and archive cases are checked by later filters; here only
# that the parts carry the names and types those filters need.

@pytest.mark.case("027")
def test_027_rfc2231_mixed_sections_give_the_scr_name():
    """Encoded, encoded, plain sections join to ``scan_0415.scr``."""
    part = part_named(timed_parse(case_input("027")), "scan_0415.scr")
    assert part.filenames == ["scan_0415.scr"]


@pytest.mark.case("029")
def test_029_rtlo_filename_keeps_logical_order():
    """RFC 2231 and RFC 2047 forms of ``Scan_2026<RLO>fdp.exe`` agree."""
    parsed = timed_parse(case_input("029"))
    [part] = [p for p in parsed.parts if p.filename]
    assert part.filename == "Scan_2026\u202efdp.exe"
    assert part.filenames == [part.filename]
    assert part.detected_type == "application/x-dosexec"


@pytest.mark.case("030")
def test_030_many_rfc2231_sections_keep_the_extension():
    """3001 sections reassembled linearly, the final ``.exe`` not lost."""
    parsed = timed_parse(case_input("030"), 1.0)
    [part] = [p for p in parsed.parts if p.filename]
    assert part.filename.endswith(".exe") and len(part.filename) == 6004


@pytest.mark.case("038")
def test_038_single_part_attachment_is_an_attachment():
    """A non-multipart text/html body with a filename is an attachment."""
    parsed = timed_parse(case_input("038"))
    [part] = parsed.attachments
    assert part.filename == "Remittance_Advice.html"
    assert part.detected_type == "text/html"


@pytest.mark.case("039")
def test_039_declared_png_detected_as_executable():
    """``image/png`` whose bytes are a PE: the magic wins, the mismatch is named."""
    part = part_named(timed_parse(case_input("039")), "logo.png")
    assert part.detected_type == "application/x-dosexec"
    assert any(d.startswith("type-mismatch") for d in part.defects)


@pytest.mark.case("044")
@pytest.mark.case("046")
@pytest.mark.case("049")
@pytest.mark.parametrize("number, names", [
    ("044", ["report.zip"]),
    ("046", ["invoice_0420.zip", "readme.zip"]),
    ("049", ["Rechnungen.zip"]),
])
def test_zip_cases_give_zip_parts(number, names):
    """The archive filters get the zip bytes, their names and the zip type."""
    parsed = timed_parse(case_input(number))
    zips = [p for p in parsed.parts if p.detected_type == "application/zip"]
    assert [p.filename for p in zips] == names
    assert all(p.payload.startswith(b"PK\x03\x04") for p in zips)
