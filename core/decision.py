"""The one place where a message's verdict is made.

:func:`decide` takes a :class:`Context` (what the analysers found) and
returns a :class:`Decision` (what to do). It does no I/O and reads no
clock, so the same context always gives the same decision and a list of
decisions can be compared with a committed golden file
(:meth:`Decision.describe`).

The rules run in order and the first that returns a decision wins; the
rule system plugs in by adding entries to :data:`RULES`. A rule that
lets a message through returns ``None``; the last rule, ``default-relay``,
always decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from core import headers


@dataclasses.dataclass
class Context:
    """What the filter found about one message, and the levels to judge it."""

    envelope: Any  # core.spool.Envelope
    parsed: Any  # core.message.ParsedMessage
    virus: Any = None  # VirusResult, None when not scanned
    virus_error: str = ""  # why the scan could not run, "" when it ran
    spam: Any = None  # SpamResult, None when Bayes is off or not built
    smtp_score: float = 0.0
    smtp_notes: tuple[str, ...] = ()
    tag_level: float = 3.0
    quarantine_level: float = 6.0
    virus_fail_open: bool = False

    @classmethod
    def build(cls, settings, envelope, parsed, virus=None, virus_error: str = "",
              spam=None) -> "Context":
        """A context with the levels taken from ``settings``."""
        return cls(
            envelope=envelope, parsed=parsed, virus=virus, virus_error=virus_error,
            spam=spam, smtp_score=float(envelope.smtp_score or 0.0),
            smtp_notes=tuple(envelope.smtp_notes or ()),
            tag_level=settings.spam_tag_level,
            quarantine_level=settings.spam_quarantine_level,
            virus_fail_open=settings.virus_fail_open,
        )

    @property
    def score(self) -> float:
        """Content score plus what the SMTP-time checks added."""
        spam_score = float(getattr(self.spam, "score", 0.0) or 0.0)
        codes = _defect_codes(self.parsed)
        defects = sum(p for code, (p, _) in HEADER_DEFECTS.items() if code in codes)
        return round(spam_score + self.smtp_score + defects, 3)

    @property
    def tests(self) -> list[str]:
        """Names of what contributed, for X-Spam-Status ``tests=``."""
        names = []
        if self.spam is not None and not getattr(self.spam, "note", ""):
            # A note says there is no Bayes score yet (too little training).
            names.append(headers.bayes_test(getattr(self.spam, "probability", None)))
        codes = _defect_codes(self.parsed)
        names.extend(t for code, (_, t) in HEADER_DEFECTS.items() if code in codes)
        # Each URI blocklist zone that hit is named once (URIBL_MULTI...).
        hits = getattr(self.spam, "uri_hits", None) or ()
        names.extend(dict.fromkeys(getattr(hit, "test", "") for hit in hits))
        if getattr(self.spam, "uri_note", ""):
            # Some URIs were not looked up (resolver down, cap): a clean
            # URI result means less than usual.
            names.append("URIBL_UNCHECKED")
        names.extend(self.smtp_notes)
        if self.virus is None and self.virus_error:
            names.append("VIRUS_NOT_SCANNED")
        return [name for name in names if name]


# Header defects that make a message suspect though not unreadable, with the
# points they add and their test name. An unparseable From defeats every
# From-based trust decision (cases 019, 020), so it must weigh in the score.
HEADER_DEFECTS = {
    "invalid-from": (2.5, "PC_FROM_INVALID"),
    "no-from": (1.0, "PC_NO_FROM"),
}


def _defect_codes(parsed) -> set[str]:
    return {str(d).split(":", 1)[0] for d in (getattr(parsed, "defects", ()) or ())}


@dataclasses.dataclass(frozen=True)
class Decision:
    """What happens to a message, and why."""

    action: str  # relay | quarantine | defer
    verdict: str  # clean | spam | virus | blocked | error
    rule: str  # name of the rule that decided
    reason: str = ""
    kind: str = ""  # quarantine kind: spam | virus | attachment
    score: float = 0.0
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()

    def describe(self) -> str:
        """One stable line for logs and golden files."""
        line = (f"action={self.action} verdict={self.verdict} rule={self.rule} "
                f"score={self.score:.1f}")
        if self.kind:
            line += f" kind={self.kind}"
        if self.reason:
            line += f" reason={self.reason!r}"
        for name, value in self.add_headers:
            line += f"\n  + {name}: {value}".rstrip()
        return line


Rule = Callable[[Context], "Decision | None"]


def _virus(ctx: Context) -> Decision | None:
    if ctx.virus is None or not getattr(ctx.virus, "infected", False):
        return None
    name = getattr(ctx.virus, "name", "") or "unknown"
    return Decision("quarantine", "virus", "virus", reason=f"virus {name}",
                    kind="virus", score=ctx.score)


def _scanner_down(ctx: Context) -> Decision | None:
    # Never deliver unscanned mail unless the operator chose to.
    if ctx.virus is not None or not ctx.virus_error or ctx.virus_fail_open:
        return None
    return Decision("defer", "error", "scanner-unavailable",
                    reason=ctx.virus_error, score=ctx.score)


def _partly_unscanned(ctx: Context) -> Decision | None:
    # Parts clamd was not given (over its stream limit) were never scanned.
    unscanned = getattr(ctx.virus, "unscanned", "") if ctx.virus is not None else ""
    if not unscanned:
        return None
    return Decision("quarantine", "blocked", "partly-unscanned",
                    reason=f"not virus scanned: {unscanned}", kind="attachment",
                    score=ctx.score)


def _malformed(ctx: Context) -> Decision | None:
    # A structure the filters could not trust was not really scanned.
    if not getattr(ctx.parsed, "malformed", False):
        return None
    reason = getattr(ctx.parsed, "malformed_reason", "") or "malformed MIME"
    return Decision("quarantine", "blocked", "malformed-mime",
                    reason=f"malformed MIME: {reason}", kind="attachment",
                    score=ctx.score)


def _welcome_listed(ctx: Context) -> bool:
    # Left by core/policy/lists.py for an envelope on a welcome list: the
    # admin vouched for it, so its spam score alone does not hold it back.
    # Viruses and broken MIME are still stopped by the rules before this.
    return any(note.startswith("welcome_list=") for note in ctx.smtp_notes)


def _spam_quarantine(ctx: Context) -> Decision | None:
    if ctx.score < ctx.quarantine_level or _welcome_listed(ctx):
        return None
    return Decision("quarantine", "spam", "spam-quarantine",
                    reason=f"spam score {ctx.score:.1f} >= "
                           f"{ctx.quarantine_level:.1f}",
                    kind="spam", score=ctx.score)


def _default_relay(ctx: Context) -> Decision:
    score = ctx.score
    added = headers.spam_headers(score, ctx.tag_level, ctx.tests)
    verdict = "spam" if score >= ctx.tag_level else "clean"
    return Decision("relay", verdict, "default-relay", score=score,
                    add_headers=tuple(added),
                    remove_headers=headers.VERDICT_HEADERS)


RULES: list[tuple[str, Rule]] = [
    ("virus", _virus),
    ("scanner-unavailable", _scanner_down),
    ("partly-unscanned", _partly_unscanned),
    ("malformed-mime", _malformed),
    ("spam-quarantine", _spam_quarantine),
]


def decide(ctx: Context) -> Decision:
    """The verdict for one message: first matching rule, else relay."""
    for _name, rule in RULES:
        decision = rule(ctx)
        if decision is not None:
            return decision
    return _default_relay(ctx)
