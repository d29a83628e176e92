"""Quarantine operations shared by the web admin, the JSON API and the CLI.

A quarantined message is one file in ``<data_dir>/quarantine/<qid>`` (written
by the filter with ``Spool.store_quarantine``) and one or more
``QuarantineItem`` rows (spam, virus, attachment). Release puts the message
into the delivery queue with every recipient queued again; delete removes
the file. Both first move the rows out of ``held`` with one conditional
update, so two admins clicking at once cannot release a message twice.

Limits: a message is shown as its header fields and text parts only; HTML
parts are shown as source text, never rendered, and attachments are listed,
not opened.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time

from core import tracking
from core.logsetup import scrub
from core.models import Message, QuarantineItem, utcnow
from core.spool import RecipientState, Spool, SpoolError, valid_qid

log = logging.getLogger(__name__)

KINDS = ("spam", "virus", "attachment")
STATES = ("held", "released", "deleted")
MAX_TEXT = 64 * 1024
MAX_HEADERS = 200
MAX_HEADER = 4000
MAX_PARTS = 100


class QuarantineError(Exception):
    """An operation was refused; ``status`` is the matching HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# region listing


def list_items(kind: str = "", state: str = "held", page: int = 1,
               per_page: int = 50):
    """One page of quarantine items, newest first, with their messages."""
    from core.stats import Page

    if kind and kind not in KINDS:
        raise QuarantineError(f"kind {kind!r} is not one of " + ", ".join(KINDS))
    if state and state not in STATES:
        raise QuarantineError(f"state {state!r} is not one of " + ", ".join(STATES))
    query = QuarantineItem.select(QuarantineItem, Message).join(Message)
    if kind:
        query = query.where(QuarantineItem.kind == kind)
    if state:
        query = query.where(QuarantineItem.state == state)
    query = query.order_by(QuarantineItem.created_at.desc(), QuarantineItem.id.desc())
    page = max(1, int(page))
    per_page = max(1, min(int(per_page), 500))
    total = query.count()
    return Page(items=list(query.paginate(page, per_page)), total=total,
                page=page, per_page=per_page)


def counts() -> dict[str, int]:
    """Held items per kind."""
    result = {kind: 0 for kind in KINDS}
    for item in (QuarantineItem.select(QuarantineItem.kind)
                 .where(QuarantineItem.state == "held")):
        result[item.kind] = result.get(item.kind, 0) + 1
    return result


def get_item(item_id) -> QuarantineItem:
    try:
        number = int(item_id)
    except (TypeError, ValueError):
        raise QuarantineError(f"quarantine id {item_id!r} is not a number") from None
    item = (QuarantineItem.select(QuarantineItem, Message).join(Message)
            .where(QuarantineItem.id == number).first())
    if item is None:
        raise QuarantineError(f"there is no quarantine item {number}", 404)
    return item


def item_dict(item: QuarantineItem) -> dict:
    from core.stats import _iso

    msg = item.message
    return {
        "id": item.id,
        "qid": msg.qid,
        "kind": item.kind,
        "reason": item.reason,
        "state": item.state,
        "created_at": _iso(item.created_at),
        "handled_at": _iso(item.handled_at),
        "handled_by": item.handled_by,
        "sender": msg.sender,
        "subject": msg.subject,
        "score": msg.score,
        "virus": msg.virus,
        "size": msg.size,
    }


# endregion

# region reading


def read(spool: Spool, item: QuarantineItem):
    """The envelope and bytes of a quarantined message."""
    qid = item.message.qid
    if not valid_qid(qid):
        # A queue id names a file; only our own hex ids may do that.
        raise QuarantineError(f"item {item.id} has no valid queue id", 500)
    try:
        return spool.read_quarantine(qid)
    except FileNotFoundError:
        raise QuarantineError(
            f"the quarantine file of {qid} is gone (item {item.id} is {item.state})",
            410,
        ) from None
    except SpoolError as exc:
        raise QuarantineError(f"the quarantine file of {qid} is damaged: {exc}",
                              500) from None


@dataclasses.dataclass
class PartInfo:
    content_type: str
    filename: str
    size: int


@dataclasses.dataclass
class MessageView:
    """What the admin sees of a message: never anything a browser would run."""

    headers: list[tuple[str, str]]
    text: str
    html_source: str
    parts: list[PartInfo]
    defects: list[str] = dataclasses.field(default_factory=list)
    truncated: bool = False


def preview(data: bytes, qid: str = "-") -> MessageView:
    """Header fields, decoded text and parts of a message, bounded in size.

    Parsed by core.mime, as the filters saw it (it never raises and is
    bounded in depth and parts).
    """
    from core.mime import parse

    parsed = parse(data, qid=qid)
    headers = [(name, value[:MAX_HEADER])
               for name, value in parsed.headers[:MAX_HEADERS]]
    texts: list[str] = []
    html: list[str] = []
    parts: list[PartInfo] = []
    for part in parsed.parts[:MAX_PARTS]:
        parts.append(PartInfo(part.content_type, part.filename, len(part.payload)))
        if not part.text or part.filename or part.disposition == "attachment":
            continue
        if part.content_type == "text/html":
            html.append(part.text)
        else:
            texts.append(part.text)
    text = "\n\n".join(texts)
    source = "\n\n".join(html)
    truncated = len(text) > MAX_TEXT or len(source) > MAX_TEXT
    return MessageView(headers=headers, text=text[:MAX_TEXT],
                       html_source=source[:MAX_TEXT], parts=parts,
                       defects=list(parsed.defects)[:50], truncated=truncated)


# endregion

# region actions


def _claim(item: QuarantineItem, new_state: str, by: str) -> int:
    """Move every held item of the message to ``new_state``; 0 if none was."""
    return (QuarantineItem
            .update(state=new_state, handled_at=utcnow(), handled_by=by[:64])
            .where(QuarantineItem.message == item.message_id,
                   QuarantineItem.state == "held")
            .execute())


def _refuse_handled(item: QuarantineItem) -> QuarantineError:
    fresh = QuarantineItem.get_by_id(item.id)
    who = f" by {fresh.handled_by}" if fresh.handled_by else ""
    return QuarantineError(
        f"quarantine item {item.id} was already {fresh.state}{who}", 409)


def release(spool: Spool, item_id, by: str) -> QuarantineItem:
    """Put the message back into the delivery queue, every recipient queued."""
    item = get_item(item_id)
    qid = item.message.qid
    if item.state != "held":
        raise _refuse_handled(item)
    envelope, data = read(spool, item)
    if not _claim(item, "released", by):
        raise _refuse_handled(item)

    envelope.rcpt_state = {rcpt: RecipientState() for rcpt in envelope.recipients}
    envelope.attempts = 0
    envelope.next_attempt = 0.0

    # Tracking first, so delivery's own updates always land after ours.
    tracking.status(qid, "queued")
    for rcpt in envelope.recipients:
        tracking.recipient_status(qid, rcpt, "queued", reply="released from quarantine",
                                  attempts=0)
    tracking.flush()

    try:
        spool.rewrite(envelope, data, "deliver")
    except OSError:
        (QuarantineItem.update(state="held", handled_at=None, handled_by="")
         .where(QuarantineItem.message == item.message_id,
                QuarantineItem.state == "released").execute())
        tracking.status(qid, "quarantined")
        tracking.flush()
        log.exception("%s event=quarantine_release_failed item=%d", qid, item.id)
        raise QuarantineError(f"could not queue {qid} for delivery; see the log",
                              500) from None
    spool.remove_quarantine(qid)
    log.info("%s event=quarantine_release item=%d kind=%s by=%s rcpts=%d", qid,
             item.id, item.kind, scrub(by), len(envelope.recipients))
    return QuarantineItem.get_by_id(item.id)


def delete(spool: Spool, item_id, by: str) -> QuarantineItem:
    """Remove the quarantined message for good."""
    item = get_item(item_id)
    qid = item.message.qid
    if item.state != "held" or not _claim(item, "deleted", by):
        raise _refuse_handled(item)

    if valid_qid(qid):
        spool.remove_quarantine(qid)
    tracking.status(qid, "deleted", done=True)
    tracking.flush()
    log.info("%s event=quarantine_delete item=%d kind=%s by=%s", qid, item.id,
             item.kind, scrub(by))
    return QuarantineItem.get_by_id(item.id)


def learn(spool: Spool, item_id, is_spam: bool, by: str,
          settings=None) -> QuarantineItem:
    """Train the Bayes filter with this message as spam or as ham.

    Returns the item; ``item.learned`` is False when the filter already
    knew the message as that.
    """
    function = bayes_function("learn")
    if function is None:
        raise QuarantineError("the Bayes filter is not installed", 501)
    item = get_item(item_id)
    _, data = read(spool, item)

    item.learned = bool(function(data, is_spam, settings=settings))
    log.info("%s event=bayes_learn item=%d as=%s new=%s by=%s", item.message.qid,
             item.id, "spam" if is_spam else "ham", item.learned, scrub(by))
    return item


# endregion


# A filter worker stores a quarantined message's file, then its rows a
# moment later (tracking writes in batches); a worker killed in between
# leaves a file that no page lists. Files this old without an item are
# taken to be such orphans: a live worker records its own well before.
ORPHAN_AGE = 30.0
# The quarantine kind of each verdict a quarantined message can carry.
_KIND_OF_VERDICT = {"spam": "spam", "virus": "virus", "blocked": "attachment"}


def adopt_orphans(spool: Spool, min_age: float = ORPHAN_AGE) -> int:
    """Give every quarantine file without an item one; returns how many."""
    held = sorted(name for name in os.listdir(spool.quarantine_dir)
                  if valid_qid(name))
    known: set[str] = set()
    for start in range(0, len(held), 500):
        query = (Message.select(Message.qid).join(QuarantineItem)
                 .where(Message.qid.in_(held[start:start + 500])))
        known.update(qid for (qid,) in query.tuples())

    adopted = 0
    now = time.time()
    for qid in held:
        if qid in known:
            continue
        path = spool.quarantine_dir / qid
        try:
            if now - path.stat().st_mtime < min_age:
                continue
            envelope, _data = spool.read_file(path)
        except FileNotFoundError:
            continue  # released or deleted meanwhile
        except (OSError, SpoolError, ValueError) as exc:
            log.warning("%s event=quarantine_orphan_unreadable error=%s", qid,
                        scrub(str(exc)))
            continue
        kind = _KIND_OF_VERDICT.get(envelope.verdict, "spam")
        reason = (f"recorded late: the filter worker stopped before recording "
                  f"it (verdict {envelope.verdict or 'unknown'}, score "
                  f"{envelope.score})")
        if Message.get_or_none(Message.qid == qid) is None:
            tracking.received(envelope)
        tracking.filtered(qid, envelope.verdict or kind, envelope.score,
                          detail=reason)
        tracking.quarantined(qid, kind, reason)
        log.warning("%s event=quarantine_adopted kind=%s", qid, kind)
        adopted += 1
    tracking.flush()
    return adopted


def bayes_function(name: str):
    """A function of the Bayes filter (train, learn, stats, dump, restore).

    None when core.spam is missing or lacks it, so the admin still works on
    an install without the filter.
    """
    try:
        module = importlib.import_module("core.spam")
    except ImportError:
        return None
    function = getattr(module, name, None)
    return function if callable(function) else None
