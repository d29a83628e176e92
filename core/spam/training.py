"""Training: learning messages into the token store, in batches.

``train(paths_ham, paths_spam)`` reads files of one message each, mbox files
and Maildir folders (and folders of any of them); ``learn(data, is_spam)``
is train-on-error for one message (from the quarantine). A message is
remembered by a digest: learning it again as the same class does nothing,
learning it as the other class moves its counts over.

Every batch also fits the logistic-regression weights: passes over the
batch's new messages (each pass in a shuffled order, which mixes ham and
spam) take a step for each message the weights do not already classify with
the margin ``scorer.LR_MARGIN``, until a pass takes none or after
``scorer.LR_PASSES`` (train until no errors, TONE). The weights start from
the store's, so training in several batches continues one online fit.
The character 4-gram weights (``core.spam.ngram``) are fitted the same way,
``ngram.PASSES`` passes with ``ngram.rate()`` and ``ngram.MARGIN``, but
``ngram.FITS`` times, each in its own series of orders, and the mean of the
fits is stored whole after each batch.

A batch is written in one transaction: its counts, the digests of its
messages and the 4-gram weights are stored together or not at all, so a
batch that fails (the database stayed locked, see ``store.patiently``) is
simply learned again by the next run. The fit is done before the write lock
is taken, so other processes wait only for the write; when another process
learned some of the same messages or stored 4-gram weights meanwhile, the
batch is planned and fitted again while the lock is held.

``train`` skips input that is not a mail message (``not_mail``: NUL bytes,
compressed or executable file magic, or no "Name: value" header line at
the start) and files over ``MAX_FILE`` bytes, and counts both.

Limits: the passes see one batch at a time (``BATCH_MESSAGES``), so a
training set much larger than a batch is fitted batch after batch rather
than in passes over all of it; a Learner without a table of its own reads
the whole store once, at its first write of more than ``FEW_MESSAGES``
messages, to start from its weights. A running filter's learner starts its
4-gram fit from the filter's weights, not from the store, so when the CLI
stores weights while the filter fits, the later write of the two wins and
the other's 4-gram steps are lost (its counts are not). After a failed
write the weights a running filter holds in memory keep the failed batch's
steps until its next full reload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import re
import sys
import time
from array import array
from pathlib import Path
from typing import Callable, Iterable, Iterator

from core.message import ParsedMessage
from core.models import BayesSeen
from core.spam import ngram, scorer, store, tokenizer
from core.spam.tokenspec import Options

log = logging.getLogger(__name__)

# Messages summed in memory before one write to the store; each holds its
# distinct tokens as 8-byte integers (a few thousand per message).
BATCH_MESSAGES = 5000
MAX_FILE = 50 * 1024 * 1024
# Batches up to this size read only their own tokens' weights from the store.
FEW_MESSAGES = 20
# A batch of more messages than this, all of one kind, adds its counts but
# fits no weights. An online fit needs both kinds: on ham alone, then spam
# alone (two train commands), it called 976 of 1008 held-out ham spam with
# the 4-grams and 479 with the logistic weights, where one command with
# both gave 1 and 0. One or a few messages (the quarantine's buttons,
# autolearn) are train-on-error steps and are fitted as before.
ONE_KIND_MAX = FEW_MESSAGES
# Fewer messages than this in a batch leave the 4-gram weights as they are
# (their counts and token weights are learned). A step on one message moves
# every bucket it has, the common 4-grams of all mail among them, and no
# message of the other kind in the batch pulls those back: one "not spam"
# click on a quarantined spam let 13 of 100 held-out spam through clean
# (96 were quarantined before, 77 after).
NGRAM_MIN_BATCH = FEW_MESSAGES + 1
# Starts of files that are surely no mail: gzip, bzip2, xz, zstd, zip, ELF,
# PDF, PNG, JPEG.
BINARY_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd",
                b"PK\x03\x04", b"\x7fELF", b"%PDF-", b"\x89PNG", b"\xff\xd8\xff")
# RFC 5322 section 2.2: a field name is printable US-ASCII but ':', then ':'.
HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")


class TrainingError(Exception):
    """Training input cannot be used; the text says which and why."""


def default_parse() -> Callable[[bytes], ParsedMessage]:
    try:
        from core.mime import parse
    except ImportError as exc:
        raise TrainingError(f"the MIME parser core.mime is not available ({exc})")
    return parse


def strip_envelope(data: bytes) -> bytes:
    """Drop an mbox ``From `` envelope line at the start of a message."""
    if data.startswith(b"From "):
        end = data.find(b"\n")
        return b"" if end < 0 else data[end + 1:]
    return data


def not_mail(data: bytes) -> str:
    """Why ``data`` is not a mail message ("" when it may be one)."""
    if data.startswith(BINARY_MAGIC):
        return "binary-file"
    if b"\0" in data[:65536]:
        # Mail is text (RFC 5322 section 2.1); binary parts are encoded.
        return "nul-bytes"
    if not HEADER_LINE.match(data):
        return "no-header"
    return ""


def digest(parsed: ParsedMessage) -> str:
    """What identifies a message across copies (added headers do not count)."""
    h = hashlib.sha256()
    for name in ("message-id", "from", "date", "subject"):
        for value in parsed.header_values(name)[:2]:
            h.update(name.encode() + b":" + value.encode("utf-8", "surrogatepass"))
    for part in parsed.parts[:50]:
        h.update(part.content_type.encode("utf-8", "replace") + b"\0")
        h.update(part.filename.encode("utf-8", "surrogatepass") + b"\0")
        if part.text is not None:
            h.update(part.text[:100_000].encode("utf-8", "surrogatepass"))
        else:
            h.update(part.payload[:100_000])
    return h.hexdigest()


def _passes(messages: list[tuple], passes: int, step, orders: int = 0) -> None:
    """Online passes over ``messages`` until one takes no step.

    A new order each pass, fixed by the pass number (and ``orders``, which
    picks another series of orders) so that training is repeatable: an
    online fit does better than in one order.
    """
    ordered = sorted(messages, key=lambda m: m[0])
    for number in range(passes):
        random.Random(number + 1009 * orders).shuffle(ordered)
        if not sum(step(message) for message in ordered):
            break


def _fits(learned: list[tuple]) -> bool:
    """Whether a batch's weights are fitted (see ``ONE_KIND_MAX``)."""
    if len(learned) <= ONE_KIND_MAX:
        return True
    first = learned[0][1]
    return any(is_spam != first for _, is_spam, _, _ in learned)


@dataclasses.dataclass
class _Plan:
    """What one batch changes in the store, worked out before writing."""

    known: dict[str, bool]
    ngram_version: int
    deltas: dict[int, list] = dataclasses.field(default_factory=dict)
    marks: dict[str, bool] = dataclasses.field(default_factory=dict)
    learned: list[tuple] = dataclasses.field(default_factory=list)
    fitted: list[tuple] = dataclasses.field(default_factory=list)  # see _plan
    one_kind: bool = False  # no weights fitted: one kind alone (ONE_KIND_MAX)
    nham: int = 0
    nspam: int = 0
    skipped: int = 0
    weights: array | None = None
    version: int = 0
    keep: Callable | None = None  # a running filter's 4-gram weight setter


class Learner:
    """Sums the counts of learned messages and writes them in batches."""

    def __init__(self, opts: Options = Options(), impl=None, on_write=None,
                 table=None, compiled: bool | None = None, on_weights=None):
        self.opts = opts
        self.impl = impl
        self.on_write = on_write  # called with (deltas, nham, nspam)
        # A callable giving the table whose weights the fit starts from and
        # changes in place (a running filter's); None: read from the store.
        self.table = table
        self.bayes = scorer.implementation(compiled)
        self.grams = ngram.implementation(compiled)
        # A callable giving (4-gram weights or None, a callable taking the
        # fitted weights and their stored version): a running filter's.
        self.on_weights = on_weights
        self.own_table = None
        self.pending: list[tuple[str, bool, array, array]] = []
        self.learned = 0
        self.skipped = 0
        self.unfitted = 0  # learned in batches of one kind (ONE_KIND_MAX)
        self.failed = 0  # messages of batches that could not be written
        # Seconds a write waits for a locked database (store.patiently).
        self.patience = store.WRITE_PATIENCE

    def add(self, parsed: ParsedMessage, is_spam: bool) -> None:
        tokens = array("q", sorted(set(
            tokenizer.tokenize(parsed, self.opts, self.impl))))
        grams = self.grams.features(ngram.text(parsed), ngram.BITS)
        self.pending.append((digest(parsed), bool(is_spam), tokens, grams))
        if len(self.pending) >= BATCH_MESSAGES:
            self.flush()

    def _weights(self, messages):
        if self.table is not None:
            return self.table()
        if len(messages) <= FEW_MESSAGES and self.own_table is None:
            # One message from the quarantine: its own rows are enough.
            table = self.bayes.CountTable(1024)
            store.load_tokens(table, [t for _, _, tokens, _ in messages
                                      for t in tokens])
            return table
        if self.own_table is None:
            self.own_table = self.bayes.CountTable(
                max(store.BayesToken.select().count(), 1024))
            store.load(self.own_table)
        return self.own_table

    def fit(self, messages: list[tuple]) -> dict[int, float]:
        """TONE passes over ``messages``; returns the weight change per token."""
        table = self._weights(messages)
        changed = self.bayes.CountTable(1024)
        touched: set[int] = set()
        tone = self.bayes.tone

        def step(message) -> int:
            _, is_spam, tokens, _ = message
            if tone(table, tokens, is_spam, scorer.LR_RATE, scorer.LR_MARGIN,
                    changed):
                touched.update(tokens)
                return 1
            return 0

        _passes(messages, scorer.LR_PASSES, step)
        get = changed.get_weight
        return {token: get(token) for token in touched}

    def _start_weights(self):
        """(a running filter's 4-gram weights or None, its setter or None)."""
        if self.on_weights is None:
            return None, None
        current, keep = self.on_weights()
        # A copy: the running filter keeps scoring with the old weights
        # until the new ones are stored.
        return (None if current is None else array("f", current)), keep

    def fit_ngram(self, messages: list[tuple], start=None) -> array:
        """TONE passes of the 4-gram weights over ``messages``; returns them.

        They start from ``start`` (changed in place), else the store's.
        """
        weights = start
        if weights is None:
            weights, _ = store.load_ngram(1 << ngram.BITS)
        if weights is None:
            weights = ngram.new_weights()
        grams_step = self.grams.step
        fits = []
        for orders in range(ngram.FITS):
            fitted = weights[:]

            def step(message, fitted=fitted) -> int:
                _, is_spam, _, grams = message
                return grams_step(fitted, grams, is_spam, ngram.rate(is_spam),
                                  ngram.MARGIN)

            _passes(messages, ngram.PASSES, step, orders)
            fits.append(fitted)

        # Only the buckets of these messages moved; their mean is the fit.
        touched = set()
        for message in messages:
            touched.update(message[3])
        for bucket in touched:
            weights[bucket] = sum(fitted[bucket] for fitted in fits) / len(fits)
        return weights

    def _known(self, batch) -> dict[str, bool]:
        """The class each message of ``batch`` is stored as, if learned."""
        known: dict[str, bool] = {}
        digests = list({m[0] for m in batch})
        for start in range(0, len(digests), 500):
            query = BayesSeen.select().where(
                BayesSeen.digest.in_(digests[start:start + 500]))
            known.update((row.digest, bool(row.spam)) for row in query)
        return known

    def _plan(self, batch, known: dict[str, bool]) -> _Plan:
        """Count deltas and fitted weights of ``batch`` given what is known."""
        plan = _Plan(known=known, ngram_version=store.ngram_version())
        deltas = plan.deltas
        # Messages already learned as given count no more, but the weights
        # are fitted over them too: a batch that adds only spam to ham
        # learned before still holds both kinds to fit on.
        again = []
        for message in batch:
            key, is_spam, tokens, grams = message
            before = plan.marks.get(key, known.get(key))
            if before is is_spam:
                plan.skipped += 1
                again.append(message)
                continue
            sign_ham = -1 if is_spam else 1
            if before is None:
                # New message: only its own class grows.
                dh, ds = (0, 1) if is_spam else (1, 0)
            else:
                # Relearn: move it from the other class.
                dh, ds = sign_ham, -sign_ham
            for token in tokens:
                entry = deltas.get(token)
                if entry is None:
                    deltas[token] = [dh, ds]
                else:
                    entry[0] += dh
                    entry[1] += ds
            plan.nham += dh
            plan.nspam += ds
            plan.marks[key] = is_spam
            plan.learned.append((key, is_spam, tokens, grams))

        plan.fitted = plan.learned + again
        # Nothing new, but a batch of both kinds: fitted all the same, so that
        # running train again with both folders mends weights left unfitted
        # by one kind alone (more than a few, so that one message learned
        # again from the quarantine moves nothing).
        refit = not plan.learned and len(again) > ONE_KIND_MAX
        if not (plan.learned or refit):
            return plan
        if not _fits(plan.fitted):
            plan.one_kind = True
            return plan
        for token, weight in self.fit(plan.fitted).items():
            deltas.setdefault(token, [0, 0]).append(weight)
        if len(plan.fitted) >= NGRAM_MIN_BATCH:
            start, plan.keep = self._start_weights()
            plan.weights = self.fit_ngram(plan.fitted, start)
        return plan

    def _write(self, batch, plan: _Plan) -> _Plan:
        """Store ``plan`` in one transaction; planned again if the store moved."""
        with store.write_transaction():
            known = self._known(batch)
            if known != plan.known:
                # Another process learned some of these messages meanwhile:
                # plan again from what is stored now (the lock is held).
                self.own_table = None
                plan = self._plan(batch, known)
            elif (plan.weights is not None
                  and store.ngram_version() != plan.ngram_version):
                # Another process stored 4-gram weights: fit on top of them.
                stored, _ = store.load_ngram(1 << ngram.BITS)
                plan.weights = self.fit_ngram(plan.fitted, stored)
            if plan.learned or plan.deltas or plan.weights is not None:
                store.apply(plan.deltas, plan.nham, plan.nspam)
                store.mark_seen(plan.marks)
                if plan.weights is not None:
                    plan.version = store.save_ngram(plan.weights)
        return plan

    def flush(self) -> int:
        """Write what is pending; returns how many messages changed counts.

        Raises ``store.StoreBusy`` when the database stayed locked; then
        nothing of the batch is stored and ``failed`` counts its messages.
        """
        if not self.pending:
            return 0
        batch, self.pending = self.pending, []
        plan = self._plan(batch, self._known(batch))
        try:
            plan = store.patiently(lambda: self._write(batch, plan),
                                   "the Bayes token store", self.patience)
        except Exception:
            # The fit moved this learner's own weights; read them again.
            self.own_table = None
            self.failed += len(batch)
            raise

        if plan.one_kind:
            self.unfitted += len(plan.learned)
        if plan.weights is not None and plan.keep is not None:
            plan.keep(plan.weights, plan.version)
        if self.on_write is not None and (plan.learned or plan.deltas):
            self.on_write(plan.deltas, plan.nham, plan.nspam)
        changed = len(plan.learned)
        self.skipped += plan.skipped
        self.learned += changed
        return changed


def _is_mbox(data: bytes) -> bool:
    return data.startswith(b"From ") and b"\n\nFrom " in data


def split_mbox(data: bytes) -> Iterator[bytes]:
    """Messages of an mbox (mboxo/mboxrd: ``>From `` lines are unquoted)."""
    spans = []
    begin = pos = 0
    while True:
        pos = data.find(b"\n\nFrom ", pos)
        if pos < 0:
            break
        # The blank line before "From " separates; it is not message text.
        spans.append((begin, pos + 1))
        begin = pos = pos + 2
    spans.append((begin, len(data)))
    for begin, end in spans:
        message = strip_envelope(data[begin:end])
        if b"\n>From " in message:
            message = message.replace(b"\n>From ", b"\nFrom ")
        if message.strip():
            yield message


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    if (path / "cur").is_dir() and (path / "new").is_dir():
        for sub in ("new", "cur"):
            yield from sorted(p for p in (path / sub).iterdir() if p.is_file())
        return
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name


def messages(paths: Iterable, counts: dict | None = None
             ) -> Iterator[tuple[Path, bytes]]:
    """(file, raw message) for every mail message under ``paths``.

    What is left out is counted in ``counts``: ``skipped_too_big``,
    ``unreadable`` and ``skipped_not_mail``; ``files`` counts files found.
    """
    counts = {} if counts is None else counts
    for key in ("files", "skipped_too_big", "unreadable", "skipped_not_mail"):
        counts.setdefault(key, 0)
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise TrainingError(f"{path} does not exist; give files or folders "
                                "of messages (one file each, mbox or Maildir)")
        for name in _files(path):
            counts["files"] += 1
            try:
                if name.stat().st_size > MAX_FILE:
                    log.warning("event=bayes_train_skip file=%s reason=too-big", name)
                    counts["skipped_too_big"] += 1
                    continue
                data = name.read_bytes()
            except OSError as exc:
                log.warning("event=bayes_train_skip file=%s reason=%s", name,
                            exc.strerror or type(exc).__name__)
                counts["unreadable"] += 1
                continue
            found = split_mbox(data) if _is_mbox(data) else (strip_envelope(data),)
            for message in found:
                reason = not_mail(message)
                if reason:
                    log.warning("event=bayes_train_skip file=%s reason=%s", name,
                                reason)
                    counts["skipped_not_mail"] += 1
                    continue
                yield name, message


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label = label
        self.total = max(total, 1)
        self.enabled = enabled and sys.stderr.isatty()
        self.shown = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.shown < 0.1 and done < self.total):
            return
        self.shown = now
        share = min(done / self.total, 1.0)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} files")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _count_files(paths) -> int:
    return sum(1 for path in paths for _ in _files(Path(path)))


def train(paths_ham, paths_spam, progress: bool = True, settings=None,
          parse: Callable[[bytes], ParsedMessage] | None = None) -> dict:
    """Learn every message under ``paths_ham`` as ham and ``paths_spam`` as spam.

    Ham and spam are read in turns, in the proportion of their file counts,
    so every batch holds both: an online fit that met all the ham and then
    all the spam would end leaning to spam (see ``_interleave``).

    Returns counts: learned, already known, unreadable, skipped (not mail,
    too big), seconds, and the store's totals; ``nothing_found_under`` lists
    the paths that held no file (only when some did). Raises TrainingError
    when no path held any file, or when the store stayed locked (saying how
    much was learned).
    """
    parse = parse or default_parse()
    learner = Learner(tokenizer.options(settings))
    started = time.monotonic()
    counts: dict[str, int] = {}
    empty: list[str] = []
    ham, spam = list(paths_ham or ()), list(paths_spam or ())
    for path in ham + spam:
        if not Path(path).exists():
            raise TrainingError(f"{path} does not exist; give files or folders "
                                "of messages (one file each, mbox or Maildir)")

    sizes = _count_files(ham), _count_files(spam)
    bar = _Progress("learning ham and spam", sum(sizes), progress)
    read = _Read(bar)
    mixed = _interleave(_parsed(ham, False, counts, empty, read, parse), sizes[0],
                        _parsed(spam, True, counts, empty, read, parse), sizes[1])
    try:
        for parsed, is_spam in mixed:
            learner.add(parsed, is_spam)
        learner.flush()
    except store.StoreBusy as exc:
        raise TrainingError(
            f"{exc}: {learner.learned} messages were learned and stored, the "
            f"last {learner.failed + len(learner.pending)} read were not; run the "
            "same command again to learn the rest (messages already learned are "
            "skipped)") from None
    finally:
        bar.close()
    if empty and len(empty) == len(ham) + len(spam):
        raise TrainingError(f"no messages found under {', '.join(empty)}; give "
                            "folders of messages (one file each, mbox or Maildir)")

    result = {
        "learned": learner.learned,
        "already_known": learner.skipped,
        "weights_not_fitted": learner.unfitted,
        "unreadable": counts.get("unreadable", 0),
        "skipped_not_mail": counts.get("skipped_not_mail", 0),
        "skipped_too_big": counts.get("skipped_too_big", 0),
        "seconds": round(time.monotonic() - started, 1),
    }
    result.update(store.stats())
    if empty:
        result["nothing_found_under"] = empty
    log.info("event=bayes_train learned=%d known=%d unreadable=%d not_mail=%d "
             "too_big=%d", learner.learned, learner.skipped, result["unreadable"],
             result["skipped_not_mail"], result["skipped_too_big"])
    return result


def _interleave(first: Iterator, first_size: int, second: Iterator,
                second_size: int) -> Iterator:
    """The items of both iterators in turns, in the proportion of their sizes.

    The 4-gram and logistic fits are online passes over each batch; a batch
    of one kind alone is fitted by pushing every weight it meets that way,
    which in a batch of spam after a batch of ham marks the words ham and
    spam share as spam (seen: 12 of 15 held-out ham called spam by ngram).
    """
    taken = [0, 0]
    sizes = (max(first_size, 1), max(second_size, 1))
    sources = [first, second]
    while sources[0] is not None or sources[1] is not None:
        if sources[1] is None:
            turn = 0
        elif sources[0] is None:
            turn = 1
        else:
            turn = 0 if taken[0] * sizes[1] <= taken[1] * sizes[0] else 1
        try:
            item = next(sources[turn])
        except StopIteration:
            sources[turn] = None
            continue
        taken[turn] += 1
        yield item


class _Read:
    """Files read so far, for the progress bar of two interleaved streams."""

    def __init__(self, bar: "_Progress"):
        self.bar = bar
        self.files = 0

    def one_more(self) -> None:
        self.files += 1
        self.bar.update(self.files)


def _parsed(paths, is_spam: bool, counts: dict, empty: list, read: _Read,
            parse) -> Iterator[tuple[ParsedMessage, bool]]:
    """(parsed message, is_spam) for every message under ``paths``."""
    for path in paths:
        found: dict[str, int] = {}
        last = None
        for name, data in messages([path], found):
            if name != last:
                read.one_more()
                last = name
            try:
                parsed = parse(data)
            except Exception as exc:  # core.mime never raises; others may
                log.warning("event=bayes_train_skip file=%s reason=%s", name,
                            type(exc).__name__)
                found["unreadable"] += 1
                continue
            yield parsed, is_spam
        if not found["files"]:
            empty.append(str(path))
        for key, value in found.items():
            counts[key] = counts.get(key, 0) + value


def learn(data_or_parsed, is_spam: bool, settings=None) -> bool:
    """Learn one message (raw bytes or parsed); False if already learned so."""
    if isinstance(data_or_parsed, (bytes, bytearray, memoryview)):
        parsed = default_parse()(strip_envelope(bytes(data_or_parsed)))
    else:
        parsed = data_or_parsed
    learner = Learner(tokenizer.options(settings))
    learner.patience = store.QUICK_PATIENCE  # a click in the web admin
    learner.add(parsed, is_spam)
    return learner.flush() > 0
