"""Receiver verification: ask the downstream server whether a recipient exists.

At RCPT for a relay domain the check opens an SMTP session to the domain's
next hop (``transports``, else ``downstream``) and sends EHLO, ``MAIL
FROM:<>``, ``RCPT TO:<rcpt>``, then RSET and QUIT; never DATA, so nothing
is delivered. A 2xx answer to RCPT means the user exists; 550, 551 or 553
mean it does not, and the client gets 550 5.1.1 (or 450 4.1.1 with
``callout.unknown_code`` 450). Anything else (no connection, timeout, 4xx,
a refused null sender) is "not known": the mail is accepted, or deferred
with 450 4.4.3 when ``callout.on_error`` is ``defer``. A downstream that
does not answer never causes a 5xx.

Answers are cached per next hop and recipient, positive ones for
``callout.positive_ttl`` and negative ones for ``callout.negative_ttl``;
concurrent checks of one address share one probe, and a next hop that
failed is not asked again for ``DOWN_SECONDS``.

Limits: the cache is per process and empty after a restart. The probe
does not use STARTTLS (the downstream is the internal mail server), and
recipients with non-ASCII addresses are not verified.
"""

from __future__ import annotations

import asyncio
import logging

import aiosmtplib

from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import Check, exempt, show, split_address, tag

log = logging.getLogger(__name__)

DOWN_SECONDS = 30.0
CACHE_SIZE = 50000
# RFC 5321 s4.2.2-4.2.3: mailbox unavailable, not local, name not allowed.
# Other 5xx (syntax, parameters, policy) say nothing about the user.
_UNKNOWN_CODES = (550, 551, 553)


class CalloutCheck(Check):
    """Refuses recipients the downstream server does not know."""

    name = "callout"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.cache: dict[tuple, tuple[float, bool]] = {}
        self.inflight: dict[tuple, asyncio.Future] = {}
        self.down_until: dict[tuple[str, int], float] = {}

    def next_hop(self, domain: str) -> tuple[str, int] | None:
        settings = self.ctx.settings
        transports = getattr(settings, "transports", {}) or {}
        if domain in transports:
            hop = transports[domain]
        elif domain in (getattr(settings, "relay_domains", ()) or ()):
            hop = settings.downstream
        else:
            return None
        return hop if hop and hop[0] else None

    async def probe(self, hop: tuple[str, int], rcpt: str) -> str:
        """``exists``, ``unknown`` or ``error:<why>`` for one recipient."""
        timeout = float(self.cfg.values["callout.timeout"])
        client = aiosmtplib.SMTP(hostname=hop[0], port=hop[1], timeout=timeout,
                                 start_tls=False, use_tls=False,
                                 local_hostname=str(self.ctx.settings.hostname))
        try:
            await client.connect()
            await client.ehlo()
            mail = await client.execute_command(b"MAIL", b"FROM:<>")
            if mail.code != 250:
                return f"error:mail_{mail.code}"
            answer = await client.execute_command(b"RCPT",
                                                  f"TO:<{rcpt}>".encode("utf-8"))
            if 200 <= answer.code < 300:
                return "exists"
            if answer.code in _UNKNOWN_CODES:
                return "unknown"
            return f"error:rcpt_{answer.code}"
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return f"error:{type(exc).__name__}"
        finally:
            await self._close(client)

    @staticmethod
    async def _close(client) -> None:
        if not client.is_connected:
            return
        try:
            await client.execute_command(b"RSET")
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            client.close()

    async def verify(self, hop: tuple[str, int], rcpt: str) -> tuple[str, bool]:
        """(answer, from_cache) for one recipient at one next hop."""
        now = self.ctx.clock.now()
        key = (hop, rcpt.lower())
        cached = self.cache.get(key)
        if cached and cached[0] > now:
            return ("exists" if cached[1] else "unknown"), True
        if self.down_until.get(hop, 0.0) > now:
            return "error:recently_down", True
        running = self.inflight.get(key)
        if running is not None:
            return await asyncio.shield(running), True
        future = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        answer = "error:cancelled"
        try:
            answer = await self.probe(hop, rcpt)
        except Exception as exc:  # never leave the sharers waiting
            answer = f"error:{type(exc).__name__}"
        finally:
            del self.inflight[key]
            future.set_result(answer)
        values = self.cfg.values
        if answer in ("exists", "unknown"):
            ttl = values["callout.positive_ttl" if answer == "exists"
                         else "callout.negative_ttl"]
            if len(self.cache) >= CACHE_SIZE:
                self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
                while len(self.cache) >= CACHE_SIZE:
                    self.cache.pop(next(iter(self.cache)))
            self.cache[key] = (now + ttl, answer == "exists")
        else:
            self.down_until[hop] = now + DOWN_SECONDS
        return answer, False

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if exempt(session):
            return None
        hop = self.next_hop(split_address(rcpt)[1])
        if hop is None or not rcpt.isascii():
            # A UTF-8 address would need SMTPUTF8 on the probe too; not asked.
            return None
        answer, cached = await self.verify(hop, rcpt)
        values = self.cfg.values
        result = answer.split(":", 1)[0]
        reply = None
        if answer == "unknown":
            template = (replies.UNKNOWN_USER if values["callout.unknown_code"] == 550
                        else replies.UNKNOWN_USER_TEMP)
            reply = template.format(address=show(rcpt))
        elif result == "error" and values["callout.on_error"] == "defer":
            reply = replies.VERIFY_UNAVAILABLE.format()
        log.info("%s event=callout rcpt=<%s> hop=%s:%d result=%s cached=%s "
                 "action=%s", tag(session), show(rcpt), hop[0], hop[1],
                 show(answer), "yes" if cached else "no",
                 "accept" if reply is None else reply[:3])
        self.count(result)
        return HookResult(reply=reply) if reply else None
