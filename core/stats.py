"""Read-side queries over the tracking tables: dashboard counts, message search.

The web admin, the JSON API and ``portcullis track`` all search through
:func:`search`, so a filter means the same thing everywhere. Times are UTC
(the database keeps naive UTC datetimes); "today" starts at UTC midnight.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re

import peewee as pw

from core.models import Message, QuarantineItem, Recipient, utcnow

VERDICTS = ("queued", "clean", "spam", "virus", "blocked", "error")
STATUSES = ("queued", "delivered", "deferred", "bounced", "quarantined", "partial",
            "deleted")
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class SearchError(ValueError):
    """A search filter has a value that cannot be used; the text says which."""


def start_of_day(now: _dt.datetime | None = None) -> _dt.datetime:
    now = now or utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def today(now: _dt.datetime | None = None) -> dict[str, int]:
    """Counts of messages received since UTC midnight, by outcome."""
    since = start_of_day(now)
    todays = Message.select().where(Message.received_at >= since)
    counts = {
        "received": todays.count(),
        "delivered": todays.where(Message.status == "delivered").count(),
        "spam": todays.where(Message.verdict == "spam").count(),
        "virus": todays.where(Message.verdict == "virus").count(),
        "quarantined": todays.where(Message.status == "quarantined").count(),
        "deferred": todays.where(Message.status == "deferred").count(),
        "bounced": todays.where(Message.status == "bounced").count(),
    }
    counts["held"] = (QuarantineItem.select()
                      .where(QuarantineItem.state == "held").count())
    return counts


# region search

_RELATIVE = re.compile(r"^(\d{1,6})\s*([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, name: str = "time",
               now: _dt.datetime | None = None) -> _dt.datetime:
    """ISO date or datetime (UTC), or an age such as 30m, 2h, 3d, 1w."""
    value = (text or "").strip()
    match = _RELATIVE.match(value.lower())
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        return (now or utcnow()) - _dt.timedelta(seconds=seconds)
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SearchError(
            f"{name} {text!r} is not a date: use 2026-01-31, 2026-01-31T08:00 "
            "or an age such as 2h or 3d"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return parsed


@dataclasses.dataclass
class Filters:
    """What to look for; empty fields do not filter."""

    qid: str = ""
    sender: str = ""
    rcpt: str = ""
    subject: str = ""
    client_ip: str = ""
    verdict: str = ""
    status: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_mapping(cls, data) -> "Filters":
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: str(data.get(n) or "").strip()[:256] for n in names})

    def active(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


@dataclasses.dataclass
class Page:
    items: list
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def message_query(filters: Filters) -> pw.ModelSelect:
    """The Message query for ``filters``, newest first; raises SearchError."""
    query = Message.select()
    if filters.qid:
        query = query.where(Message.qid.startswith(filters.qid.upper()))
    if filters.sender:
        query = query.where(Message.sender.contains(filters.sender))
    if filters.subject:
        query = query.where(Message.subject.contains(filters.subject))
    if filters.client_ip:
        query = query.where(Message.client_ip.startswith(filters.client_ip))
    if filters.rcpt:
        matching = (Recipient.select(Recipient.message)
                    .where(Recipient.address.contains(filters.rcpt)))
        query = query.where(Message.id.in_(matching))
    if filters.verdict:
        if filters.verdict not in VERDICTS:
            raise SearchError(f"verdict {filters.verdict!r} is not one of "
                              + ", ".join(VERDICTS))
        query = query.where(Message.verdict == filters.verdict)
    if filters.status:
        if filters.status not in STATUSES:
            raise SearchError(f"status {filters.status!r} is not one of "
                              + ", ".join(STATUSES))
        query = query.where(Message.status == filters.status)
    if filters.since:
        query = query.where(Message.received_at >= parse_time(filters.since, "since"))
    if filters.until:
        until = parse_time(filters.until, "until")
        if len(filters.until.strip()) == 10:
            until += _dt.timedelta(days=1)  # a bare date includes that whole day
        query = query.where(Message.received_at < until)
    return query.order_by(Message.received_at.desc(), Message.id.desc())


def search(filters: Filters, page: int = 1, per_page: int = PAGE_SIZE) -> Page:
    """One page of messages matching ``filters``, with their recipients."""
    per_page = max(1, min(int(per_page), MAX_PAGE_SIZE))
    page = max(1, int(page))
    query = message_query(filters)
    total = query.count()
    items = list(query.paginate(page, per_page))
    if items:
        by_id = {m.id: m for m in items}
        for msg in items:
            msg.rcpt_list = []
        for rcpt in (Recipient.select()
                     .where(Recipient.message.in_(list(by_id)))
                     .order_by(Recipient.id)):
            by_id[rcpt.message_id].rcpt_list.append(rcpt)
    return Page(items=items, total=total, page=page, per_page=per_page)


# endregion


def message_dict(msg: Message, recipients=None) -> dict:
    """A message row as JSON-ready data (times in ISO 8601, UTC)."""
    rcpts = recipients if recipients is not None else getattr(msg, "rcpt_list", None)
    data = {
        "qid": msg.qid,
        "message_id": msg.message_id,
        "sender": msg.sender,
        "subject": msg.subject,
        "size": msg.size,
        "client_ip": msg.client_ip,
        "helo": msg.helo,
        "direction": msg.direction,
        "score": msg.score,
        "virus": msg.virus,
        "verdict": msg.verdict,
        "status": msg.status,
        "detail": msg.detail,
        "received_at": _iso(msg.received_at),
        "filtered_at": _iso(msg.filtered_at),
        "done_at": _iso(msg.done_at),
    }
    if rcpts is not None:
        data["recipients"] = [recipient_dict(r) for r in rcpts]
    return data


def recipient_dict(rcpt: Recipient) -> dict:
    return {
        "address": rcpt.address,
        "status": rcpt.status,
        "reply": rcpt.reply,
        "attempts": rcpt.attempts,
        "updated_at": _iso(rcpt.updated_at),
    }


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value.isoformat(timespec="seconds") + "Z"
