"""The tracking record: one Message row per queue id, one Recipient row each.

This module is the only writer of those rows. Calls are cheap: they put a
job on a queue that one background thread per process writes out in
batches, one transaction per batch, so no event loop waits on the database
and SQLite sees few, large transactions.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from typing import Any, Callable

from core import models
from core.models import Message, QuarantineItem, Recipient, utcnow

log = logging.getLogger(__name__)

_jobs: "queue.Queue[Callable[[], Any] | None]" = queue.Queue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_idle = threading.Event()
_idle.set()

BATCH = 200


def _writer() -> None:
    while True:
        job = _jobs.get()
        if job is None:
            return
        _idle.clear()
        batch = [job]
        while len(batch) < BATCH:
            try:
                nxt = _jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                _jobs.put(None)
                break
            batch.append(nxt)
        try:
            with models.db.atomic():
                for item in batch:
                    item()
        except Exception:
            # One bad row must not lose the batch: retry the jobs one by one.
            for item in batch:
                try:
                    with models.db.atomic():
                        item()
                except Exception:
                    log.exception("event=tracking_error")
        if _jobs.empty():
            _idle.set()


def _submit(job: Callable[[], Any]) -> None:
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_writer, name="tracking", daemon=True)
            _thread.start()
            atexit.register(flush)
    _idle.clear()
    _jobs.put(job)


def flush(timeout: float = 10.0) -> None:
    """Wait until every queued write is in the database."""
    if _thread is None:
        return
    deadline = threading.Event()
    waited = 0.0
    while not (_jobs.empty() and _idle.is_set()) and waited < timeout:
        deadline.wait(0.01)
        waited += 0.01


def _clip(text: object, limit: int = 998) -> str:
    # Surrogate escapes from undecodable 8-bit headers cannot be stored.
    value = str(text or "")[:limit]
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def received(envelope, message_id: str | None = None,
             subject: str | None = None) -> None:
    """A message got 250: create or complete its row and its recipients.

    Idempotent: the SMTP process calls it at 250 and the filter worker again
    when it claims the message, so whichever write lands first creates the
    row and a worker never updates a row that is not there yet.
    """
    fields = {
        "qid": envelope.qid,
        "sender": _clip(envelope.sender),
        "size": envelope.size,
        "client_ip": envelope.client_ip,
        "helo": _clip(envelope.helo, 255),
        "direction": envelope.direction,
    }
    if message_id is not None:
        fields["message_id"] = _clip(message_id)
    if subject is not None:
        fields["subject"] = _clip(subject)
    recipients = list(dict.fromkeys(_clip(r) for r in envelope.recipients))

    def job() -> None:
        update = {getattr(Message, k): v for k, v in fields.items() if k != "qid"}
        (Message.insert(**fields)
         .on_conflict(conflict_target=[Message.qid], update=update)
         .execute())
        msg = Message.get(Message.qid == envelope.qid)
        rows = [{"message": msg.id, "address": r} for r in recipients]
        if rows:
            Recipient.insert_many(rows).on_conflict_ignore().execute()

    _submit(job)


def _update(qid: str, **fields: Any) -> None:
    def job() -> None:
        Message.insert(qid=qid).on_conflict_ignore().execute()
        Message.update(**fields).where(Message.qid == qid).execute()

    _submit(job)


def filtered(qid: str, verdict: str, score: float | None = None, virus: str = "",
             detail: str = "", message_id: str | None = None,
             subject: str | None = None) -> None:
    fields: dict[str, Any] = {
        "verdict": verdict, "score": score, "virus": _clip(virus),
        "detail": _clip(detail, 4000), "filtered_at": utcnow(),
    }
    if message_id is not None:
        fields["message_id"] = _clip(message_id)
    if subject is not None:
        fields["subject"] = _clip(subject)
    _update(qid, **fields)


def status(qid: str, status: str, done: bool = False) -> None:
    fields: dict[str, Any] = {"status": status}
    if done:
        fields["done_at"] = utcnow()
    _update(qid, **fields)


def recipient_status(qid: str, address: str, status: str, reply: str = "",
                     attempts: int | None = None) -> None:
    def job() -> None:
        msg = Message.get_or_none(Message.qid == qid)
        if msg is None:
            return
        fields: dict[str, Any] = {
            "status": status, "reply": _clip(reply, 1000), "updated_at": utcnow(),
        }
        if attempts is not None:
            fields["attempts"] = attempts
        (Recipient.update(**fields)
         .where(Recipient.message == msg, Recipient.address == _clip(address))
         .execute())

    _submit(job)


def quarantined(qid: str, kind: str, reason: str) -> None:
    def job() -> None:
        msg = Message.get_or_none(Message.qid == qid)
        if msg is None:
            return
        QuarantineItem.create(message=msg, kind=kind, reason=_clip(reason, 1000))
        msg.status = "quarantined"
        msg.save()
        (Recipient.update(status="quarantined", updated_at=utcnow())
         .where(Recipient.message == msg).execute())

    _submit(job)
