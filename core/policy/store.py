"""Policy settings and lists from the database, and the statistics counters.

Every knob of the SMTP-time checks is a row of ``policy_setting`` (key,
JSON value); a key without a row has the default in :data:`DEFAULTS`.
List entries (block, welcome, SMTP welcome) are rows of
``policy_list_entry``. The web admin and the CLI edit those tables with
:func:`set_setting` and :func:`add_list_entry`; the SMTP process re-reads
them every ``policy_refresh`` seconds.

Counters are kept in memory and added to ``policy_counter`` (one row per
day, check and result) by a background thread every ``FLUSH_SECONDS``, so
a busy SMTP process does a handful of writes a minute, not one per verdict.

With no database bound (a bare test of the SMTP server) the defaults
apply and counters stay in memory.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime as _dt
import json
import logging
import threading
import time
from typing import Any

import peewee as pw

from core import models
from core.models import PolicyCounter, PolicyListEntry, PolicySetting, utcnow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0

# Big senders that pass SPF from large, changing address pools and retry
# from another address: greylisting them only delays mail.
BIG_PROVIDERS = [
    "gmail.com", "googlemail.com", "google.com", "outlook.com", "hotmail.com",
    "live.com", "microsoft.com", "yahoo.com", "icloud.com", "me.com",
    "amazonses.com", "gmx.net", "gmx.de", "web.de",
]

DEFAULTS: dict[str, Any] = {
    # Block and welcome lists for senders and recipients.
    "lists.enabled": True,
    # Refuse user%host@us, host!user@us, "user@host"@us from untrusted clients.
    "routing.enabled": True,
    # HELO checks; refused at RCPT (like Postfix's delayed reject) so that
    # welcome lists still apply and the log names the sender.
    "helo.enabled": False,
    "helo.required": True,
    "helo.require_fqdn": True,
    "helo.reject_own_name": True,
    "helo.permanent": False,  # False: 450 4.7.1; True: 5xx
    # Per-client limits; 0 turns one off.
    "limits.max_connections": 0,
    "limits.connection_rate": 0,  # connections per window
    "limits.message_rate": 0,  # transactions (MAIL) per window
    "limits.rate_window": 60.0,
    "limits.max_recipients": 0,
    # SPF (RFC 7208).
    "spf.enabled": False,
    "spf.check_helo": True,
    "spf.reject_fail": True,
    "spf.reject_helo_fail": True,
    "spf.permerror": "accept",  # accept | reject
    "spf.temperror": "accept",  # accept | defer
    "spf.softfail_score": 1.0,
    "spf.neutral_score": 0.3,
    # RFC 7208 s4.6.4: a time limit of at least 20 seconds.
    "spf.timeout": 20.0,
    # DNSBL.
    "dnsbl.enabled": False,
    "dnsbl.zones": [],  # "zone[=filter][*weight]" as Postfix postscreen
    "dnsbl.threshold": 1,
    "dnsbl.stage": "rcpt",  # connect | rcpt
    # Greylisting.
    "greylist.enabled": False,
    "greylist.delay": 180.0,
    "greylist.retry_window": 2 * 86400.0,
    "greylist.lifetime": 36 * 86400.0,
    "greylist.ipv4_prefix": 24,
    "greylist.ipv6_prefix": 64,
    "greylist.spf_skip_domains": BIG_PROVIDERS,
    # Receiver verification (SMTP callout).
    "callout.enabled": False,
    "callout.unknown_code": 550,  # 550 or 450
    "callout.on_error": "accept",  # accept | defer (never a 5xx)
    "callout.positive_ttl": 86400.0,
    "callout.negative_ttl": 600.0,
    "callout.timeout": 10.0,
}

# One line per key, for the web admin and `portcullis` CLI forms.
HELP: dict[str, str] = {
    "lists.enabled": "Apply the block, welcome and SMTP welcome lists.",
    "routing.enabled": "Refuse user%host@, host!user@ and \"user@host\"@ "
                       "recipients from untrusted clients (relay tricks).",
    "helo.enabled": "Check the HELO/EHLO name (refused at RCPT).",
    "helo.required": "Refuse MAIL from clients that sent no HELO/EHLO.",
    "helo.require_fqdn": "The HELO name must be a dotted host name or an "
                         "address literal.",
    "helo.reject_own_name": "Refuse clients that greet with our own host name.",
    "helo.permanent": "Refuse bad HELO names with 5xx instead of 450.",
    "limits.max_connections": "Simultaneous connections per client address "
                              "(0: no limit); more get 421.",
    "limits.connection_rate": "Connections per client per window (0: off); "
                              "more get 421.",
    "limits.message_rate": "Transactions per client per window (0: off); "
                           "more get 450.",
    "limits.rate_window": "Seconds of the rate windows.",
    "limits.max_recipients": "Recipients per message from untrusted clients "
                             "(0: off); more get 452.",
    "spf.enabled": "Check SPF (RFC 7208) for HELO and MAIL FROM at RCPT.",
    "spf.check_helo": "Also check the HELO identity.",
    "spf.reject_fail": "Refuse SPF fail with 550 5.7.23.",
    "spf.reject_helo_fail": "Refuse when the HELO identity fails.",
    "spf.permerror": "permerror: accept, or reject with 550 5.5.2.",
    "spf.temperror": "temperror: accept, or defer with 451 4.4.3.",
    "spf.softfail_score": "Spam score added for softfail.",
    "spf.neutral_score": "Spam score added for neutral.",
    "spf.timeout": "Seconds one SPF evaluation may take (then temperror).",
    "dnsbl.enabled": "Look the client up in DNS blocklists.",
    "dnsbl.zones": "Zones as zone[=filter][*weight], e.g. "
                   "zen.example=127.0.0.[2..11]*2.",
    "dnsbl.threshold": "Sum of weights from which the client is refused.",
    "dnsbl.stage": "Refuse at connect (554 greeting) or at RCPT.",
    "greylist.enabled": "Greylist unknown (network, sender, recipient) "
                        "triplets with 450 4.7.1.",
    "greylist.delay": "Seconds before a retry is accepted.",
    "greylist.retry_window": "Seconds after the first attempt in which the "
                             "retry must come.",
    "greylist.lifetime": "Seconds a passed triplet stays known after it was "
                         "last seen.",
    "greylist.ipv4_prefix": "IPv4 network size of a client (bits).",
    "greylist.ipv6_prefix": "IPv6 network size of a client (bits).",
    "greylist.spf_skip_domains": "Sender domains that skip greylisting when "
                                 "SPF passes.",
    "callout.enabled": "Verify recipients with the downstream server at RCPT.",
    "callout.unknown_code": "Reply to unknown users: 550 or 450.",
    "callout.on_error": "Downstream unreachable or unsure: accept or defer "
                        "(450).",
    "callout.positive_ttl": "Seconds a 'user exists' answer is kept.",
    "callout.negative_ttl": "Seconds an 'unknown user' answer is kept.",
    "callout.timeout": "Seconds a verification probe may take.",
}

LIST_NAMES = ("smtp_welcome", "welcome", "block")
LIST_KINDS = ("sender", "recipient", "client")

_CHOICES = {
    "spf.permerror": ("accept", "reject"),
    "spf.temperror": ("accept", "defer"),
    "dnsbl.stage": ("connect", "rcpt"),
    "callout.on_error": ("accept", "defer"),
    "callout.unknown_code": (550, 450),
}


class PolicyError(ValueError):
    """A policy setting or list entry that cannot be used; says why."""


def coerce(key: str, value: Any) -> Any:
    """``value`` as the type of the key's default; PolicyError if it is not."""
    if key not in DEFAULTS:
        raise PolicyError(f"unknown policy setting {key!r}; known: "
                          + ", ".join(sorted(DEFAULTS)))
    default = DEFAULTS[key]
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                value = {"true": True, "on": True, "yes": True, "1": True,
                         "false": False, "off": False, "no": False,
                         "0": False}[value.strip().lower()]
            result: Any = bool(value)
        elif isinstance(default, int):
            result = int(value)
        elif isinstance(default, float):
            result = float(value)
        elif isinstance(default, list):
            if isinstance(value, str):
                value = value.replace(",", " ").split()
            result = [str(item).strip() for item in value if str(item).strip()]
        else:
            result = str(value).strip().lower()
    except (KeyError, TypeError, ValueError):
        raise PolicyError(f"policy setting {key!r}: {value!r} is not a "
                          f"{type(default).__name__}") from None
    allowed = _CHOICES.get(key)
    if allowed and result not in allowed:
        raise PolicyError(f"policy setting {key!r}: {value!r} is not one of "
                          + ", ".join(map(str, allowed)))
    if isinstance(result, (int, float)) and not isinstance(result, bool) \
            and result < 0:
        raise PolicyError(f"policy setting {key!r}: {value!r} is negative")
    return result


@dataclasses.dataclass
class ListEntry:
    list_name: str
    kind: str
    pattern: str


@dataclasses.dataclass
class PolicyConfig:
    """One consistent snapshot of the policy settings and lists."""

    values: dict[str, Any]
    entries: list[ListEntry]
    loaded_at: float = dataclasses.field(default_factory=time.monotonic)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _bound() -> bool:
    return models.db.obj is not None


def defaults() -> PolicyConfig:
    return PolicyConfig(dict(DEFAULTS), [])


def load() -> PolicyConfig:
    """Read settings and lists; defaults for anything missing or unusable."""
    if not _bound():
        return defaults()
    values = dict(DEFAULTS)
    try:
        rows = list(PolicySetting.select())
        entries = [ListEntry(r.list_name, r.kind, r.pattern)
                   for r in PolicyListEntry.select()]
    except pw.PeeweeException as exc:
        log.warning("event=policy_load error=%s using=defaults", exc)
        return defaults()
    for row in rows:
        try:
            values[row.key] = coerce(row.key, json.loads(row.value))
        except (PolicyError, ValueError) as exc:
            log.warning("event=policy_load key=%s error=%s using=default",
                        row.key, exc)
    return PolicyConfig(values, entries)


def set_setting(key: str, value: Any) -> Any:
    """Store one setting (checked first); returns the stored value."""
    value = coerce(key, value)
    (PolicySetting.insert(key=key, value=json.dumps(value), updated_at=utcnow())
     .on_conflict(conflict_target=[PolicySetting.key],
                  update={PolicySetting.value: json.dumps(value),
                          PolicySetting.updated_at: utcnow()})
     .execute())
    return value


def reset_setting(key: str) -> None:
    PolicySetting.delete().where(PolicySetting.key == key).execute()


def add_list_entry(list_name: str, kind: str, pattern: str,
                   comment: str = "") -> PolicyListEntry:
    """Add a list entry after checking that its pattern can be used."""
    from core.policy.lists import compile_pattern

    if list_name not in LIST_NAMES:
        raise PolicyError(f"list {list_name!r}: one of " + ", ".join(LIST_NAMES))
    if kind not in LIST_KINDS:
        raise PolicyError(f"kind {kind!r}: one of " + ", ".join(LIST_KINDS))
    if kind == "client" and list_name != "smtp_welcome":
        raise PolicyError("client entries belong in the smtp_welcome list")
    compile_pattern(kind, pattern)  # raises PolicyError
    return PolicyListEntry.create(list_name=list_name, kind=kind,
                                  pattern=pattern.strip(), comment=comment)


def remove_list_entry(entry_id: int) -> bool:
    """Delete one list entry by id; False when there was none."""
    return PolicyListEntry.delete().where(PolicyListEntry.id == entry_id).execute() > 0


def list_entries(list_name: str | None = None) -> list[PolicyListEntry]:
    query = PolicyListEntry.select().order_by(PolicyListEntry.list_name,
                                              PolicyListEntry.kind,
                                              PolicyListEntry.id)
    if list_name is not None:
        query = query.where(PolicyListEntry.list_name == list_name)
    return list(query)


# region counters


class Counters:
    """Verdict counts kept in memory and added to the table periodically."""

    def __init__(self):
        self._counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.totals: collections.Counter = collections.Counter()

    def add(self, check: str, result: str, n: int = 1) -> None:
        day = _dt.datetime.now(_dt.timezone.utc).date()
        with self._lock:
            self._counts[(day, check, result[:32])] += n
            self.totals[(check, result[:32])] += n
        if self._thread is None and _bound():
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="policy-counters", daemon=True)
            self._thread.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Add the counts so far to ``policy_counter``; keeps them on failure."""
        with self._lock:
            pending, self._counts = self._counts, collections.Counter()
        if not pending or not _bound():
            with self._lock:
                self._counts.update(pending)
            return
        try:
            with models.db.atomic():
                for (day, check, result), n in pending.items():
                    (PolicyCounter
                     .insert(day=day, check_name=check, result=result, count=n)
                     .on_conflict(
                         conflict_target=[PolicyCounter.day,
                                          PolicyCounter.check_name,
                                          PolicyCounter.result],
                         update={PolicyCounter.count: PolicyCounter.count + n})
                     .execute())
        except Exception as exc:  # the writer thread must outlive any DB trouble
            log.warning("event=policy_counters error=%s kept=%d", exc, len(pending))
            with self._lock:
                self._counts.update(pending)


counters = Counters()

# endregion
