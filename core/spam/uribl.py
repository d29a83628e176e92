"""URI blocklists (SURBL style): registrable domains of a message's URIs
looked up as ``<domain>.<zone>`` (IPs with reversed octets), through the
resolver of ``dns_servers`` (``core.dns.resolver``).

A zone is configured as ``zone[/bitmask][:score]`` or
``zone=127.0.0.2|127.0.0.3[:score]``: with a bitmask (1 to 32 bits) an
answer counts when the address, read as a 32-bit number, has one of the
bits (masks up to 0xff test the last octet, as the lists publish them);
with a value list when it is one of them; with neither
any 127/8 answer counts. Answers 127.0.0.1 and 127.255.255.0/24 are the
lists' "refused / error" replies and never count. The score is a finite
number of points within +-``MAX_SCORE``. ``parse_zone`` refuses anything
else with a message naming the entry.

Lookups are cached per process (positive and negative) for
``CACHE_SECONDS``; each message looks up at most ``uribl_max_lookups``
domains within ``MESSAGE_BUDGET`` seconds, and a zone whose lookup failed
(timeout, SERVFAIL) is skipped for ``BACKOFF_SECONDS``: a dead resolver
then costs one timeout, not one per message. While a zone is skipped only
cached answers are used. Whatever was not checked (failed, skipped, cap or
time budget reached) is said in ``UriCheck.note``, which the filter keeps
as ``SpamResult.uri_note`` and the decision names ``URIBL_UNCHECKED``.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import math
import re
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
# Points a zone may add or take; more would let one list decide alone.
MAX_SCORE = 100.0
# Room kept for a note: it is stored with the clues (core.tracking bounds it).
MAX_NOTE = 400
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
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
            return bool(int(ip) & self.mask)
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


def _refuse(entry: str, why: str) -> ZoneError:
    return ZoneError(f"uribl_zones entry {entry!r}: {why}")


def _score(entry: str, tail: str) -> float:
    try:
        score = float(tail)
    except ValueError:
        raise _refuse(entry, f"{tail!r} after ':' is not a score (a number such "
                      "as 3.5)") from None
    if not math.isfinite(score) or abs(score) > MAX_SCORE:
        raise _refuse(entry, f"score {tail!r} must be a finite number of points "
                      f"between -{MAX_SCORE:g} and {MAX_SCORE:g}, such as 3.5")
    return score


def _mask(entry: str, bits: str) -> int:
    try:
        mask = int(bits, 0)
    except ValueError:
        raise _refuse(entry, f"bitmask {bits!r} is not a number (such as 0x7e "
                      "or 126)") from None
    if not 0 < mask <= 0xFFFFFFFF:
        # Mask 0 would never match; an answer is a 32-bit IPv4 address.
        raise _refuse(entry, f"bitmask {bits!r} must have 1 to 32 bits "
                      "(0x1 to 0xffffffff); a mask of 0 never matches")
    return mask


def _values(entry: str, listed: str) -> frozenset:
    values = []
    for text in listed.split("|"):
        text = text.strip()
        if not text:
            raise _refuse(entry, "empty value after '=' or '|'; list the answers "
                          "such as =127.0.0.2|127.0.0.3")
        try:
            value = ipaddress.IPv4Address(text)
        except ValueError:
            raise _refuse(entry, "values must be IPv4 addresses such as "
                          "127.0.0.2") from None
        if value not in _LOOPBACK or value in _ERRORS or str(value) == "127.0.0.1":
            raise _refuse(entry, f"value {text} never counts: a listing answer is "
                          "in 127.0.0.2-127.255.254.255")
        values.append(str(value))
    return frozenset(values)


def parse_zone(entry: str) -> Zone:
    """A Zone from ``zone[/bitmask][:score]`` or ``zone=values[:score]``."""
    text = entry.strip()
    if not text:
        raise ZoneError("uribl_zones has an empty entry; give zone names such "
                        "as multi.surbl.org, or no entries at all")
    score = DEFAULT_SCORE
    head, sep, tail = text.rpartition(":")
    if sep:
        score = _score(entry, tail.strip())
        text = head

    mask, values = 0, frozenset()
    if "/" in text:
        text, _, bits = text.partition("/")
        mask = _mask(entry, bits.strip())
    elif "=" in text:
        text, _, listed = text.partition("=")
        values = _values(entry, listed)

    name = text.strip().lower().rstrip(".")
    # RFC 1035 section 2.3.4: labels of 1-63 octets, names up to 255; the
    # query adds the looked-up domain in front, so the zone stays short.
    labels = name.split(".")
    if (len(labels) < 2 or len(name) > 200
            or not all(_LABEL.match(label) for label in labels)):
        raise _refuse(entry, f"{name!r} is not a zone name such as multi.surbl.org")
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
    """The resolver gave no answer (timeout, SERVFAIL...); text says which."""


def _failure(exc: Exception) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "answered SERVFAIL or REFUSED"
    return f"failed ({type(exc).__name__})"


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
        raise LookupFailed(_failure(exc)) from None
    CACHE.put(name, addresses)
    return addresses


@dataclasses.dataclass
class UriCheck:
    """Hits of one message and, when some lookups were not made, why."""

    hits: list = dataclasses.field(default_factory=list)  # UriHit
    note: str = ""  # "" when every domain was checked in every zone
    unchecked: int = 0  # (zone, domain) pairs not looked up


@dataclasses.dataclass
class _Down:
    until: float
    since: float
    why: str


class UriBlocklist:
    """URI blocklist hits of parsed messages."""

    def __init__(self, settings):
        self.zones = [parse_zone(entry) for entry in settings.uribl_zones]
        self.limit = settings.uribl_max_lookups
        self.down: dict[str, _Down] = {}

    def check(self, parsed: ParsedMessage) -> list[UriHit]:
        """One hit per (zone, domain) listed; each zone counts once per message."""
        return self.examine(parsed).hits

    def examine(self, parsed: ParsedMessage) -> UriCheck:
        """Hits, and a note on what was left unchecked and why."""
        result = UriCheck()
        if not self.zones or not self.limit:
            return result
        # One more than the cap tells whether the cap left domains out.
        found = uris.domains(parsed, self.limit + 1)
        capped = len(found) > self.limit
        found = found[:self.limit]
        notes = []
        if capped:
            notes.append(f"lookup cap reached: only the first {self.limit} domains "
                         "were checked (uribl_max_lookups)")

        deadline = time.monotonic() + MESSAGE_BUDGET
        for zone in self.zones:
            note = self._zone(zone, found, deadline, result)
            if note:
                notes.append(note)
        if notes:
            result.note = _clip("URI lookups incomplete: " + "; ".join(notes))
        return result

    def _zone(self, zone: Zone, found: list, deadline: float,
              result: UriCheck) -> str:
        # The note for this zone, "" when each domain got its answer.
        now = time.monotonic()
        down = self.down.get(zone.name)
        if down is not None and down.until <= now:
            self.down.pop(zone.name, None)
            down = None
        missed = 0
        failed = ""
        for number, uri in enumerate(found):
            name = query_name(uri, zone)
            if down is not None or failed:
                # Only what the cache already knows: no lookup while down.
                answers = CACHE.get(name)
                if answers is None:
                    missed += 1
                    continue
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    missed = len(found) - number
                    result.unchecked += missed
                    return (f"{zone.name}: {missed} of {len(found)} domains not "
                            f"checked, the {MESSAGE_BUDGET:g} s budget per message "
                            "ran out")
                try:
                    answers = lookup(name, min(left, LOOKUP_SECONDS))
                except LookupFailed as exc:
                    failed = str(exc)
                    now = time.monotonic()
                    self.down[zone.name] = _Down(now + BACKOFF_SECONDS, now, failed)
                    missed += 1
                    continue
            listed = [a for a in answers if zone.counts(a)]
            if listed:
                result.hits.append(UriHit(zone.name, uri.domain, listed[0],
                                          zone.score, zone.test))
                break
        if not missed:
            return ""
        result.unchecked += missed
        if failed:
            return (f"{zone.name}: the resolver {failed}; {missed} of {len(found)} "
                    f"domains not checked, lookups skipped for {BACKOFF_SECONDS:g} s")
        ago = time.monotonic() - down.since
        return (f"{zone.name}: lookups skipped, the resolver {down.why} "
                f"{ago:.0f} s ago; {missed} of {len(found)} domains not checked "
                f"(retried in {max(down.until - time.monotonic(), 0):.0f} s)")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_NOTE else text[:MAX_NOTE - 3] + "..."
