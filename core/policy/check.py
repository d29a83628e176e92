"""What every SMTP-time check shares: its context, clock, notes and counters.

A check is a :class:`core.policy.base.Policy` with a ``name`` (the word of
its settings, log event and counter: ``spf`` -> ``spf.enabled``,
``event=spf``) and an ``enabled(config)`` test. Per-transaction state lives
in ``session.notes["tx"]``, which the composite policy empties at MAIL;
per-session state in ``session.notes["policy"]``. Both are dicts, so the
SMTP handler, which copies plain notes into the envelope, leaves them out.
"""

from __future__ import annotations

import logging
import time

from core.logsetup import scrub
from core.policy.base import Policy, SessionInfo
from core.policy.store import PolicyConfig, counters
from core.smtp.address import AddressError, domain_key, parse_path

log = logging.getLogger(__name__)


class Clock:
    """Wall-clock seconds; tests move it forward with :meth:`advance`."""

    def __init__(self, start: float | None = None):
        self.offset = 0.0 if start is None else start - time.time()

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Context:
    """Settings, the current policy snapshot and the clock, for all checks."""

    def __init__(self, settings, config: PolicyConfig, clock: Clock):
        self.settings = settings
        self.config = config
        self.clock = clock
        self.counters = counters


class Check(Policy):
    """Base of the checks; ``ctx`` is shared by all checks of one policy."""

    name = "check"

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def cfg(self) -> PolicyConfig:
        return self.ctx.config

    def enabled(self, config: PolicyConfig) -> bool:
        return bool(config.values.get(f"{self.name}.enabled", False))

    def count(self, result: str) -> None:
        self.ctx.counters.add(self.name, result)


def tag(session: SessionInfo) -> str:
    """The first field of a log line: the queue id, or the peer before MAIL."""
    return session.qid or f"peer={session.peer_ip}"


def state(session: SessionInfo) -> dict:
    """The policy's own per-session state (kept apart from the handler's notes)."""
    return session.notes.setdefault("policy", {})


def tx(session: SessionInfo) -> dict:
    """Notes of the current transaction (emptied at MAIL FROM)."""
    return session.notes.setdefault("tx", {})


def smtp_notes(session: SessionInfo) -> list[str]:
    """Notes for the content filter (Envelope.smtp_notes) of this transaction."""
    return tx(session).setdefault("smtp_notes", [])


def exempt(session: SessionInfo) -> bool:
    """Trusted, outbound or SMTP-welcome-listed: skip SPF, DNSBL, greylisting."""
    if session.trusted or session.direction == "out":
        return True
    if state(session).get("welcome_client"):
        return True
    notes = tx(session)
    return bool(notes.get("welcome_sender") or notes.get("welcome_rcpt"))


def split_address(text: str) -> tuple[str, str]:
    """(local part, domain key) of a mailbox the SMTP handler accepted."""
    if not text:
        return "", ""
    try:
        address = parse_path(f"<{text}>", smtputf8=True)
    except AddressError:
        local, _, domain = text.rpartition("@")
        return local, domain_key(domain)
    return address.local, address.domain_key


def show(value: object) -> str:
    return scrub(value)
