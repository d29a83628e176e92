"""The tracking record: one Message row per queue id, one Recipient row each.

This module is the only writer of those rows. Calls are cheap: they put a
job on a queue that one background thread per process writes out in
batches, one transaction per batch, so no event loop waits on the database
and SQLite sees few, large transactions. Runs of the same kind of write in
a batch go to the database as one ``executemany`` of plain SQL: building a
peewee query per message cost the SMTP process half of its CPU per message.

The filter also records why it judged a message so: the Bayes probability
and the clues (tokens that weighed most, URI blocklist hits, the note when
Bayes gave no score, the note when URI lookups were skipped or failed), as
bounded JSON in ``message.spam_clues``
(:func:`clues_of` builds it, :func:`read_clues` reads it back for the
pages, the API and the CLI). At most ``MAX_CLUES`` tokens of ``MAX_TOKEN``
characters and ``MAX_URI_HITS`` hits are kept; the rest is dropped.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import logging
import math
import queue
import threading
import time
from typing import Any, Callable

import peewee as pw

from core import models
from core.models import Message, QuarantineItem, Recipient, utcnow

log = logging.getLogger(__name__)

BATCH = 500
# Seconds the writer waits after a first job for more to join its batch:
# one transaction and one wake-up of the thread for many messages, instead
# of one each, at the price of rows showing up this much later.
LINGER = 0.05
# Bounds of the recorded spam clues: tokens and their text are attacker
# chosen, so what is stored per message stays small whatever arrives.
MAX_CLUES = 12
MAX_TOKEN = 80
MAX_URI_HITS = 20
MAX_NOTE = 500

# A job is (statement key, parameters) for the batched SQL below, or
# (None, callable) for the rare writes done through peewee.
_jobs: "queue.Queue[tuple[str | None, Any] | None]" = queue.Queue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_pending = 0
_pending_lock = threading.Lock()
_done = threading.Condition(_pending_lock)
# Set while someone waits in flush(): the writer then does not linger.
_hurry = threading.Event()

# Columns without a database default must all be given: peewee keeps its
# defaults in Python, not in the schema.
_SQL = {
    "received": (
        "INSERT INTO message (qid, message_id, sender, subject, size, client_ip,"
        " helo, direction, virus, verdict, status, detail, received_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, '', 'queued', 'queued',"
        " '', {p})"
        " ON CONFLICT (qid) DO UPDATE SET sender = excluded.sender,"
        " size = excluded.size, client_ip = excluded.client_ip,"
        " helo = excluded.helo, direction = excluded.direction,"
        " received_at = excluded.received_at,"
        " message_id = CASE WHEN excluded.message_id <> ''"
        " THEN excluded.message_id ELSE message.message_id END,"
        " subject = CASE WHEN excluded.subject <> ''"
        " THEN excluded.subject ELSE message.subject END"
    ),
    "recipient": (
        "INSERT INTO recipient (message_id, address, status, reply, attempts,"
        " updated_at) SELECT id, {p}, 'queued', '', 0, {p} FROM message"
        " WHERE qid = {p} ON CONFLICT DO NOTHING"
    ),
    "stub": (
        "INSERT INTO message (qid, message_id, sender, subject, size, client_ip,"
        " helo, direction, virus, verdict, status, detail, received_at)"
        " VALUES ({p}, '', '', '', 0, '', '', 'in', '', 'queued', 'queued', '',"
        " {p}) ON CONFLICT (qid) DO NOTHING"
    ),
    "filtered": (
        "UPDATE message SET verdict = {p}, score = {p}, virus = {p}, detail = {p},"
        " filtered_at = {p}, bayes_probability = {p}, spam_clues = {p}"
        " WHERE qid = {p}"
    ),
    "status": "UPDATE message SET status = {p} WHERE qid = {p}",
    "detail": "UPDATE message SET detail = {p} WHERE qid = {p}",
    "status_done": "UPDATE message SET status = {p}, done_at = {p} WHERE qid = {p}",
    "rcpt_status": (
        "UPDATE recipient SET status = {p}, reply = {p}, updated_at = {p},"
        " attempts = COALESCE({p}, attempts)"
        " WHERE address = {p} AND message_id = (SELECT id FROM message"
        " WHERE qid = {p})"
    ),
    "message_id": "UPDATE message SET message_id = {p} WHERE qid = {p}",
    "subject": "UPDATE message SET subject = {p} WHERE qid = {p}",
}


def _statement(key: str) -> str:
    return _SQL[key].format(p=models.db.param)


def _run(kind: str | None, group: list[Any]) -> None:
    if kind is None:
        for job in group:
            job()
        return
    cursor = models.db.cursor()
    cursor.executemany(_statement(kind), group)


def _write(batch: list[tuple[str | None, Any]]) -> None:
    # Consecutive jobs of one kind become one executemany; order is kept,
    # so a status update never runs before the row it updates.
    kind, group = batch[0][0], []
    for job_kind, payload in batch:
        if job_kind != kind:
            _run(kind, group)
            kind, group = job_kind, []
        group.append(payload)
    _run(kind, group)


def _write_transaction():
    # BEGIN IMMEDIATE on SQLite: a job reads (Message.get) and then writes;
    # a deferred transaction would then fail at once with "database is
    # locked", without waiting, whenever another process wrote in between.
    if isinstance(models.db.obj, pw.SqliteDatabase):
        return models.db.atomic(lock_type="IMMEDIATE")
    return models.db.atomic()


def _writer() -> None:
    global _pending
    while True:
        first = _jobs.get()
        if first is None:
            return
        _hurry.wait(LINGER)
        batch = [first]
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
            with _write_transaction():
                _write(batch)
        except Exception:
            # One bad row must not lose the batch: retry the jobs one by one.
            for job in batch:
                try:
                    with _write_transaction():
                        _write([job])
                except Exception:
                    log.exception("event=tracking_error kind=%s", job[0])
        with _done:
            _pending -= len(batch)
            if _pending == 0:
                _hurry.clear()
                _done.notify_all()


def _submit(kind: str | None, payload: Any) -> None:
    global _thread, _pending
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_writer, name="tracking", daemon=True)
            _thread.start()
            atexit.register(flush)
    with _done:
        _pending += 1
    _jobs.put((kind, payload))


def flush(timeout: float = 10.0) -> bool:
    """Wait until every queued write is in the database; False on timeout."""
    deadline = time.monotonic() + timeout
    with _done:
        if _pending:
            _hurry.set()
        while _pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _done.wait(left)
    return True


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
    now = utcnow()
    try:
        arrived = _dt.datetime.fromtimestamp(
            envelope.received_at, _dt.timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        arrived = now
    _submit("received", (
        envelope.qid, _clip(message_id), _clip(envelope.sender), _clip(subject),
        envelope.size, envelope.client_ip, _clip(envelope.helo, 255),
        envelope.direction, arrived,
    ))
    for rcpt in dict.fromkeys(_clip(r) for r in envelope.recipients):
        _submit("recipient", (rcpt, now, envelope.qid))


def _number(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _items(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _field(hit: object, name: str) -> object:
    # A stored hit is a dict; a fresh one is a core.spam.uribl.UriHit.
    return hit.get(name, "") if isinstance(hit, dict) else getattr(hit, name, "")


def _bounded(clues: dict | None) -> dict:
    """Clues cut to the stored bounds, with only the expected fields."""
    clues = clues if isinstance(clues, dict) else {}
    bayes = []
    for entry in _items(clues.get("bayes"))[:MAX_CLUES]:
        try:
            token, weight = entry
        except (TypeError, ValueError):
            continue
        weight = _number(weight)
        if weight is not None:
            bayes.append([_clip(token, MAX_TOKEN), round(weight, 4)])
    uri = []
    for hit in _items(clues.get("uri"))[:MAX_URI_HITS]:
        uri.append({"zone": _clip(_field(hit, "zone"), 255),
                    "domain": _clip(_field(hit, "domain"), 255),
                    "answer": _clip(_field(hit, "answer"), 64),
                    "score": _number(_field(hit, "score")) or 0.0,
                    "test": _clip(_field(hit, "test"), 64)})
    return {"bayes": bayes, "uri": uri, "note": _clip(clues.get("note"), MAX_NOTE),
            "uri_note": _clip(clues.get("uri_note"), MAX_NOTE)}


def clues_of(spam) -> dict | None:
    """The clues of a ``core.spam.SpamResult`` (None for no result), bounded."""
    if spam is None:
        return None
    return _bounded({"bayes": getattr(spam, "tokens", None) or (),
                     "uri": getattr(spam, "uri_hits", None) or (),
                     "note": getattr(spam, "note", "") or "",
                     "uri_note": getattr(spam, "uri_note", "") or ""})


def band_label(probability: float, settings) -> str:
    """Which side of the filter's unsure band ``probability`` lies on, as the
    Why section and ``portcullis track`` say it (the band decided, not 0.5)."""
    low, high = settings.bayes_unsure_low, settings.bayes_unsure_high
    if probability >= high:
        return f"spam: at or above bayes_unsure_high {high}"
    if probability <= low:
        return f"ham: at or below bayes_unsure_low {low}"
    return f"unsure: between bayes_unsure_low {low} and bayes_unsure_high {high}"


def read_clues(text: str | None) -> dict:
    """Stored ``spam_clues`` as a dict; empty lists and note for old rows."""
    try:
        data = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        data = {}
    return _bounded(data)


def filtered(qid: str, verdict: str, score: float | None = None, virus: str = "",
             detail: str = "", message_id: str | None = None,
             subject: str | None = None, bayes_probability: float | None = None,
             spam_clues: dict | None = None) -> None:
    """The filter's verdict, with the Bayes probability and clues behind it."""
    clues = ""
    if spam_clues is not None:
        clues = json.dumps(_bounded(spam_clues), ensure_ascii=False,
                           separators=(",", ":"))
    _submit("stub", (qid, utcnow()))
    _submit("filtered", (verdict, score, _clip(virus), _clip(detail, 4000),
                         utcnow(), _number(bayes_probability), clues, qid))
    if message_id is not None:
        _submit("message_id", (_clip(message_id), qid))
    if subject is not None:
        _submit("subject", (_clip(subject), qid))


def status(qid: str, status: str, done: bool = False) -> None:
    _submit("stub", (qid, utcnow()))
    if done:
        _submit("status_done", (status, utcnow(), qid))
    else:
        _submit("status", (status, qid))


def deferred(qid: str, reason: str) -> None:
    """Held back before filtering (a scanner down): visible as deferred."""
    status(qid, "deferred")
    _submit("detail", (_clip(reason, 4000), qid))


def recipient_status(qid: str, address: str, status: str, reply: str = "",
                     attempts: int | None = None) -> None:
    _submit("rcpt_status", (status, _clip(reply, 1000), utcnow(), attempts,
                            _clip(address), qid))


def quarantined(qid: str, kind: str, reason: str) -> None:
    def job() -> None:
        msg = Message.get_or_none(Message.qid == qid)
        if msg is None:
            return
        # Once per message: quarantine.adopt_orphans may have recorded it
        # while a slow worker's own rows were still on their way.
        if QuarantineItem.select().where(QuarantineItem.message == msg).exists():
            return
        QuarantineItem.create(message=msg, kind=kind, reason=_clip(reason, 1000))
        msg.status = "quarantined"
        msg.save()
        (Recipient.update(status="quarantined", updated_at=utcnow())
         .where(Recipient.message == msg).execute())

    _submit(None, job)


def run_in_writer(job: Callable[[], Any]) -> None:
    """Queue another peewee write behind the tracking writes already queued."""
    _submit(None, job)
