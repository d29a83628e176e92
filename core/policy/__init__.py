"""SMTP-time policy: the checks the SMTP handler runs at each stage.

``build(settings)`` gives the :class:`CompositePolicy` the server uses. It
runs the enabled checks in a fixed order (routing, lists, limits, helo,
dnsbl, spf, callout, greylist); the first refusal wins, headers and scores of all
checks are collected at DATA. What is enabled and how each check behaves
comes from the database (:mod:`core.policy.store`), re-read every
``policy_refresh`` seconds.

For the content filter the result of ``on_data`` carries ``notes`` (e.g.
``welcome_list=sender``, for ``Envelope.smtp_notes``; also left in
``session.notes["smtp_notes"]``) and ``score``, the SMTP-time spam score.

A check that raises is logged and skipped (the mail goes on), so a bug in
one check cannot stop mail or crash a session.
"""

from __future__ import annotations

import asyncio
import logging
import time

from core import dns as portdns
from core.policy import store
from core.policy.base import HookResult, Policy, SessionInfo
from core.policy.callout import CalloutCheck
from core.policy.check import Check, Clock, Context, smtp_notes, tag
from core.policy.dnsbl import DnsblCheck
from core.policy.greylist import GreylistCheck
from core.policy.helo import HeloCheck
from core.policy.limits import LimitsCheck
from core.policy.lists import ListsCheck
from core.policy.routing import RoutingCheck
from core.policy.spf import SpfCheck

log = logging.getLogger(__name__)

__all__ = ["CompositePolicy", "Policy", "SessionInfo", "HookResult", "build"]


class CompositePolicy(Policy):
    """Runs the enabled checks in order; the first refusal wins."""

    def __init__(self, settings, config: store.PolicyConfig | None = None,
                 clock: Clock | None = None):
        self.clock = clock or Clock()
        self.ctx = Context(settings, config or store.load(), self.clock)
        self.refresh = float(getattr(settings, "policy_refresh", 30.0))
        spf = SpfCheck(self.ctx)
        self.checks: list[Check] = [
            RoutingCheck(self.ctx),
            ListsCheck(self.ctx),
            LimitsCheck(self.ctx),
            HeloCheck(self.ctx),
            DnsblCheck(self.ctx),
            spf,
            CalloutCheck(self.ctx),
            GreylistCheck(self.ctx, spf=spf),
        ]
        self.by_name = {check.name: check for check in self.checks}
        self._reloading = False

    @property
    def config(self) -> store.PolicyConfig:
        return self.ctx.config

    def reload(self) -> store.PolicyConfig:
        """Re-read settings and lists now (tests, CLI)."""
        self.ctx.config = store.load()
        return self.ctx.config

    async def _maybe_reload(self) -> None:
        if self._reloading or time.monotonic() - self.config.loaded_at < self.refresh:
            return
        self._reloading = True
        try:
            self.ctx.config = await asyncio.to_thread(store.load)
        finally:
            self._reloading = False

    def _active(self) -> list[Check]:
        config = self.config
        return [check for check in self.checks if check.enabled(config)]

    async def _run(self, session: SessionInfo, hook: str, *args
                   ) -> HookResult | None:
        for check in self._active():
            try:
                result = await getattr(check, hook)(session, *args)
            except Exception:
                log.exception("%s event=policy check=%s hook=%s error=crashed",
                              tag(session), check.name, hook)
                continue
            if result is not None and result.reply:
                return result
        return None

    async def on_connect(self, session: SessionInfo) -> HookResult | None:
        await self._maybe_reload()
        return await self._run(session, "on_connect")

    async def on_helo(self, session: SessionInfo, name: str) -> HookResult | None:
        return await self._run(session, "on_helo", name)

    async def on_mail(self, session: SessionInfo, sender: str) -> HookResult | None:
        session.notes["tx"] = {}
        if session.sender is None:
            session.sender = sender
        return await self._run(session, "on_mail", sender)

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        return await self._run(session, "on_rcpt", rcpt)

    async def on_data(self, session: SessionInfo, data: bytes) -> HookResult | None:
        combined = HookResult()
        for check in self._active():
            try:
                result = await check.on_data(session, data)
            except Exception:
                log.exception("%s event=policy check=%s hook=on_data error=crashed",
                              tag(session), check.name)
                continue
            if result is None:
                continue
            if result.reply:
                return result
            combined.headers.extend(result.headers)
            combined.score += result.score
        # HookResult has no notes field; the handler reads one when present.
        combined.notes = list(smtp_notes(session))
        session.notes["smtp_notes"] = list(combined.notes)
        return combined

    async def on_disconnect(self, session: SessionInfo) -> None:
        # Every check, enabled or not: one may have counted this connection.
        for check in self.checks:
            try:
                await check.on_disconnect(session)
            except Exception:
                log.exception("%s event=policy check=%s hook=on_disconnect "
                              "error=crashed", tag(session), check.name)


def build(settings, clock: Clock | None = None) -> CompositePolicy:
    """The policy the SMTP server runs, configured from ``settings`` and the DB."""
    portdns.configure_from(settings)
    return CompositePolicy(settings, clock=clock)
