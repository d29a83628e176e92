"""The hooks through which SMTP-time filters act on a session.

The SMTP handler calls each hook of the active :class:`Policy` at its stage
of the dialogue. A hook returns ``None`` to go on, or a
:class:`core.replies.Reply` (formatted text) to send instead of the normal
answer. Hooks are coroutines: a DNS lookup must not block other sessions.
"""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass
class SessionInfo:
    """What the policy may know about one SMTP connection."""

    peer_ip: str  # the real client (after XCLIENT / PROXY), never the front host
    peer_port: int = 0
    direction: str = "in"  # in: external listener, out: internal listener
    trusted: bool = False  # peer in trusted_networks
    helo: str = ""
    tls: bool = False
    qid: str = ""  # of the current transaction, "" outside one
    sender: str | None = None  # None before MAIL FROM; "" is the null sender
    recipients: list[str] = dataclasses.field(default_factory=list)
    connected_at: float = dataclasses.field(default_factory=time.time)
    # Per-session notes a filter leaves for a later hook (e.g. SPF result).
    notes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class HookResult:
    """A refusal (reply set) and/or headers to add at end of DATA."""

    reply: str | None = None  # full reply line, e.g. "550 5.7.1 ..."
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    score: float = 0.0  # spam score contribution carried to the filter


class Policy:
    """No-op policy; SMTP-time filters override the hooks they need."""

    async def on_connect(self, session: SessionInfo) -> HookResult | None:
        return None

    async def on_helo(self, session: SessionInfo, name: str) -> HookResult | None:
        return None

    async def on_mail(self, session: SessionInfo, sender: str) -> HookResult | None:
        return None

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        return None

    async def on_data(self, session: SessionInfo, data: bytes) -> HookResult | None:
        """After the final dot, before the message is stored."""
        return None

    async def on_disconnect(self, session: SessionInfo) -> None:
        return None
