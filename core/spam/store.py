"""The token store: counts per token hash and message totals, through peewee.

Learning is batched: counts of many messages are summed in memory and
written with one ``executemany`` upsert per batch, inside one transaction
(SQLite and PostgreSQL both take ``INSERT ... ON CONFLICT DO UPDATE``).
Every write bumps the ``generation`` meta value, which is how a running
filter sees that its in-memory table is stale. The character 4-gram weights
(``core.spam.ngram``) are one row of ``bayes_model``: the float32 array,
zlib-compressed, with a ``version`` bumped by every write. Dumps carry it as
an ``n`` line (base64); older dumps without one restore to no weights, and
older releases refuse dumps that have one.

A dump ends with an ``e`` line holding its row counts, written last; restore
reads the whole file first and changes nothing unless that line is there
and the counts match, so a cut dump cannot replace a whole store. Dumps
made before the end line existed look exactly like cut ones: restore
refuses them unless told they are whole (``unchecked``).

Writes open their transaction with the write lock taken (``BEGIN
IMMEDIATE`` on SQLite): a transaction that reads first and writes later
fails at once with "database is locked" when another process wrote in
between, whatever the busy timeout. ``patiently`` retries a write that
still finds the database locked for ``WRITE_PATIENCE`` seconds, then raises
``StoreBusy``.

Limits: a token's ``last_seen`` moves only when it is learned, not when it
is scored, so expiry drops tokens that training has not seen recently.
Older releases refuse dumps with an end line ("not a dump line").
"""

from __future__ import annotations

import base64
import gzip
import logging
import sys
import time
import zlib
from array import array
from pathlib import Path

import peewee as pw

from core import config, models
from core.models import BayesMeta, BayesModel, BayesSeen, BayesToken
from core.spam import ngram

log = logging.getLogger(__name__)

DUMP_MAGIC = "# portcullis-bayes 1"
BATCH_ROWS = 2000
NGRAM = "ngram4"
# generation: bumped by every write; epoch: bumped when rows may have gone
# (expiry, restore), which an incremental reload cannot see.
META_KEYS = ("nham", "nspam", "generation", "epoch")
# Kinds of dump lines the end line counts, and what they hold.
DUMP_KINDS = {"m": "meta", "t": "token", "s": "learned-message", "n": "model"}


# Seconds a write keeps trying while another process holds the write lock
# (each try itself waits the connection's busy_timeout).
WRITE_PATIENCE = 60.0
# What a filter worker (autolearn) or a click in the web admin waits at most:
# mail and the page must not stall for a minute, nor outlast gunicorn's
# 30 s worker timeout.
QUICK_PATIENCE = 10.0
MAX_EXPIRE_DAYS = config.MAX_EXPIRE_DAYS


class StoreError(Exception):
    """The token store or a dump file cannot be used; the text says why."""


class StoreBusy(StoreError):
    """The database stayed locked by another writer; nothing was written."""


def write_transaction():
    """A transaction that takes the write lock at its start (SQLite)."""
    database = models.db.obj
    if isinstance(database, pw.SqliteDatabase):
        # Nested in a transaction this is a savepoint; the lock is held.
        return database.atomic("IMMEDIATE")
    return database.atomic()


def _locked(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def patiently(write, what: str = "the token store",
              patience: float = WRITE_PATIENCE):
    """Run ``write()`` (one transaction), again while the database is locked,
    for at most ``patience`` seconds."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            return write()
        except pw.OperationalError as exc:
            if not _locked(exc) or models.db.obj.in_transaction():
                raise
            if time.monotonic() >= deadline:
                raise StoreBusy(
                    f"{what} stayed locked by another process for "
                    f"{patience:.0f} s ({exc})") from None
            log.info("event=bayes_write_retry reason=%s", exc)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def today() -> int:
    return int(time.time() // 86400)


def meta() -> dict[str, int]:
    """nham, nspam and generation (0 for a key never written)."""
    values = dict.fromkeys(META_KEYS, 0)
    for row in BayesMeta.select().where(BayesMeta.key.in_(META_KEYS)):
        values[row.key] = int(row.value)
    return values


def generation() -> int:
    row = BayesMeta.get_or_none(BayesMeta.key == "generation")
    return int(row.value) if row else 0


def _add_meta(key: str, delta: int) -> None:
    BayesMeta.insert(key=key, value=max(delta, 0)).on_conflict(
        conflict_target=[BayesMeta.key],
        update={BayesMeta.value: _not_below_zero(BayesMeta.value + delta)},
    ).execute()


def _not_below_zero(expression):
    """``expression`` but never below 0, in SQL both databases speak."""
    return pw.Case(None, [(expression < 0, 0)], expression)


def _upsert_sql(database) -> str:
    table = BayesToken._meta.table_name
    p = database.param
    ham = f"{table}.ham + excluded.ham"
    spam = f"{table}.spam + excluded.spam"
    return (
        f"INSERT INTO {table} (token, ham, spam, last_seen, weight) "
        f"VALUES ({p}, {p}, {p}, {p}, {p}) "
        f"ON CONFLICT (token) DO UPDATE SET "
        f"ham = CASE WHEN {ham} < 0 THEN 0 ELSE {ham} END, "
        f"spam = CASE WHEN {spam} < 0 THEN 0 ELSE {spam} END, "
        f"weight = {table}.weight + excluded.weight, "
        f"last_seen = CASE WHEN excluded.last_seen > {table}.last_seen "
        f"THEN excluded.last_seen ELSE {table}.last_seen END"
    )


def apply(deltas: dict[int, list], nham: int, nspam: int,
          day: int | None = None) -> int:
    """Add per-token (ham, spam[, weight]) deltas and message totals at once.

    Negative deltas (unlearning) never take a count below 0; rows left at
    0/0 are deleted. Returns the number of token rows written.
    """
    database = models.db.obj
    day = today() if day is None else day
    sql = _upsert_sql(database)
    rows = [(token, d[0], d[1], day, d[2] if len(d) > 2 else 0.0)
            for token, d in deltas.items() if any(d)]
    negative = any(d[0] < 0 or d[1] < 0 for d in deltas.values())
    with write_transaction():
        cursor = database.cursor()
        for start in range(0, len(rows), BATCH_ROWS):
            cursor.executemany(sql, rows[start:start + BATCH_ROWS])
        if negative:
            # Unlearning: the upsert added negative deltas to existing rows;
            # a token that had expired meanwhile was inserted with them.
            BayesToken.update(ham=0).where(BayesToken.ham < 0).execute()
            BayesToken.update(spam=0).where(BayesToken.spam < 0).execute()
            BayesToken.delete().where(
                (BayesToken.ham == 0) & (BayesToken.spam == 0)).execute()
        if nham:
            _add_meta("nham", nham)
        if nspam:
            _add_meta("nspam", nspam)
        _add_meta("generation", 1)
    return len(rows)


def load(table, since_day: int | None = None) -> dict[str, int]:
    """Fill ``table`` (a CountTable) with the tokens; returns the meta values.

    With ``since_day`` only tokens learned on or after that day are read
    (an incremental reload). The meta values are read in the same
    transaction as the counts, so they match them.
    """
    database = models.db.obj
    sql = f"SELECT token, ham, spam, weight FROM {BayesToken._meta.table_name}"
    params: tuple = ()
    if since_day is not None:
        sql += f" WHERE last_seen >= {database.param}"
        params = (since_day,)
    with database.atomic():
        values = meta()
        cursor = database.execute_sql(sql, params)
        while True:
            rows = cursor.fetchmany(50000)
            if not rows:
                break
            tokens = array("q", [r[0] for r in rows])
            hams = array("I", [r[1] for r in rows])
            spams = array("I", [r[2] for r in rows])
            weights = array("d", [r[3] for r in rows])
            table.load(tokens, hams, spams, weights)
    return values


def load_tokens(table, tokens) -> None:
    """Fill ``table`` with the rows of the given tokens only (for small batches)."""
    wanted = sorted(set(tokens))
    for start in range(0, len(wanted), 500):
        query = (BayesToken.select(BayesToken.token, BayesToken.ham, BayesToken.spam,
                                   BayesToken.weight)
                 .where(BayesToken.token.in_(wanted[start:start + 500])).tuples())
        rows = list(query)
        if rows:
            columns = list(zip(*rows))
            table.load(array("q", columns[0]), array("I", columns[1]),
                       array("I", columns[2]), array("d", columns[3]))


def _pack(weights: array) -> bytes:
    if sys.byteorder != "little":
        weights = array("f", weights)
        weights.byteswap()
    return zlib.compress(weights.tobytes(), 1)


def _unpack(data: bytes, size: int) -> array:
    raw = zlib.decompress(data)
    if len(raw) != 4 * size:
        raise StoreError(f"the 4-gram weights hold {len(raw) // 4} values, not "
                         f"{size}; retrain with 'portcullis bayes train'")
    weights = array("f", raw)
    if sys.byteorder != "little":
        weights.byteswap()
    return weights


def ngram_version() -> int:
    """The version of the stored 4-gram weights (0: none stored)."""
    row = (BayesModel.select(BayesModel.version)
           .where(BayesModel.name == NGRAM).tuples().first())
    return row[0] if row else 0


def load_ngram(size: int) -> tuple[array | None, int]:
    """(the stored 4-gram weights or None, their version)."""
    row = BayesModel.get_or_none(BayesModel.name == NGRAM)
    if row is None:
        return None, 0
    return _unpack(bytes(row.data), size), row.version


def save_ngram(weights: array) -> int:
    """Store the 4-gram weights; returns their new version."""
    with write_transaction():
        version = ngram_version() + 1
        BayesModel.replace(name=NGRAM, version=version,
                           data=_pack(weights)).execute()
    return version


def counts(token: int) -> tuple[int, int]:
    row = BayesToken.get_or_none(BayesToken.token == token)
    return (row.ham, row.spam) if row else (0, 0)


def seen(digest: str) -> bool | None:
    """True/False when the message was learned as spam/ham, else None."""
    row = BayesSeen.get_or_none(BayesSeen.digest == digest)
    return None if row is None else bool(row.spam)


def mark_seen(marks: dict[str, bool], day: int | None = None) -> None:
    day = today() if day is None else day
    rows = [{"digest": d, "spam": s, "day": day} for d, s in marks.items()]
    with write_transaction():
        for start in range(0, len(rows), 500):
            BayesSeen.insert_many(rows[start:start + 500]).on_conflict(
                conflict_target=[BayesSeen.digest],
                preserve=[BayesSeen.spam, BayesSeen.day],
            ).execute()


def expire(max_age_days: int, max_count: int = 2, day: int | None = None,
           patience: float = WRITE_PATIENCE) -> int:
    """Delete tokens unseen for ``max_age_days`` with at most ``max_count`` uses
    (waiting at most ``patience`` seconds for a locked database)."""
    day = today() if day is None else day
    if not 0 < max_age_days <= MAX_EXPIRE_DAYS:
        raise StoreError(f"expiry after {max_age_days} days is out of range; "
                         f"give 1 to {MAX_EXPIRE_DAYS} days")
    cutoff = day - max_age_days

    def write() -> int:
        with write_transaction():
            gone = BayesToken.delete().where(
                (BayesToken.last_seen < cutoff)
                & ((BayesToken.ham + BayesToken.spam) <= max_count)
            ).execute()
            if gone:
                _add_meta("generation", 1)
                _add_meta("epoch", 1)
        return gone

    gone = patiently(write, patience=patience)
    log.info("event=bayes_expire tokens=%d cutoff_day=%d", gone, cutoff)
    return gone


def stats() -> dict[str, int]:
    """Message and token totals of the store."""
    values = meta()
    tokens = BayesToken.select().count()
    return {
        "ham_messages": values["nham"],
        "spam_messages": values["nspam"],
        "tokens": tokens,
        "learned_messages": BayesSeen.select().count(),
        "generation": values["generation"],
        "ngram_version": ngram_version(),
    }


def _end_line(counts: dict[str, int]) -> str:
    return "e\t" + "\t".join(f"{kind}={counts[kind]}" for kind in DUMP_KINDS) + "\n"


def dump(path) -> int:
    """Write meta values and every token row to ``path`` (gzip text)."""
    given = str(path)
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{given} is a directory; give the name of the file to "
                         f"write, such as {path / 'bayes.dump'}")
    if given.endswith(("/", "\\")):
        raise StoreError(f"{given} ends with a slash, so it names a folder; give "
                         "the name of the file to write")
    if not path.parent.is_dir():
        raise StoreError(f"the folder of {given} does not exist; create it or "
                         "give a path in an existing folder")
    database = models.db.obj
    counts = dict.fromkeys(DUMP_KINDS, 0)
    tmp = path.with_name(path.name + ".tmp")
    with database.atomic(), gzip.open(tmp, "wt", encoding="ascii") as out:
        out.write(DUMP_MAGIC + "\n")
        for key, value in meta().items():
            out.write(f"m\t{key}\t{value}\n")
            counts["m"] += 1
        cursor = database.execute_sql(
            "SELECT token, ham, spam, last_seen, weight FROM "
            f"{BayesToken._meta.table_name} ORDER BY token")
        while True:
            rows = cursor.fetchmany(50000)
            if not rows:
                break
            # repr() of a float reads back to the same float.
            out.writelines(f"t\t{t}\t{h}\t{s}\t{d}\t{w!r}\n"
                           for t, h, s, d, w in rows)
            counts["t"] += len(rows)
        for row in BayesSeen.select().tuples():
            out.write(f"s\t{row[0]}\t{int(row[1])}\t{row[2]}\n")
            counts["s"] += 1
        for name, version, data in BayesModel.select(
                BayesModel.name, BayesModel.version, BayesModel.data).tuples():
            encoded = base64.b64encode(bytes(data)).decode("ascii")
            out.write(f"n\t{name}\t{version}\t{encoded}\n")
            counts["n"] += 1
        # Last: a dump cut anywhere before this line has no end line.
        out.write(_end_line(counts))
    tmp.replace(path)
    return counts["t"]


def _read_end(fields: list[str]) -> dict[str, int]:
    counts = {}
    for field in fields[1:]:
        kind, _, number = field.partition("=")
        if kind not in DUMP_KINDS or not number.isdigit():
            raise ValueError(f"end line field {field!r} is not KIND=COUNT")
        counts[kind] = int(number)
    if set(counts) != set(DUMP_KINDS):
        raise ValueError("the end line does not count every kind of row")
    return counts


def _check_whole(path, end: dict[str, int] | None, found: dict[str, int],
                 unchecked: bool) -> None:
    """Refuse a dump whose end line is missing or whose counts differ."""
    if end is None:
        if unchecked:
            return
        raise StoreError(
            f"{path} has no end line, so it may be cut short: it holds "
            f"{found['t']} token rows and {found['s']} learned messages, and a "
            "dump made before dumps had an end line looks just the same; "
            "nothing changed. Make a new dump with 'portcullis bayes dump', "
            "or, if you are sure this file is whole, restore it with "
            "--unchecked")
    if end != found:
        wrong = ", ".join(f"{found[k]} {DUMP_KINDS[k]} rows where its end line "
                          f"counts {end[k]}" for k in DUMP_KINDS if found[k] != end[k])
        # Fewer rows: cut short; more: rows added; either way not the dump made.
        what = ("incomplete dump" if all(found[k] <= end[k] for k in DUMP_KINDS)
                else "dump does not match its end line")
        raise StoreError(f"{what}: {wrong}; nothing changed")


def restore(path, unchecked: bool = False) -> dict[str, int]:
    """Replace the whole store with the content of a dump file.

    The dump must end with its end line and hold the rows it counts, else
    nothing changes; ``unchecked`` accepts a dump without an end line (made
    by a release before dumps had one).
    """
    path = Path(path)
    tokens: list[tuple] = []
    marks: list[dict] = []
    blobs: list[dict] = []
    values = dict.fromkeys(META_KEYS, 0)
    found = dict.fromkeys(DUMP_KINDS, 0)
    end = None
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            if handle.readline().rstrip("\n") != DUMP_MAGIC:
                raise StoreError(f"{path} is not a Bayes dump (no '{DUMP_MAGIC}' "
                                 "line); nothing changed; make one with "
                                 "'portcullis bayes dump'")
            for number, line in enumerate(handle, 2):
                try:
                    end = _restore_line(path, number, line, end, tokens, marks,
                                        blobs, values, found)
                except ValueError as exc:
                    raise StoreError(f"{path} line {number}: {exc}; nothing "
                                     "changed") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError, zlib.error) as exc:
        raise StoreError(f"{path} cannot be read as a Bayes dump: {exc}; nothing "
                         "changed") from None
    _check_whole(path, end, found, unchecked)
    if _twice(t[0] for t in tokens) or _twice(m["digest"] for m in marks):
        # Found before writing: the database would refuse the second row
        # only half-way through the transaction.
        raise StoreError(f"{path} holds a token or message digest twice; nothing "
                         "changed")

    def write() -> None:
        with write_transaction():
            _replace(tokens, marks, blobs, dict(values))

    patiently(write)
    log.info("event=bayes_restore tokens=%d file=%s", len(tokens), path)
    return stats()


def _twice(keys) -> bool:
    """Whether any key comes more than once."""
    ordered = sorted(keys)
    return any(a == b for a, b in zip(ordered, ordered[1:]))


def _whole(text: str, what: str, low: int, high: int) -> int:
    """``text`` as a whole number from ``low`` to ``high``, else ValueError."""
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{what} {text[:40]!r} is not a whole number") from None
    if not low <= number <= high:
        raise ValueError(f"{what} {number} is out of range ({low} to {high})")
    return number


# What a dump's numbers may be: token hashes are signed 64-bit, counts fit
# the scorer's unsigned 32-bit table, days and totals are never negative.
_HASH = (-(1 << 63), (1 << 63) - 1)
_COUNT = (0, (1 << 32) - 1)
_TOTAL = (0, (1 << 62))


def _restore_line(path, number: int, line: str, end, tokens: list, marks: list,
                  blobs: list, values: dict, found: dict):
    """Read one dump line into the lists; returns the end line's counts."""
    if end is not None:
        raise StoreError(f"{path} line {number}: text after the end line; "
                         "nothing changed")
    if not line.endswith("\n"):
        # A line cut in the middle is not trusted either.
        raise StoreError(f"{path} line {number}: cut short (no line end); "
                         "nothing changed")
    fields = line.rstrip("\n").split("\t")
    if fields[0] == "t" and len(fields) in (5, 6):
        # Dumps made before token weights have five fields.
        weight = float(fields[5]) if len(fields) == 6 else 0.0
        if weight != weight or abs(weight) == float("inf"):
            raise ValueError(f"weight {fields[5]} is not a number")
        tokens.append((_whole(fields[1], "token", *_HASH),
                       _whole(fields[2], "ham count", *_COUNT),
                       _whole(fields[3], "spam count", *_COUNT),
                       _whole(fields[4], "day", *_TOTAL), weight))
    elif fields[0] == "m" and len(fields) == 3 and fields[1] in values:
        values[fields[1]] = _whole(fields[2], fields[1], *_TOTAL)
    elif fields[0] == "s" and len(fields) == 4:
        marks.append({"digest": fields[1], "spam": fields[2] == "1",
                      "day": _whole(fields[3], "day", *_TOTAL)})
    elif fields[0] == "n" and len(fields) == 4 and fields[1] == NGRAM:
        # Dumps made before the 4-gram model have no such line.
        data = base64.b64decode(fields[3], validate=True)
        _unpack(data, 1 << ngram.BITS)
        blobs.append({"name": fields[1],
                      "version": _whole(fields[2], "version", *_TOTAL),
                      "data": data})
    elif fields[0] == "e":
        return _read_end(fields)
    else:
        raise StoreError(f"{path} line {number}: not a dump line")
    found[fields[0]] += 1
    return end


def _replace(tokens: list[tuple], marks: list[dict], blobs: list[dict],
             values: dict[str, int]) -> None:
    """Swap the store's rows for these (inside the caller's transaction)."""
    database = models.db.obj
    table = BayesToken._meta.table_name
    p = database.param
    old = meta()
    old_generation, old_epoch = old["generation"], old["epoch"]
    BayesToken.delete().execute()
    BayesSeen.delete().execute()
    old_version = ngram_version()
    BayesModel.delete().execute()
    BayesMeta.delete().where(BayesMeta.key.in_(META_KEYS)).execute()

    cursor = database.cursor()
    sql = (f"INSERT INTO {table} (token, ham, spam, last_seen, weight) "
           f"VALUES ({p}, {p}, {p}, {p}, {p})")
    for start in range(0, len(tokens), BATCH_ROWS):
        cursor.executemany(sql, tokens[start:start + BATCH_ROWS])
    for start in range(0, len(marks), 500):
        BayesSeen.insert_many(marks[start:start + 500]).execute()
    for blob in blobs:
        # A running filter reloads the weights when their version moves.
        version = max(blob["version"], old_version) + 1
        BayesModel.insert(**{**blob, "version": version}).execute()
    values["generation"] = max(values["generation"], old_generation) + 1
    values["epoch"] = max(values["epoch"], old_epoch) + 1
    BayesMeta.insert_many(
        [{"key": k, "value": v} for k, v in values.items()]).execute()
