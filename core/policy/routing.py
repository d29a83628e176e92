"""Sender-specified routing: ``user%other@us``, ``other!user@us`` and
``"user@other"@us`` from untrusted clients are refused as relay attempts.

Such a recipient is at one of our relay domains, so the relay check lets it
through, but an older next hop may route it on to ``other``: the classic
open-relay probes. Postfix refuses the same with
``allow_untrusted_routing = no``, its default. Trusted clients may use them.

Only a routing mark next to a host name (a dotted name or an address
literal) is refused: a next hop can route nowhere without one, and quoted
local parts such as ``"a@b"@us`` are real, valid mailboxes (case 013).
"""

from __future__ import annotations

import logging
import re

from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import Check, show, split_address, tag

log = logging.getLogger(__name__)

# A host a next hop could route to: a dotted name or an address literal.
_HOST = r"(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+\.?|\[[^\]]*\])"
_ROUTED = re.compile(
    rf"[%@]{_HOST}\s*$"  # user%host, "user@host"
    rf"|^\s*{_HOST}!"  # host!user (bang path)
    , re.IGNORECASE)


def routes_elsewhere(local: str) -> bool:
    """Whether a local part names another host to route to."""
    return bool(_ROUTED.search(local.strip('"')))


class RoutingCheck(Check):
    """Refuses recipients whose local part carries routing to another host."""

    name = "routing"

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if session.trusted or session.direction == "out":
            return None
        local = split_address(rcpt)[0]
        if not routes_elsewhere(local):
            return None
        log.info("%s event=routing rcpt=<%s> action=reject", tag(session), show(rcpt))
        self.count("reject")
        return HookResult(reply=replies.RELAY_DENIED.format(rcpt=f"<{show(rcpt)}>"))
