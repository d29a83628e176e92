"""Block, welcome and SMTP welcome lists for senders, recipients and clients.

Patterns (rows of ``policy_list_entry``):

* ``user@example.org``: that address (case-insensitive);
* ``example.org`` or ``@example.org``: any address at that domain;
* ``*.example.org``: any address at a subdomain (not the domain itself);
* ``/regex/``: a Python regular expression searched in the whole address,
  case-insensitive;
* ``<>``: the null sender;
* client entries: an IP address or network (``192.0.2.0/24``, ``2001:db8::/32``).

The ``smtp_welcome`` list lets its senders, recipients and clients skip
greylisting, SPF, DNSBL and receiver verification. A ``welcome`` hit is
recorded in the transaction's smtp_notes (``welcome_list=sender``) for the
content filter; a ``block`` hit refuses at RCPT with 550 5.7.1. When an
address is on both, welcome wins: it is the narrower, deliberate choice.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Callable

from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import (
    Check, show, smtp_notes, split_address, state, tag, tx,
)
from core.policy.store import PolicyConfig, PolicyError

log = logging.getLogger(__name__)

Matcher = Callable[[str], bool]


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]").split("%")[0])
    except ValueError:
        return None


def compile_pattern(kind: str, pattern: str) -> Matcher:
    """A test for one list entry; PolicyError if the pattern is unusable."""
    pattern = pattern.strip()
    if not pattern:
        raise PolicyError("empty pattern")
    if kind == "client":
        try:
            net = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            raise PolicyError(f"client pattern {pattern!r} is not an IP address "
                              "or network such as 192.0.2.0/24") from None

        def client(value: str) -> bool:
            ip = _ip(value)
            if ip is not None and ip.version == 6 and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            return ip is not None and ip.version == net.version and ip in net

        return client
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            regex = re.compile(pattern[1:-1], re.IGNORECASE)
        except re.error as exc:
            raise PolicyError(f"regular expression {pattern!r}: {exc}") from None
        return lambda value: regex.search(value) is not None
    if pattern == "<>":
        return lambda value: value == ""
    lowered = pattern.lower()
    if lowered.startswith("*."):
        suffix = lowered[1:].rstrip(".")
        return lambda value: split_address(value)[1].endswith(suffix)
    if "@" in lowered.lstrip("@"):
        return lambda value: value.lower() == lowered
    domain = lowered.lstrip("@").rstrip(".")
    return lambda value: value != "" and split_address(value)[1] == domain


class Lists:
    """The compiled entries of one policy snapshot."""

    def __init__(self, config: PolicyConfig):
        self.by_key: dict[tuple[str, str], list[tuple[str, Matcher]]] = {}
        for entry in config.entries:
            try:
                matcher = compile_pattern(entry.kind, entry.pattern)
            except PolicyError as exc:
                log.warning("event=lists entry=%s error=%s", show(entry.pattern), exc)
                continue
            self.by_key.setdefault((entry.list_name, entry.kind), []).append(
                (entry.pattern, matcher))

    def match(self, list_name: str, kind: str, value: str) -> str | None:
        """The first pattern of that list that matches ``value``, or None."""
        for pattern, matcher in self.by_key.get((list_name, kind), ()):
            if matcher(value):
                return pattern
        return None


class ListsCheck(Check):
    """Block and welcome lists; SMTP welcome list marks a session exempt."""

    name = "lists"

    def __init__(self, ctx):
        super().__init__(ctx)
        self._compiled: tuple[int, Lists] | None = None

    def lists(self) -> Lists:
        config = self.cfg
        if self._compiled is None or self._compiled[0] != id(config):
            self._compiled = (id(config), Lists(config))
        return self._compiled[1]

    async def on_connect(self, session: SessionInfo) -> HookResult | None:
        hit = self.lists().match("smtp_welcome", "client", session.peer_ip)
        if hit:
            state(session)["welcome_client"] = True
            log.info("%s event=lists list=smtp_welcome kind=client pattern=%s",
                     tag(session), show(hit))
            self.count("smtp_welcome")
        return None

    async def on_mail(self, session: SessionInfo, sender: str) -> HookResult | None:
        lists = self.lists()
        notes = tx(session)
        hit = lists.match("smtp_welcome", "sender", sender)
        if hit:
            notes["welcome_sender"] = True
            log.info("%s event=lists list=smtp_welcome kind=sender pattern=%s",
                     tag(session), show(hit))
            self.count("smtp_welcome")
        hit = lists.match("welcome", "sender", sender)
        if hit:
            notes["welcome_list_sender"] = hit
            smtp_notes(session).append("welcome_list=sender")
            log.info("%s event=lists list=welcome kind=sender pattern=%s",
                     tag(session), show(hit))
            self.count("welcome")
        return None

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        lists = self.lists()
        notes = tx(session)
        notes["welcome_rcpt"] = False
        if lists.match("smtp_welcome", "recipient", rcpt):
            notes["welcome_rcpt"] = True
            self.count("smtp_welcome")
        welcome = lists.match("welcome", "recipient", rcpt)
        if welcome:
            marker = "welcome_list=recipient"
            if marker not in smtp_notes(session):
                smtp_notes(session).append(marker)
            log.info("%s event=lists list=welcome kind=recipient rcpt=<%s> "
                     "pattern=%s", tag(session), show(rcpt), show(welcome))
            self.count("welcome")
        if welcome or notes.get("welcome_list_sender"):
            return None
        sender = session.sender or ""
        hit = lists.match("block", "sender", sender)
        if hit:
            log.info("%s event=lists list=block kind=sender sender=<%s> "
                     "pattern=%s action=reject", tag(session), show(sender), show(hit))
            self.count("block")
            return HookResult(reply=replies.SENDER_BLOCKED.format(
                address=show(sender)))
        hit = lists.match("block", "recipient", rcpt)
        if hit:
            log.info("%s event=lists list=block kind=recipient rcpt=<%s> "
                     "pattern=%s action=reject", tag(session), show(rcpt), show(hit))
            self.count("block")
            return HookResult(reply=replies.RECIPIENT_BLOCKED.format(
                address=show(rcpt)))
        return None
