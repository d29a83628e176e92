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

Limits: a token's ``last_seen`` moves only when it is learned, not when it
is scored, so expiry drops tokens that training has not seen recently.
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

from core import models
from core.models import BayesMeta, BayesModel, BayesSeen, BayesToken
from core.spam import ngram

log = logging.getLogger(__name__)

DUMP_MAGIC = "# portcullis-bayes 1"
BATCH_ROWS = 2000
NGRAM = "ngram4"
# generation: bumped by every write; epoch: bumped when rows may have gone
# (expiry, restore), which an incremental reload cannot see.
META_KEYS = ("nham", "nspam", "generation", "epoch")


class StoreError(Exception):
    """The token store or a dump file cannot be used; the text says why."""


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
    with database.atomic():
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
    database = models.db.obj
    with database.atomic():
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
    database = models.db.obj
    with database.atomic():
        for start in range(0, len(rows), 500):
            BayesSeen.insert_many(rows[start:start + 500]).on_conflict(
                conflict_target=[BayesSeen.digest],
                preserve=[BayesSeen.spam, BayesSeen.day],
            ).execute()


def expire(max_age_days: int, max_count: int = 2, day: int | None = None) -> int:
    """Delete tokens unseen for ``max_age_days`` with at most ``max_count`` uses."""
    day = today() if day is None else day
    cutoff = day - max_age_days
    database = models.db.obj
    with database.atomic():
        gone = BayesToken.delete().where(
            (BayesToken.last_seen < cutoff)
            & ((BayesToken.ham + BayesToken.spam) <= max_count)
        ).execute()
        if gone:
            _add_meta("generation", 1)
            _add_meta("epoch", 1)
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


def dump(path) -> int:
    """Write meta values and every token row to ``path`` (gzip text)."""
    path = Path(path)
    database = models.db.obj
    written = 0
    tmp = path.with_name(path.name + ".tmp")
    with database.atomic(), gzip.open(tmp, "wt", encoding="ascii") as out:
        out.write(DUMP_MAGIC + "\n")
        for key, value in meta().items():
            out.write(f"m\t{key}\t{value}\n")
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
            written += len(rows)
        for row in BayesSeen.select().tuples():
            out.write(f"s\t{row[0]}\t{int(row[1])}\t{row[2]}\n")
        for name, version, data in BayesModel.select(
                BayesModel.name, BayesModel.version, BayesModel.data).tuples():
            encoded = base64.b64encode(bytes(data)).decode("ascii")
            out.write(f"n\t{name}\t{version}\t{encoded}\n")
    tmp.replace(path)
    return written


def restore(path) -> dict[str, int]:
    """Replace the whole store with the content of a dump file."""
    path = Path(path)
    tokens: list[tuple] = []
    marks: list[dict] = []
    blobs: list[dict] = []
    values = dict.fromkeys(META_KEYS, 0)
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            if handle.readline().rstrip("\n") != DUMP_MAGIC:
                raise StoreError(f"{path} is not a Bayes dump (no '{DUMP_MAGIC}' "
                                 "line); make one with 'portcullis bayes dump'")
            for number, line in enumerate(handle, 2):
                fields = line.rstrip("\n").split("\t")
                if fields[0] == "t" and len(fields) in (5, 6):
                    # Dumps made before token weights have five fields.
                    weight = float(fields[5]) if len(fields) == 6 else 0.0
                    if weight != weight or abs(weight) == float("inf"):
                        raise ValueError(f"weight {fields[5]} is not a number")
                    tokens.append((*(int(f) for f in fields[1:5]), weight))
                elif fields[0] == "m" and len(fields) == 3 and fields[1] in values:
                    values[fields[1]] = int(fields[2])
                elif fields[0] == "s" and len(fields) == 4:
                    marks.append({"digest": fields[1], "spam": fields[2] == "1",
                                  "day": int(fields[3])})
                elif fields[0] == "n" and len(fields) == 4 and fields[1] == NGRAM:
                    # Dumps made before the 4-gram model have no such line.
                    data = base64.b64decode(fields[3], validate=True)
                    _unpack(data, 1 << ngram.BITS)
                    blobs.append({"name": fields[1], "version": int(fields[2]),
                                  "data": data})
                else:
                    raise StoreError(f"{path} line {number}: not a dump line")
    except (OSError, EOFError, UnicodeDecodeError, ValueError, zlib.error) as exc:
        raise StoreError(f"{path} cannot be read as a Bayes dump: {exc}") from None

    database = models.db.obj
    table = BayesToken._meta.table_name
    p = database.param
    with database.atomic():
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
            blob["version"] = max(blob["version"], old_version) + 1
            BayesModel.insert(**blob).execute()
        values["generation"] = max(values["generation"], old_generation) + 1
        values["epoch"] = max(values["epoch"], old_epoch) + 1
        BayesMeta.insert_many(
            [{"key": k, "value": v} for k, v in values.items()]).execute()
    log.info("event=bayes_restore tokens=%d file=%s", len(tokens), path)
    return stats()
