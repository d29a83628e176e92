"""DNS blocklists: weighted zones with answer filters, and a threshold.

A zone is written as Postfix postscreen's ``postscreen_dnsbl_sites``:
``zone[=filter][*weight]``, e.g. ``zen.example=127.0.0.[2..11]*2``. The
filter is four dot-separated fields, each a number, ``[a..b]`` or
``[a;b;c]`` (ranges allowed inside the list too). Without a filter any
answer in 127.0.0.0/8 counts. The client is listed when the weights of
the zones that list it add up to ``dnsbl.threshold``; the refusal (554
5.7.1, at connect or at RCPT) names those zones.

Answers in 127.255.255.0/24 are the lists' way of saying "query refused"
(open resolver, too many queries, bad zone name): they are logged as a
warning and never count as a listing. A zone that cannot be asked
(timeout, SERVFAIL) counts as not listing the client, so a resolver
failure never turns into refused mail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re

from core import dns as portdns
from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import Check, exempt, show, state, tag, tx
from core.policy.store import PolicyError

log = logging.getLogger(__name__)

_ERROR_NET = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_FIELD = re.compile(r"\[[^\]]*\]|[^.\[\]]+")
_SPEC = re.compile(r"^([A-Za-z0-9_.-]+?)(?:=([0-9.\[\];]+))?(?:\*(-?\d+))?$")


@dataclasses.dataclass(frozen=True)
class Zone:
    name: str
    weight: int = 1
    octets: tuple[frozenset[int], ...] | None = None  # None: any 127/8 answer

    def counts(self, answer: str) -> bool:
        try:
            address = ipaddress.IPv4Address(answer)
        except ValueError:
            return False
        if self.octets is None:
            return address in _LOOPBACK
        parts = answer.split(".")
        return all(int(p) in allowed for p, allowed in zip(parts, self.octets))


def _octet(field: str) -> frozenset[int]:
    if field.startswith("[") and field.endswith("]"):
        values: set[int] = set()
        for item in field[1:-1].split(";"):
            low, sep, high = item.partition("..")
            first, last = int(low), int(high if sep else low)
            if not 0 <= first <= last <= 255:
                raise ValueError(item)
            values.update(range(first, last + 1))
        return frozenset(values)
    number = int(field)
    if not 0 <= number <= 255:
        raise ValueError(field)
    return frozenset((number,))


def parse_zone(spec: str) -> Zone:
    """A zone from ``zone[=filter][*weight]``; PolicyError says what is wrong."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise PolicyError(f"DNSBL zone {spec!r}: write zone[=a.b.c.d][*weight], "
                          "e.g. zen.example=127.0.0.[2..11]*2")
    name, filt, weight = match.groups()
    octets = None
    if filt:
        fields = _FIELD.findall(filt)
        try:
            if len(fields) != 4 or ".".join(fields) != filt:
                raise ValueError(filt)
            octets = tuple(_octet(f) for f in fields)
        except ValueError:
            raise PolicyError(f"DNSBL zone {spec!r}: filter {filt!r} needs four "
                              "fields of n, [a..b] or [a;b]") from None
    return Zone(name.lower().strip("."), int(weight) if weight else 1, octets)


def reversed_name(ip: str) -> str:
    """The query label for an address: reversed octets, or nibbles for IPv6."""
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    # reverse_pointer is "d.c.b.a.in-addr.arpa" / nibbles + ".ip6.arpa".
    return address.reverse_pointer.rsplit(".", 2)[0]


class DnsblCheck(Check):
    """Refuses clients that the configured DNS blocklists list."""

    name = "dnsbl"

    def zones(self) -> list[Zone]:
        zones = []
        for spec in self.cfg.values["dnsbl.zones"]:
            try:
                zones.append(parse_zone(spec))
            except PolicyError as exc:
                log.warning("event=dnsbl error=%s", exc)
        return zones

    async def _ask(self, session: SessionInfo, label: str, zone: Zone) -> bool:
        try:
            answers = await portdns.alookup(f"{label}.{zone.name}", "A")
        except portdns.DNSTempError as exc:
            log.warning("%s event=dnsbl zone=%s result=temperror error=%s",
                        tag(session), zone.name, show(exc))
            self.count("temperror")
            return False
        listed = False
        for answer in answers:
            try:
                in_error_net = ipaddress.ip_address(answer) in _ERROR_NET
            except ValueError:
                in_error_net = False
            if in_error_net:
                # Spamhaus return codes: the zone refused to answer us.
                log.warning("%s event=dnsbl zone=%s result=error answer=%s "
                            "note=query_refused_by_list", tag(session), zone.name,
                            answer)
                self.count("error_answer")
                continue
            if zone.counts(answer):
                listed = True
        return listed

    async def verdict(self, session: SessionInfo) -> list[str]:
        """Zones that list the client if their weights reach the threshold."""
        cached = state(session).get("dnsbl")
        if cached is not None:
            return cached
        try:
            label = reversed_name(session.peer_ip)
        except ValueError:
            state(session)["dnsbl"] = []
            return []
        zones = self.zones()
        found = await asyncio.gather(*(self._ask(session, label, z) for z in zones))
        hits = [z for z, listed in zip(zones, found) if listed]
        score = sum(z.weight for z in hits)
        threshold = self.cfg.values["dnsbl.threshold"]
        names = [z.name for z in hits] if hits and score >= threshold else []
        log.info("%s event=dnsbl client=%s result=%s zones=%s score=%d",
                 tag(session), show(session.peer_ip),
                 "listed" if names else "clean", ",".join(z.name for z in hits) or "-",
                 score)
        self.count("listed" if names else "clean")
        state(session)["dnsbl"] = names
        return names

    def _reply(self, session: SessionInfo, names: list[str]) -> HookResult:
        return HookResult(reply=replies.DNSBL_LISTED.format(
            ip=show(session.peer_ip), zones=", ".join(names)))

    async def on_connect(self, session: SessionInfo) -> HookResult | None:
        if self.cfg.values["dnsbl.stage"] != "connect" or exempt(session):
            return None
        names = await self.verdict(session)
        return self._reply(session, names) if names else None

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if exempt(session):
            return None
        names = await self.verdict(session)
        if names:
            tx(session)["dnsbl_refused"] = True
            return self._reply(session, names)
        return None
