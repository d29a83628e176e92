"""A UDP DNS server on 127.0.0.1 answering from in-memory test zones.

Fixture files use the cases' ``dns.txt`` format: ``OWNER TYPE DATA`` per line.
Names not listed answer NXDOMAIN; a listed name asked for another type
answers NOERROR with no data. Any type dnspython can parse works (A, AAAA,
MX, PTR, CNAME, TXT with several strings ``"a" "b"``). Three pseudo-types
make a name fail for every type: ``SERVFAIL``, ``REFUSED`` and ``TIMEOUT``
(no answer at all), e.g. ``slow.example. TIMEOUT -``.

``with server.zone(text):`` loads records for one test and takes them out
again afterwards, so tests do not see each other's names.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class TestDNSServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, owner: str, rtype: str, data: str) -> None:
        name = owner.lower().rstrip(".") + "."
        with self._lock:
            self.records.setdefault(name, []).append((rtype.upper(), data))

    def load_text(self, text: str) -> None:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            owner, rtype, data = line.split(None, 2)
            self.add(owner, rtype, data)

    def load(self, path) -> None:
        with open(path, encoding="utf-8") as handle:
            self.load_text(handle.read())

    def remove(self, owner: str) -> None:
        name = owner.lower().rstrip(".") + "."
        with self._lock:
            self.records.pop(name, None)

    @contextlib.contextmanager
    def zone(self, text: str = "", path=None):
        """Records present only inside the ``with`` block; yields the server.

        The query log starts empty, so ``asked()`` counts this block's queries.
        """
        with self._lock:
            saved = {name: list(entries) for name, entries in self.records.items()}
            self.queries.clear()
        try:
            if path is not None:
                self.load(path)
            self.load_text(text)
            yield self
        finally:
            with self._lock:
                self.records = saved

    def asked(self, name: str, rtype: str | None = None) -> int:
        """How often ``name`` (and ``rtype``, if given) was queried."""
        name = name.lower().rstrip(".") + "."
        with self._lock:
            return sum(1 for n, t in self.queries
                       if n == name and (rtype is None or t == rtype.upper()))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
            self.queries.clear()

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text().lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, qtype))
            entries = list(self.records.get(name, ()))
        if not entries:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        kinds = {rtype for rtype, _ in entries}
        if "TIMEOUT" in kinds:
            return None
        if "SERVFAIL" in kinds or "REFUSED" in kinds:
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.SERVFAIL if "SERVFAIL" in kinds
                               else dns.rcode.REFUSED)
            return response.to_wire()
        for rtype, data in entries:
            if rtype != qtype and rtype != "CNAME":
                continue
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, data)
            rrset = dns.rrset.from_rdata(question.name, 60, rdata)
            response.answer.append(rrset)
        return response.to_wire()

    def serve_forever(self) -> None:
        while True:
            try:
                wire, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            reply = self._answer(wire)
            if reply is not None:
                self.sock.sendto(reply, peer)


def start() -> TestDNSServer:
    server = TestDNSServer()
    threading.Thread(target=server.serve_forever, name="test-dns", daemon=True).start()
    return server
