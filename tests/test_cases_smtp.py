"""The SMTP-dialogue cases of ../shared/cases, each against a fresh server.

Every test plays the case's session.txt with tests/support/casescript.py
(client address via PROXY v1) and then checks what its case.md asks of the
stored copy, because the stored bytes are what the gateway relays.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from core import config, db, tracking
from core.smtp.thread import ServiceThread
from core.spool import Spool
from tests.support import casescript
from tests.support.paths import CASES
from tests.support.system import free_port, need


def case_dir(number: str) -> Path:
    found = sorted(CASES.glob(f"{number}-*"))
    need(bool(found), f"case {number} in {CASES}")
    return found[0]


class CaseServer:
    def __init__(self, tmp_path: Path, **overrides):
        self.port = free_port()
        values = {
            "data_dir": str(tmp_path / "data"),
            "hostname": "mx.example.com",
            "smtp_listen_in": f"127.0.0.1:{self.port}",
            "smtp_listen_out": "",
            "relay_domains": "example.com",
            "trusted_networks": "",
            "proxy_protocol_networks": "127.0.0.1/32",
            # Short, but long enough for the pregreet test of case 006.
            "greet_pause": 0.2,
        }
        values.update(overrides)
        self.settings = config.load(environ={}, overrides=values)
        db.migrate(db.open_database(self.settings.database_url))
        self.spool = Spool(self.settings.data_dir, fsync=False)
        self.thread = ServiceThread(self.settings, self.spool).start()

    def play(self, number: str) -> casescript.Result:
        script = casescript.parse(case_dir(number))
        return casescript.run(script, "127.0.0.1", self.port, silence=0.5).check()

    def stored(self) -> list:
        return [self.spool.read("incoming", q) for q in self.spool.list("incoming")]

    def still_serving(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(casescript.proxy_v1_header("192.0.2.1", "127.0.0.1",
                                                    self.port))
            return sock.recv(100).startswith(b"220 ")

    def stop(self) -> None:
        self.thread.stop(2.0)
        tracking.flush()


@pytest.fixture
def server(tmp_path):
    started: list[CaseServer] = []

    def start(**overrides) -> CaseServer:
        started.append(CaseServer(tmp_path, **overrides))
        return started[-1]

    yield start
    for item in started:
        item.stop()


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def without_received(data: bytes) -> bytes:
    """The stored copy minus the one Received field the gateway prepended."""
    assert data.startswith(b"Received: ")
    match = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", data)
    return data[match.end():]


def no_bare_line_ends(data: bytes) -> bool:
    return data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")


@pytest.mark.case("001-smuggling-lf-dot-crlf")
def test_001_lf_dot_crlf_does_not_split(server):
    gw = server()
    gw.play("001")
    stored = gw.stored()
    assert len(stored) <= 1
    for envelope, data in stored:
        assert envelope.sender == "newsletter@example.net"
        assert b"Urgent: wire transfer today" in body_of(data)
        assert no_bare_line_ends(data)


@pytest.mark.case("001-smuggling-lf-dot-crlf")
def test_001_in_reject_mode(server):
    gw = server(bare_lf="reject")
    result = gw.play("001")
    assert [code for _, code, _ in result.replies][-2:] == ["550", "221"]
    assert gw.stored() == []


@pytest.mark.case("003-bare-lf-in-header")
def test_003_bare_lf_in_header_normalised(server):
    gw = server()
    gw.play("003")
    [(_, data)] = gw.stored()
    assert no_bare_line_ends(data)
    header = without_received(data).split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in header.split(b"\r\n")
             if line[:1] not in (b" ", b"\t")]
    # The bare LF made Reply-To a field of its own; the bare CR + space made
    # " Bcc" a continuation of X-Reference. The scanner sees what is relayed.
    assert names == [b"From", b"To", b"Subject", b"Reply-To", b"X-Reference",
                     b"Date", b"Message-ID"]


@pytest.mark.case("003-bare-lf-in-header")
def test_003_in_reject_mode(server):
    gw = server(bare_lf="reject")
    result = gw.play("003")
    assert "550 5.5.2" in result.replies[-2][2]
    assert gw.stored() == []


@pytest.mark.case("004-starttls-plaintext-injection")
def test_004_plaintext_after_starttls_is_discarded(server):
    gw = server()
    result = gw.play("004")
    codes = [code for _, code, _ in result.replies]
    assert codes == ["220", "250", "220", "250", "503", "250", "250", "221"]
    assert gw.stored() == []


@pytest.mark.case("006-pregreet-pipelining")
def test_006_early_talker_refused(server):
    gw = server()
    result = gw.play("006")
    assert "354" not in [code for _, code, _ in result.replies]
    assert result.replies[0][2].startswith("554 5.5.1")
    assert gw.stored() == []
    assert gw.still_serving()


@pytest.mark.case("007-binary-garbage-command")
def test_007_binary_garbage(server, caplog):
    gw = server()
    with caplog.at_level("INFO", logger="core.smtp.handler"):
        gw.play("007")
    assert gw.still_serving()
    bad = [r for r in caplog.records if "event=bad_command" in r.message]
    assert len(bad) == 2  # once per connection


@pytest.mark.case("008-data-line-too-long")
def test_008_long_line_refused_after_the_dot(server):
    gw = server(long_lines="reject")
    result = gw.play("008")
    dot_reply = result.replies[5]
    assert dot_reply[2].startswith("500 5.5.2")
    assert gw.stored() == []


@pytest.mark.case("008-data-line-too-long")
def test_008_long_line_accepted_whole_by_default(server):
    """A 4000-octet line is kept as one line: no command hides in its tail."""
    gw = server()
    result = gw.play("008")
    assert result.replies[5][2].startswith("250 ")
    [(envelope, data)] = gw.stored()
    lines = data.split(b"\r\n")
    longest = max(lines, key=len)
    assert len(longest) >= 4000
    assert sum(1 for line in lines if len(line) >= 4000) == 1
    assert not any(line.startswith(b"MAIL FROM") for line in lines)


@pytest.mark.case("009-size-declared-over-limit")
def test_009_size_declared_and_real(server):
    gw = server(max_message_size=10240)
    result = gw.play("009")
    assert "250-SIZE 10240" in result.replies[1][2]
    assert result.replies[2][2].startswith("552 5.3.4")
    assert result.replies[6][2].startswith("552 5.3.4")
    assert gw.stored() == []


@pytest.mark.case("011-rcpt-flood")
def test_011_recipient_limit(server):
    gw = server(max_recipients=250)
    result = gw.play("011")
    rcpt = [code for line, code, _ in result.replies][3:1003]
    assert rcpt[:100] == ["250"] * 100
    first_452 = rcpt.index("452")
    assert set(rcpt[first_452:]) == {"452"}
    [(envelope, _)] = gw.stored()
    assert envelope.recipients == [f"member{n:04d}@example.com"
                                   for n in range(first_452)]


@pytest.mark.case("012-mail-from-shell-metachar")
def test_012_shell_metacharacters(server):
    gw = server()
    result = gw.play("012")
    assert all(r[2].startswith("501 5.1.7") for r in result.replies[2:4])
    [(envelope, _)] = gw.stored()
    assert envelope.sender == "scanner@example.net"


@pytest.mark.case("013-quoted-local-part-roundtrip")
def test_013_quoting_kept_for_relay(server):
    gw = server()
    gw.play("013")
    [(envelope, _)] = gw.stored()
    assert envelope.sender == '"odd sender"@example.net'
    assert envelope.recipients == ['"john smith"@example.com', '"a@b"@example.com',
                                   '"local>part"@example.com']


@pytest.mark.case("014-source-route-and-postmaster")
def test_014_source_routes_stripped_postmaster_kept(server):
    gw = server()
    gw.play("014")
    [(envelope, data)] = gw.stored()
    assert envelope.sender == "sender@example.net"
    assert envelope.recipients == ["user@example.com", "postmaster@example.com"]
    assert b"@hop" not in data and b"@relay" not in data


@pytest.mark.case("016-long-local-part")
def test_016_long_local_part_relayed_unchanged(server):
    gw = server()
    gw.play("016")
    [(envelope, _)] = gw.stored()
    local = ("announce-confirm+6f1c9a0e2b7d4c8f9a1b3e5d7c9f0a2b4c6e8d0f1a2b3c4d5e6f"
             "7a8b")
    assert len(local) == 73
    assert envelope.recipients == [f"{local}@example.com"]


@pytest.mark.case("058-dot-stuffing-relay")
def test_058_dots_unstuffed_exactly_once(server):
    gw = server()
    gw.play("058")
    [(_, data)] = gw.stored()
    assert without_received(data) == (case_dir("058") / "input.eml").read_bytes()


def test_casescript_parses_every_case():
    """Every session.txt in the shared cases parses (other suites reuse it)."""
    need(CASES.is_dir(), f"cases in {CASES}")
    for path in sorted(CASES.glob("*/session.txt")):
        script = casescript.parse(path)
        kinds = [step.kind for step in script.steps]
        assert "connect" in kinds, path
        assert kinds.index("connect") <= kinds.index("expect"), path


def test_casescript_dot_stuffing():
    assert casescript.dot_stuff(b".a\r\nb\r\n..\r\n") == b"..a\r\nb\r\n...\r\n.\r\n"
    assert casescript.dot_stuff(b"no newline") == b"no newline\r\n.\r\n"
    assert casescript.decode_escapes(r"a\r\n\x00\\x") == b"a\r\n\x00\\x"
