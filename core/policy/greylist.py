"""Greylisting: defer the first delivery of an unknown (network, sender,
recipient) triplet, accept its retry after a delay.

The client network is the client address within an IPv4 /24 or IPv6 /64
(``greylist.ipv4_prefix``, ``greylist.ipv6_prefix``), compared as parsed
networks, because large senders retry from other addresses of a pool. The
sender is lowercased, with BATV/PRVS prefixes, ``+tag`` extensions and
digit runs (VERP and per-message bounce ids) folded, so a list's next
bounce address is the same sender.

A new triplet is deferred with 450 4.7.1. A retry after ``greylist.delay``
and within ``greylist.retry_window`` of the first attempt passes; a passed
triplet stays known for ``greylist.lifetime`` after it was last seen.
Retries after the window start over. Senders whose SPF passes for a domain
in ``greylist.spf_skip_domains`` (large providers) are not greylisted.
Expired triplets are purged hourly. The clock comes from the policy
context, so tests move it forward instead of sleeping.

Triplets live in the ``greylist_triplet`` table (in memory when no
database is bound); each check is one short transaction in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import math
import re

import peewee as pw

from core import models, replies
from core.models import GreylistTriplet
from core.policy.base import HookResult, SessionInfo
from core.policy.check import Check, exempt, show, split_address, tag
from core.policy.store import PolicyConfig

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0
# A passed triplet seen again is answered from memory; its last_seen row is
# rewritten at most this often (the lifetime is counted in days).
KNOWN_REFRESH = 3600.0
KNOWN_CACHE = 100000

_BATV = re.compile(r"^(?:prvs|msprvs\d*|btv\d*)=[^=]*=(.+)$")


@dataclasses.dataclass
class Triplet:
    first_seen: float
    last_seen: float
    passed_at: float | None = None
    attempts: int = 1


def client_network(ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    """The client's network as text, e.g. ``2001:db8:4:7::/64``."""
    address = ipaddress.ip_address(ip.strip("[]").split("%")[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def normalise_sender(sender: str) -> str:
    """The sender as greylisting compares it (``<>`` stays empty)."""
    if not sender:
        return ""
    local, domain = split_address(sender)
    local = local.lower()
    match = _BATV.match(local)
    if match:
        local = match.group(1)
    local = local.split("+", 1)[0]
    local = re.sub(r"\d+", "#", local)
    return f"{local}@{domain}"


def decide(known: Triplet | None, now: float, config: PolicyConfig
           ) -> tuple[str, Triplet, float]:
    """(verdict, new state, seconds still to wait) for one attempt."""
    delay = config["greylist.delay"]
    window = config["greylist.retry_window"]
    lifetime = config["greylist.lifetime"]
    if known is not None and known.passed_at is not None:
        if now - known.last_seen <= lifetime:
            return "known", Triplet(known.first_seen, now, known.passed_at,
                                    known.attempts + 1), 0.0
        known = None  # expired: a stranger again
    if known is not None and now - known.first_seen > window:
        known = None  # did not retry in time: start over
    if known is None:
        return "new", Triplet(now, now), delay
    age = now - known.first_seen
    if age < delay:
        return "early", Triplet(known.first_seen, now, None,
                                known.attempts + 1), delay - age
    return "passed", Triplet(known.first_seen, now, now, known.attempts + 1), 0.0


class MemoryStore:
    """Triplets in a dict, for a process without a database."""

    def __init__(self):
        self.rows: dict[tuple[str, str, str], Triplet] = {}

    def attempt(self, key, now, config) -> tuple[str, float]:
        verdict, state, wait = decide(self.rows.get(key), now, config)
        self.rows[key] = state
        return verdict, wait

    def purge(self, now, config) -> int:
        stale = [k for k, t in self.rows.items() if _expired(t, now, config)]
        for key in stale:
            del self.rows[key]
        return len(stale)


def _expired(t: Triplet, now: float, config: PolicyConfig) -> bool:
    if t.passed_at is None:
        return now - t.first_seen > config["greylist.retry_window"]
    return now - t.last_seen > config["greylist.lifetime"]


class DatabaseStore:
    """Triplets in the greylist_triplet table."""

    def attempt(self, key, now, config) -> tuple[str, float]:
        network, sender, recipient = key
        # SQLite: take the write lock up front. A deferred transaction that
        # reads, then writes after another writer committed, gets "database
        # is locked" at once instead of waiting its busy_timeout.
        if isinstance(models.db.obj, pw.SqliteDatabase):
            transaction = models.db.obj.atomic("IMMEDIATE")
        else:
            transaction = models.db.atomic()
        try:
            with transaction:
                row = GreylistTriplet.get_or_none(
                    (GreylistTriplet.network == network)
                    & (GreylistTriplet.sender == sender)
                    & (GreylistTriplet.recipient == recipient))
                known = None if row is None else Triplet(
                    row.first_seen, row.last_seen, row.passed_at, row.attempts)
                verdict, state, wait = decide(known, now, config)
                if row is None:
                    GreylistTriplet.create(
                        network=network, sender=sender, recipient=recipient,
                        **dataclasses.asdict(state))
                else:
                    (GreylistTriplet.update(**dataclasses.asdict(state))
                     .where(GreylistTriplet.id == row.id).execute())
        except pw.IntegrityError:
            # Another session inserted the same new triplet just now.
            return "new", config["greylist.delay"]
        return verdict, wait

    def purge(self, now, config) -> int:
        query = GreylistTriplet.delete().where(
            (GreylistTriplet.passed_at.is_null()
             & (GreylistTriplet.first_seen < now - config["greylist.retry_window"]))
            | (GreylistTriplet.passed_at.is_null(False)
               & (GreylistTriplet.last_seen < now - config["greylist.lifetime"])))
        return query.execute()


class GreylistCheck(Check):
    """Defers unknown (network, sender, recipient) triplets with 450 4.7.1."""

    name = "greylist"

    def __init__(self, ctx, spf=None):
        super().__init__(ctx)
        self.spf = spf  # the SpfCheck, for the big-provider exemption
        self.memory = MemoryStore()
        self.database = DatabaseStore()
        self.last_purge = 0.0
        # (network, sender, recipient) -> last_seen as written to the store
        self.known: dict[tuple[str, str, str], float] = {}

    def store(self):
        return self.database if models.db.obj is not None else self.memory

    async def purge(self) -> int:
        """Delete expired triplets now; returns how many."""
        now = self.ctx.clock.now()
        self.last_purge = now
        self.known.clear()
        store = self.store()
        if store is self.memory:
            removed = store.purge(now, self.cfg)
        else:
            removed = await asyncio.to_thread(store.purge, now, self.cfg)
        log.info("event=greylist action=purge removed=%d", removed)
        return removed

    async def _provider_pass(self, session: SessionInfo) -> bool:
        domains = self.cfg.values["greylist.spf_skip_domains"]
        sender = session.sender or ""
        if not domains or not sender or self.spf is None:
            return False
        domain = split_address(sender)[1]
        if not any(domain == d or domain.endswith("." + d) for d in domains):
            return False
        result = await self.spf.mailfrom_result(session)
        return result is not None and result.result == "pass"

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if exempt(session):
            return None
        values = self.cfg.values
        now = self.ctx.clock.now()
        if now - self.last_purge > PURGE_EVERY:
            try:
                await self.purge()
            except pw.PeeweeException as exc:
                log.warning("event=greylist action=purge error=%s", exc)
        if await self._provider_pass(session):
            log.info("%s event=greylist result=skip reason=spf_provider",
                     tag(session))
            self.count("skip")
            return None
        try:
            network = client_network(session.peer_ip, values["greylist.ipv4_prefix"],
                                     values["greylist.ipv6_prefix"])
        except ValueError:
            return None
        key = (network, normalise_sender(session.sender or ""), rcpt.lower())
        written = self.known.get(key)
        if written is not None and 0 <= now - written < KNOWN_REFRESH:
            self.count("known")
            log.info("%s event=greylist network=%s sender=<%s> rcpt=<%s> "
                     "result=known action=accept", tag(session), network,
                     show(key[1]), show(rcpt))
            return None
        store = self.store()
        try:
            if store is self.memory:
                verdict, wait = store.attempt(key, now, self.cfg)
            else:
                verdict, wait = await asyncio.to_thread(store.attempt, key, now,
                                                        self.cfg)
        except pw.PeeweeException as exc:
            # A database problem must not stop mail: let it through.
            log.warning("%s event=greylist result=error error=%s", tag(session), exc)
            self.count("error")
            return None
        deferred = verdict in ("new", "early")
        if deferred:
            self.known.pop(key, None)
        else:
            if len(self.known) >= KNOWN_CACHE:
                self.known.clear()
            self.known[key] = now
        log.info("%s event=greylist network=%s sender=<%s> rcpt=<%s> result=%s "
                 "action=%s", tag(session), network, show(key[1]), show(rcpt),
                 verdict, "defer" if deferred else "accept")
        self.count(verdict)
        if deferred:
            return HookResult(reply=replies.GREYLISTED.format(
                delay=max(1, math.ceil(wait))))
        return None
