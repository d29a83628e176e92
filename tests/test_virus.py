"""VirusScanner against a real clamd (tests/support/clamd.py)."""

from __future__ import annotations

import base64
import io
import socket
import zipfile

import pytest

from core import config
from core.filters.virus import (
    MAX_STREAMS,
    ScannerUnavailable,
    VirusScanner,
    parse_address,
)
from core.mime import parse
from tests.support.clamd import EICAR, HDB_NAME, Clamd


def _settings(setting: str, **more) -> config.Settings:
    more.setdefault("clamd_timeout", 5)
    return config.load().replace(clamd=setting, **more)


def _mail(*parts: tuple[str, bytes]) -> bytes:
    out = [b"From: a@example.net\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"]
    for name, payload in parts:
        encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
        out.append(b"--b\r\nContent-Type: application/octet-stream; name=\""
                   + name.encode() + b"\"\r\nContent-Transfer-Encoding: base64"
                   b"\r\n\r\n" + encoded)
    out.append(b"--b--\r\n")
    return b"".join(out)


def _zip(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, payload)
    return buf.getvalue()


@pytest.fixture(params=["unix", "tcp"])
def scanner(request, clamd_running):
    setting = clamd_running.setting if request.param == "unix" \
        else clamd_running.tcp_setting
    return VirusScanner(_settings(setting, clamd_stream_max=clamd_running.stream_max))


def test_ping_and_version(scanner):
    assert scanner.ping() is True
    assert scanner.version().startswith("ClamAV")


def test_clean_message(scanner):
    data = _mail(("a.txt", b"nothing to see"))
    result = scanner.scan(data, parse(data))
    assert not result.infected and result.name == ""
    assert result.scanned_bytes >= len(data)


def test_eicar_plain_attachment(scanner):
    data = _mail(("eicar.com", EICAR))
    result = scanner.scan(data, parse(data))
    assert result.infected
    assert "Eicar" in result.name or "EICAR" in result.name.upper()


def test_eicar_raw_without_parse(scanner):
    result = scanner.scan(EICAR)
    assert result.infected and result.where == "message"


def test_eicar_in_deflated_zip(scanner):
    """Deflated, the EICAR bytes are not in the stream: only unpacking finds them."""
    data = _mail(("files.zip", _zip("eicar.com", EICAR)))
    assert EICAR not in data
    result = scanner.scan(data, parse(data))
    assert result.infected and "Eicar" in result.name


def test_md5_signature_alone(tmp_path, clamd):
    """The .hdb line by itself detects EICAR (the .ndb one usually answers first)."""
    only_md5 = Clamd(clamd.program, tmp_path)
    (tmp_path / "db" / "test.ndb").unlink()
    only_md5.start()
    try:
        scanner = VirusScanner(_settings(only_md5.setting))
        data = _mail(("files.zip", _zip("eicar.com", EICAR)))
        result = scanner.scan(data, parse(data))
        assert result.infected and result.name.startswith(HDB_NAME)
    finally:
        only_md5.close()


def test_eicar_in_nested_message_rfc822(scanner):
    inner = (b"From: b@example.org\r\nContent-Type: text/plain\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes(EICAR).replace(b"\n", b"\r\n"))
    data = (b"From: a@example.net\r\nContent-Type: multipart/mixed; boundary=o\r\n"
            b"\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner
            + b"\r\n--o--\r\n")
    parsed = parse(data)
    assert parsed.parts[0].in_rfc822
    result = scanner.scan(data, parsed)
    assert result.infected


def test_eicar_base64_with_chunked_padding(scanner):
    chunked = b"".join(base64.b64encode(EICAR[i:i + 2]) for i in range(0, 68, 2))
    data = (b"From: a@example.net\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + chunked + b"\r\n")
    parsed = parse(data)
    assert parsed.parts[0].payload == EICAR
    result = scanner.scan(data, parsed)
    assert result.infected and result.where == "body"


def test_identical_leaves_are_sent_once(scanner):
    data = _mail(*[(f"f{i}.bin", b"same bytes") for i in range(10)])
    result = scanner.scan(data, parse(data))
    assert result.streams == 2


def test_many_big_leaves_on_one_connection(scanner):
    """More leaves than MAX_STREAMS, 256 KiB each: pipelined, no stall."""
    parts = [(f"f{i}.bin", bytes([i]) * 64 * 1024) for i in range(MAX_STREAMS + 8)]
    parts.append(("last.com", EICAR))
    data = _mail(*parts)
    result = scanner.scan(data, parse(data))
    assert result.streams == MAX_STREAMS + 1
    assert "only" in result.unscanned
    assert result.infected and result.where == "message"


def test_message_over_limit_still_scans_every_leaf(clamd_running):
    scanner = VirusScanner(_settings(clamd_running.setting,
                                     clamd_stream_max=clamd_running.stream_max))
    parts = [(f"f{i}.txt", bytes([65 + i]) * 1024 * 1024) for i in range(4)]
    data = _mail(*parts, ("last.com", EICAR))
    assert len(data) > clamd_running.stream_max
    result = scanner.scan(data, parse(data))
    assert "StreamMaxLength" in result.unscanned
    assert result.infected and result.where == "5"


def test_stream_over_limit_is_reported_unscanned(clamd_running):
    scanner = VirusScanner(_settings(clamd_running.setting,
                                     clamd_stream_max=clamd_running.stream_max))
    big = b"From: a@example.net\r\n\r\n" + b"x" * (clamd_running.stream_max + 10)
    result = scanner.scan(big, None)
    assert not result.infected
    assert "StreamMaxLength" in result.unscanned


def test_clamd_down_raises_scanner_unavailable(clamd_running):
    scanner = VirusScanner(_settings(clamd_running.setting))
    clamd_running.stop()
    try:
        with pytest.raises(ScannerUnavailable):
            scanner.scan(EICAR)
        with pytest.raises(ScannerUnavailable):
            scanner.ping()
    finally:
        clamd_running.start()
    assert scanner.scan(EICAR).infected


def test_nothing_listening_raises(tmp_path):
    scanner = VirusScanner(_settings(f"unix:{tmp_path / 'none.sock'}"))
    with pytest.raises(ScannerUnavailable):
        scanner.scan(b"x")


def test_clamd_error_answer_raises(tmp_path, clamd):
    """clamd refuses a stream over its own StreamMaxLength with an ERROR line."""
    strict = Clamd(clamd.program, tmp_path, stream_max=1024)
    strict.start()
    try:
        scanner = VirusScanner(_settings(strict.tcp_setting,
                                         clamd_stream_max=1024 * 1024))
        with pytest.raises(ScannerUnavailable):
            scanner.scan(b"y" * 100_000)
    finally:
        strict.close()


def test_a_server_that_is_not_clamd(tmp_path):
    path = str(tmp_path / "fake.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        scanner = VirusScanner(_settings(f"unix:{path}", clamd_timeout=0.5))
        with pytest.raises(ScannerUnavailable):
            scanner.scan(b"x")


@pytest.mark.parametrize("text, expected", [
    ("unix:/run/clamd.sock", (socket.AF_UNIX, "/run/clamd.sock")),
    ("/run/clamd.sock", (socket.AF_UNIX, "/run/clamd.sock")),
    ("127.0.0.1:3310", (socket.AF_INET, ("127.0.0.1", 3310))),
    ("[::1]:3310", (socket.AF_INET6, ("::1", 3310))),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


def test_parse_address_refuses_garbage():
    with pytest.raises(ValueError):
        parse_address("clamd")


def test_started_scans_are_answered_in_any_order(scanner):
    """Several messages handed to clamd at once, answers read later, no thread."""
    infected = _mail(("e.com", EICAR))
    clean = _mail(("a.txt", b"nothing to see"))
    scans = [scanner.start(data, parse(data)) for data in (infected, clean, infected)]
    results = [scan.result() for scan in reversed(scans)]
    assert [r.infected for r in results] == [True, False, True]
    assert results[0].name.endswith(".UNOFFICIAL")
    assert scans[0].result() is results[2]  # read once, then kept


def test_start_without_clamd_raises_unavailable():
    scanner = VirusScanner(_settings("unix:/nonexistent/clamd.sock"))
    with pytest.raises(ScannerUnavailable):
        scanner.start(b"Subject: x\r\n\r\nbody\r\n")
