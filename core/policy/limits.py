"""Per-client limits: concurrent connections, connection and message rate,
recipients per message. Each is off (0) by default and refuses with a 4xx.

Counts are per client address and kept in this process's memory (sliding
windows of ``limits.rate_window`` seconds). Trusted and SMTP-welcome-listed
clients are not limited.

Limits: counts are per process and start from zero after a restart.
"""

from __future__ import annotations

import collections
import logging

from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import Check, exempt, show, state, tag

log = logging.getLogger(__name__)

# Forget clients with no event in this many windows, checked when the table
# grows past _PRUNE_AT entries, so memory stays bounded under a flood.
_PRUNE_AT = 10000


class _Window:
    """Event times per client over a sliding window."""

    def __init__(self):
        self.events: dict[str, collections.deque] = {}

    def hit(self, key: str, now: float, window: float, limit: int) -> bool:
        """Record one event; True when it is over the limit (not recorded)."""
        times = self.events.setdefault(key, collections.deque())
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= limit:
            return True
        times.append(now)
        if len(self.events) > _PRUNE_AT:
            stale = [k for k, t in self.events.items()
                     if not t or t[-1] <= now - window]
            for k in stale:
                del self.events[k]
        return False


class LimitsCheck(Check):
    """Refuses clients over their connection, rate or recipient limits."""

    name = "limits"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.connections: collections.Counter = collections.Counter()
        self.connect_times = _Window()
        self.message_times = _Window()

    def enabled(self, config) -> bool:
        values = config.values
        return any(values[k] for k in ("limits.max_connections",
                                       "limits.connection_rate",
                                       "limits.message_rate",
                                       "limits.max_recipients"))

    def _refuse(self, session: SessionInfo, what: str, reply) -> HookResult:
        log.info("%s event=limits limit=%s client=%s action=defer",
                 tag(session), what, show(session.peer_ip))
        self.count(what)
        return HookResult(reply=reply.format())

    async def on_connect(self, session: SessionInfo) -> HookResult | None:
        if exempt(session):
            return None
        values = self.cfg.values
        ip = session.peer_ip
        limit = values["limits.max_connections"]
        if limit and self.connections[ip] >= limit:
            return self._refuse(session, "connections", replies.CLIENT_CONNECTIONS)
        rate = values["limits.connection_rate"]
        if rate and self.connect_times.hit(ip, self.ctx.clock.now(),
                                           values["limits.rate_window"], rate):
            return self._refuse(session, "connection_rate",
                                replies.CLIENT_CONNECTION_RATE)
        self.connections[ip] += 1
        state(session)["limits_counted"] = True
        return None

    async def on_disconnect(self, session: SessionInfo) -> None:
        if state(session).pop("limits_counted", False):
            ip = session.peer_ip
            self.connections[ip] -= 1
            if self.connections[ip] <= 0:
                del self.connections[ip]

    async def on_mail(self, session: SessionInfo, sender: str) -> HookResult | None:
        if exempt(session):
            return None
        values = self.cfg.values
        rate = values["limits.message_rate"]
        if rate and self.message_times.hit(session.peer_ip, self.ctx.clock.now(),
                                           values["limits.rate_window"], rate):
            return self._refuse(session, "message_rate", replies.CLIENT_MESSAGE_RATE)
        return None

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if exempt(session):
            return None
        limit = self.cfg.values["limits.max_recipients"]
        if limit and len(session.recipients) >= limit:
            return self._refuse(session, "recipients", replies.CLIENT_RECIPIENTS)
        return None
