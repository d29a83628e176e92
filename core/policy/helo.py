"""HELO checks: a HELO is required, must be a FQDN, must not be our name.

The verdict is taken at HELO and the refusal given at RCPT, as Postfix's
``smtpd_delay_reject`` does: clients handle a refused RCPT better than a
refused HELO, and the welcome lists and the log line can then name the
sender and recipient. A name is a FQDN when it has at least two labels of
letters, digits and hyphens (RFC 1123 s2.1) or is an address literal.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import Check, exempt, show, state, tag

log = logging.getLogger(__name__)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def is_fqdn(name: str) -> bool:
    """A dotted host name with a non-numeric top label, or an address literal."""
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return False
        return True
    labels = name.lower().rstrip(".").split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return False
    return all(_LABEL.match(label) for label in labels)


class HeloCheck(Check):
    """Refuses clients that skip HELO, give a bare name or claim to be us."""

    name = "helo"

    def _own_names(self) -> set[str]:
        hostname = str(getattr(self.ctx.settings, "hostname", "")).lower()
        return {hostname.rstrip("."), "localhost", "localhost.localdomain"}

    def _verdict(self, session: SessionInfo) -> str:
        name = session.helo.strip()
        values = self.cfg.values
        if not name:
            return "missing" if values["helo.required"] else "ok"
        if values["helo.reject_own_name"]:
            if name.lower().rstrip(".") in self._own_names():
                return "own_name"
        if values["helo.require_fqdn"] and not is_fqdn(name):
            return "not_fqdn"
        return "ok"

    async def on_mail(self, session: SessionInfo, sender: str) -> HookResult | None:
        if exempt(session) or not self.cfg.values["helo.required"]:
            return None
        if not session.helo.strip():
            log.info("%s event=helo result=missing action=reject", tag(session))
            self.count("missing")
            return HookResult(reply=replies.NEED_HELO.format())
        return None

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if exempt(session):
            return None
        verdict = self._verdict(session)
        if state(session).get("helo_logged") != session.helo:
            state(session)["helo_logged"] = session.helo
            log.info("%s event=helo helo=%s result=%s", tag(session),
                     show(session.helo), verdict)
            self.count(verdict)
        permanent = self.cfg.values["helo.permanent"]
        if verdict == "not_fqdn":
            reply = replies.HELO_NOT_FQDN if permanent else replies.HELO_NOT_FQDN_TEMP
            return HookResult(reply=reply.format())
        if verdict == "own_name":
            reply = replies.HELO_OWN_NAME if permanent else replies.HELO_OWN_NAME_TEMP
            return HookResult(reply=reply.format())
        return None
