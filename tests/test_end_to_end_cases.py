"""Cases from ../shared/cases whose check is on the downstream, run end to end.

Each case is played against the whole gateway (its session.txt, or the
cases README's default replay for input-only cases) with the recording
sink as the fake downstream and a real clamd; then the sink and the
quarantine show what got through.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import casescript, paths
from tests.support.clamd import clamd  # noqa: F401
from tests.support.gateway import Gateway
from tests.support.sink import Sink

CASES = paths.CASES

DEFAULT_REPLAY = """\
@connect peer=192.0.2.10
S: 220
C: EHLO client.example.net\\r\\n
S: 250
C: MAIL FROM:<sender@example.net>\\r\\n
S: 250
C: RCPT TO:<user@example.com>\\r\\n
S: 250
C: DATA\\r\\n
S: 354
@data {input}
S: 250|5xx
C: QUIT\\r\\n
S: 221
"""

_QUEUED = re.compile(r"queued as ([0-9A-F]{12,32})")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    server = Sink(tmp_path_factory.mktemp("sink")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, sink, clamd, dns_server):
    gw = Gateway(tmp_path_factory.mktemp("gateway"), sink.address,
                 clamd=clamd.setting, dns_port=dns_server.port)
    gw.start()
    yield gw
    gw.stop()


class Outcome:
    """What one case run left: replies, queue id, relayed copies, quarantine."""

    def __init__(self, result, qids, relayed, quarantined):
        self.result = result
        self.qids = qids
        self.relayed = relayed
        self.quarantined = quarantined

    @property
    def final_codes(self) -> list[str]:
        return [code for _line, code, text in self.result.replies
                if "queued as" in text or code.startswith("5")]


def play(gateway: Gateway, sink: Sink, tmp_path: Path, name: str) -> Outcome:
    folder = next(CASES.glob(f"{name}-*"))
    session = folder / "session.txt"
    if not session.exists():
        session = tmp_path / "session.txt"
        session.write_text(DEFAULT_REPLAY.format(input=folder / "input.eml"))
    before = {tx.number for tx in sink.transactions()}

    result = casescript.run(casescript.parse(session), "127.0.0.1", gateway.port_in,
                            peer_mode="xclient")
    result.check()

    qids = [m.group(1) for _l, _c, text in result.replies
            for m in [_QUEUED.search(text)] if m]
    assert gateway.wait_empty(30), gateway.queue()
    relayed = [tx for tx in sink.transactions() if tx.number not in before]
    quarantined = [qid for qid in qids if qid in gateway.quarantined()]
    return Outcome(result, qids, relayed, quarantined)


def _input(name: str) -> bytes:
    return (next(CASES.glob(f"{name}-*")) / "input.eml").read_bytes()


def _no_bare_line_ends(data: bytes) -> bool:
    return _BARE.search(data) is None


@pytest.mark.case("001")
def test_001_smuggling_relays_at_most_one_clean_copy(gateway, sink, tmp_path):
    out = play(gateway, sink, tmp_path, "001")

    assert len(out.relayed) <= 1
    assert all(tx.sender != "ceo@example.com" for tx in sink.transactions())
    for tx in out.relayed:
        assert tx.sender == "newsletter@example.net"
        assert b"Urgent: wire transfer today" in tx.data
        assert _no_bare_line_ends(tx.wire)


@pytest.mark.case("003")
def test_003_bare_lf_never_relayed(gateway, sink, tmp_path):
    out = play(gateway, sink, tmp_path, "003")

    for tx in out.relayed:
        assert _no_bare_line_ends(tx.wire) and _no_bare_line_ends(tx.data)


@pytest.mark.case("017")
def test_017_duplicate_from_not_delivered_as_clean(gateway, sink, tmp_path):
    out = play(gateway, sink, tmp_path, "017")

    for tx in out.relayed:
        # Delivered only with a mark, never as plain clean mail.
        marked = tx.header("X-Spam-Flag") == ["YES"] or any(
            "DUPLICATE" in value.upper() or "MALFORMED" in value.upper()
            for value in tx.header("X-Spam-Status"))
        assert marked, tx.data[:600]


@pytest.mark.parametrize("name", ["023", "031", "034", "040", "041"])
def test_virus_or_ambiguous_mime_never_reaches_downstream(gateway, sink, tmp_path,
                                                          name):
    out = play(gateway, sink, tmp_path, name)

    assert out.relayed == [], [tx.data[:300] for tx in out.relayed]
    assert out.quarantined == out.qids  # each 250 ended in the quarantine


@pytest.mark.case("035")
def test_035_rfc822_chain_relayed_complete(gateway, sink, tmp_path):
    out = play(gateway, sink, tmp_path, "035")

    if out.qids and not out.quarantined:
        [tx] = out.relayed
        assert tx.data.endswith(_input("035"))
        assert tx.header("X-Spam-Status")


@pytest.mark.case("058")
def test_058_dot_lines_survive_the_relay(gateway, sink, tmp_path):
    out = play(gateway, sink, tmp_path, "058")

    [tx] = out.relayed
    original = _input("058")
    assert tx.data.endswith(original)  # the gateway only added headers on top
    assert tx.data.rstrip(b"\r\n").endswith(b"END-OF-BODY-MARKER")
    for line in (b"\r\n.\r\n", b"\r\n..\r\n", b"\r\n...\r\n"):
        assert line in original and line in tx.data
    assert b"\r\n.\r\n" not in tx.wire  # stuffed on the wire


@pytest.mark.case("060")
def test_060_long_parameter_name_relayed_intact(gateway, sink, tmp_path):
    out = play(gateway, sink, tmp_path, "060")

    [tx] = out.relayed
    assert tx.data.endswith(_input("060"))
