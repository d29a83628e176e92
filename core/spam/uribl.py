"""URI blocklists (SURBL style): registrable domains of a message's URIs
looked up as ``<domain>.<zone>`` (IPs with reversed octets), through
dnspython's default resolver.

A zone is configured as ``zone[/bitmask or =127.0.0.2|127.0.0.3][:score]``: with a
bitmask an answer counts when its last octet has one of the bits; with a
value list when it is one of them; with neither any 127/8 answer counts.
Answers 127.0.0.1 and 127.255.255.0/24 are the lists' "refused / error"
replies and never count. Lookups are cached per process (positive and
negative) for ``CACHE_SECONDS``; each message looks up at most
``uribl_max_lookups`` domains within ``MESSAGE_BUDGET`` seconds, and a zone
whose lookup failed is skipped for ``BACKOFF_SECONDS``.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import threading
import time

import dns.exception
import dns.resolver

from core import dns as portdns
from core.logsetup import scrub
from core.message import ParsedMessage
from core.spam import uris

log = logging.getLogger(__name__)

DEFAULT_SCORE = 3.0
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 20000
LOOKUP_SECONDS = 2.0
# Most seconds of lookups per message, and how long a zone that failed to
# answer is left alone: a dead resolver must not stall every message.
MESSAGE_BUDGET = 4.0
BACKOFF_SECONDS = 30.0
_ERRORS = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class ZoneError(ValueError):
    """A uribl_zones entry cannot be read; the text says which and how."""


@dataclasses.dataclass(frozen=True)
class Zone:
    name: str
    mask: int = 0
    values: frozenset = frozenset()
    score: float = DEFAULT_SCORE

    @property
    def test(self) -> str:
        """Rule name for X-Spam-Status: URIBL_<first label of the zone>."""
        label = self.name.split(".")[0].upper().replace("-", "_")
        return f"URIBL_{label}"[:40]

    def counts(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if ip not in _LOOPBACK or ip in _ERRORS or address == "127.0.0.1":
            return False
        if self.mask:
            return bool(int(address.rsplit(".", 1)[1]) & self.mask)
        if self.values:
            return address in self.values
        return True


@dataclasses.dataclass(frozen=True)
class UriHit:
    zone: str
    domain: str
    answer: str
    score: float
    test: str


def parse_zone(entry: str) -> Zone:
    """A Zone from ``zone[/bitmask or =127.0.0.2|127.0.0.3][:score]``."""
    text = entry.strip()
    score = DEFAULT_SCORE
    head, sep, tail = text.rpartition(":")
    if sep:
        try:
            score = float(tail)
        except ValueError:
            raise ZoneError(f"uribl_zones entry {entry!r}: {tail!r} after ':' is not "
                            "a score (a number such as 3.5)") from None
        text = head
    mask, values = 0, frozenset()
    if "/" in text:
        text, _, bits = text.partition("/")
        try:
            mask = int(bits, 0)
        except ValueError:
            raise ZoneError(f"uribl_zones entry {entry!r}: bitmask {bits!r} is not a "
                            "number (such as 0x7e or 126)") from None
    elif "=" in text:
        text, _, listed = text.partition("=")
        try:
            values = frozenset(str(ipaddress.IPv4Address(v.strip()))
                               for v in listed.split("|") if v.strip())
        except ValueError:
            raise ZoneError(f"uribl_zones entry {entry!r}: values must be IPv4 "
                            "addresses such as 127.0.0.2") from None
    name = text.strip().lower().rstrip(".")
    if not name or "." not in name or " " in name:
        raise ZoneError(f"uribl_zones entry {entry!r}: {name!r} is not a zone name "
                        "such as multi.surbl.org")
    return Zone(name, mask, values, score)


class _Cache:
    """Bounded, time-limited answers per query name (shared by threads)."""

    def __init__(self):
        self.items: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, name: str):
        with self.lock:
            entry = self.items.get(name)
            if entry is None or entry[0] < time.monotonic():
                return None
            self.items.move_to_end(name)
            return entry[1]

    def put(self, name: str, answers: tuple[str, ...]) -> None:
        with self.lock:
            self.items[name] = (time.monotonic() + CACHE_SECONDS, answers)
            self.items.move_to_end(name)
            while len(self.items) > CACHE_ENTRIES:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


CACHE = _Cache()


def query_name(uri: uris.Uri, zone: Zone) -> str:
    if uri.is_ip:
        return ".".join(reversed(uri.domain.split("."))) + "." + zone.name
    return f"{uri.domain}.{zone.name}"


class LookupFailed(Exception):
    """The resolver gave no answer (timeout, SERVFAIL...)."""


def lookup(name: str, lifetime: float = LOOKUP_SECONDS) -> tuple[str, ...]:
    """A records of ``name`` (empty when not listed), cached."""
    cached = CACHE.get(name)
    if cached is not None:
        return cached
    try:
        # The servers of dns_servers (core.dns.configure), as every lookup.
        answer = portdns.resolver().resolve(name, "A", lifetime=lifetime,
                                            search=False)
        addresses = tuple(sorted(r.address for r in answer))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        addresses = ()
    except (dns.exception.DNSException, OSError) as exc:
        # Not cached: a later message tries again.
        log.warning("event=uribl_error name=%s error=%s", scrub(name),
                    type(exc).__name__)
        raise LookupFailed(type(exc).__name__) from None
    CACHE.put(name, addresses)
    return addresses


class UriBlocklist:
    """URI blocklist hits of parsed messages."""

    def __init__(self, settings):
        self.zones = [parse_zone(entry) for entry in settings.uribl_zones]
        self.limit = settings.uribl_max_lookups
        self.down_until: dict[str, float] = {}

    def check(self, parsed: ParsedMessage) -> list[UriHit]:
        """One hit per (zone, domain) listed; each zone counts once per message."""
        hits: list[UriHit] = []
        if not self.zones or not self.limit:
            return hits
        found = uris.domains(parsed, self.limit)
        deadline = time.monotonic() + MESSAGE_BUDGET
        for zone in self.zones:
            if self.down_until.get(zone.name, 0.0) > time.monotonic():
                continue
            for uri in found:
                left = deadline - time.monotonic()
                if left <= 0:
                    return hits
                try:
                    answers = lookup(query_name(uri, zone), min(left, LOOKUP_SECONDS))
                except LookupFailed:
                    self.down_until[zone.name] = time.monotonic() + BACKOFF_SECONDS
                    break
                listed = [a for a in answers if zone.counts(a)]
                if listed:
                    hits.append(UriHit(zone.name, uri.domain, listed[0], zone.score,
                                       zone.test))
                    break
        return hits
