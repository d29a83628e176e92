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

Limits: the passes see one batch at a time (``BATCH_MESSAGES``), so a
training set much larger than a batch is fitted batch after batch rather
than in passes over all of it; a Learner without a table of its own reads
the whole store once, at its first write of more than ``FEW_MESSAGES``
messages, to start from its weights. Two processes learning at the same
moment each store the 4-gram weights they fitted: the later write wins and
the other's steps on them are lost (its counts are not).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
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

    def fit_ngram(self, messages: list[tuple]) -> None:
        """TONE passes of the 4-gram weights over ``messages``; stores them."""
        weights = keep = None
        if self.on_weights is not None:
            current, keep = self.on_weights()
            if current is not None:
                # A copy: the running filter keeps scoring with the old
                # weights until the new ones are stored.
                weights = array("f", current)
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
        version = store.save_ngram(weights)
        if keep is not None:
            keep(weights, version)

    def flush(self) -> int:
        """Write what is pending; returns how many messages changed counts."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, []
        known: dict[str, bool] = {}
        digests = list({m[0] for m in batch})
        for start in range(0, len(digests), 500):
            query = BayesSeen.select().where(
                BayesSeen.digest.in_(digests[start:start + 500]))
            known.update((row.digest, bool(row.spam)) for row in query)

        deltas: dict[int, list] = {}
        nham = nspam = changed = 0
        marks: dict[str, bool] = {}
        learned: list[tuple] = []
        for key, is_spam, tokens, grams in batch:
            before = marks.get(key, known.get(key))
            if before is is_spam:
                self.skipped += 1
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
            nham += dh
            nspam += ds
            marks[key] = is_spam
            learned.append((key, is_spam, tokens, grams))
            changed += 1

        if changed:
            for token, weight in self.fit(learned).items():
                deltas[token].append(weight)
            store.apply(deltas, nham, nspam)
            store.mark_seen(marks)
            self.fit_ngram(learned)
            if self.on_write is not None:
                self.on_write(deltas, nham, nspam)
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


def messages(paths: Iterable) -> Iterator[tuple[Path, bytes]]:
    """(file, raw message) for every message under ``paths``."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise TrainingError(f"{path} does not exist; give files or folders "
                                "of messages (one file each, mbox or Maildir)")
        for name in _files(path):
            try:
                if name.stat().st_size > MAX_FILE:
                    log.warning("event=bayes_train_skip file=%s reason=too-big", name)
                    continue
                data = name.read_bytes()
            except OSError as exc:
                log.warning("event=bayes_train_skip file=%s reason=%s", name, exc)
                continue
            if _is_mbox(data):
                for message in split_mbox(data):
                    yield name, message
            else:
                yield name, strip_envelope(data)


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

    Returns counts: learned, already known, unreadable, seconds.
    """
    parse = parse or default_parse()
    opts = tokenizer.options(settings)
    learner = Learner(opts)
    started = time.monotonic()
    failed = 0
    for label, paths, is_spam in (("ham", paths_ham or (), False),
                                  ("spam", paths_spam or (), True)):
        paths = list(paths)
        if not paths:
            continue
        bar = _Progress(f"learning {label}", _count_files(paths), progress)
        done = 0
        last = None
        for name, data in messages(paths):
            if name != last:
                done += 1
                last = name
                bar.update(done)
            try:
                parsed = parse(data)
            except Exception as exc:  # core.mime never raises; others may
                log.warning("event=bayes_train_skip file=%s reason=%s", name,
                            type(exc).__name__)
                failed += 1
                continue
            learner.add(parsed, is_spam)
        learner.flush()
        bar.update(done)
        bar.close()
    result = {
        "learned": learner.learned,
        "already_known": learner.skipped,
        "unreadable": failed,
        "seconds": round(time.monotonic() - started, 1),
    }
    result.update(store.stats())
    log.info("event=bayes_train learned=%d known=%d unreadable=%d",
             learner.learned, learner.skipped, failed)
    return result


def learn(data_or_parsed, is_spam: bool, settings=None) -> bool:
    """Learn one message (raw bytes or parsed); False if already learned so."""
    if isinstance(data_or_parsed, (bytes, bytearray, memoryview)):
        parsed = default_parse()(strip_envelope(bytes(data_or_parsed)))
    else:
        parsed = data_or_parsed
    learner = Learner(tokenizer.options(settings))
    learner.add(parsed, is_spam)
    return learner.flush() > 0
