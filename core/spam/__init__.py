"""The Bayesian spam filter and URI blocklists, as the pipeline calls them.

``SpamFilter(settings).check(parsed)`` gives a ``SpamResult``: a score in
SpamAssassin-like points (see ``core.spam.scorer.points``), the spam
probability, a verdict (spam, ham or unsure) and the tokens that weighed
most. ``bayes_method`` picks how token evidence is combined (chi-square
over counts, of header and body apart by default, logistic regression over
trained weights, the mean of chi-square and logistic, logistic regression
over character 4-grams, or header/body chi-square and 4-grams together; see
``core.spam.scorer``). Build it once per worker: the token table is
read from the database at the first check and refreshed when the store
changes.

For the CLI and the quarantine: ``train``, ``learn``, ``stats``, ``dump``,
``restore`` and ``expire``.

Limits: until ``bayes_min_learned`` ham and spam messages are learned the
filter scores 0 and says so in ``note``; autolearned messages are written
in batches, so a worker that dies loses its last unwritten batch (at most
``AUTOLEARN_BATCH`` messages, which only cost a little training).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from core.message import ParsedMessage
from core.spam import features, ngram, scorer, store, tokenizer, training
from core.spam.store import StoreError
from core.spam.training import TrainingError

log = logging.getLogger(__name__)

AUTOLEARN_BATCH = 50
AUTOLEARN_SECONDS = 60.0
EXPLAIN = 10
# The name the 4-gram model's own probability goes by among the clues.
NGRAM_CLUE = "(character 4-grams)"
# Token names kept by a filter for explaining (hash -> text), at most this many.
MAX_NAMES = 20000

__all__ = ["SpamFilter", "SpamResult", "train", "learn", "stats", "dump",
           "restore", "expire", "StoreError", "TrainingError"]


@dataclasses.dataclass
class SpamResult:
    """What the spam filter found in one message."""

    score: float
    probability: float | None  # None when Bayes gave no score (see note)
    verdict: str  # spam | ham | unsure
    tokens: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    note: str = ""  # why there is no Bayes score, when there is none
    uri_hits: list = dataclasses.field(default_factory=list)  # uribl.UriHit
    uri_note: str = ""  # which URI lookups were not made and why, "" if none
    autolearned: str = ""  # spam | ham | ""


def _check_settings(settings) -> None:
    low, high = settings.bayes_unsure_low, settings.bayes_unsure_high
    if not 0.0 < low < high < 1.0:
        raise ValueError(
            f"bayes_unsure_low ({low}) and bayes_unsure_high ({high}) must satisfy "
            "0 < low < high < 1; the defaults are 0.2 and 0.9")
    if not 0 <= settings.bayes_bigrams <= 8:
        raise ValueError(f"bayes_bigrams is {settings.bayes_bigrams}; allowed 0..8")


class SpamFilter:
    """Bayes probability and URI blocklist hits of parsed messages."""

    def __init__(self, settings, compiled: bool | None = None):
        _check_settings(settings)
        self.settings = settings
        self.opts = tokenizer.options(settings)
        self.tokenizer = tokenizer.implementation(compiled)
        self.features = tokenizer.features_for(self.tokenizer)
        self.scorer = scorer.Scorer(compiled,
                                    getattr(settings, "bayes_method", "mix"))
        self.low = settings.bayes_unsure_low
        self.high = settings.bayes_unsure_high
        self.grams = ngram.implementation(compiled)
        self.learner = training.Learner(self.opts, self.tokenizer,
                                        on_write=self.scorer.add,
                                        table=self._table, compiled=compiled,
                                        on_weights=self._weights)
        # Autolearning must not hold up mail for long on a locked database.
        self.learner.patience = store.QUICK_PATIENCE
        self.flushed_at = time.monotonic()
        self._names: dict[int, str] = {}
        self.uribl = None
        if settings.uribl_zones:
            from core.spam.uribl import UriBlocklist

            self.uribl = UriBlocklist(settings)

    def _table(self):
        # The weights the next fit starts from: this worker's table, current.
        self.scorer.refresh(0.0)
        return self.scorer.table

    def _weights(self):
        # The 4-gram weights the next fit starts from: this worker's, current.
        self.scorer.refresh(0.0)
        return self.scorer.weights, self.scorer.set_weights

    def _autolearn(self, parsed: ParsedMessage, probability: float) -> str:
        s = self.settings
        if not s.bayes_autolearn:
            return ""
        if probability >= s.bayes_autolearn_spam:
            kind = "spam"
        elif probability <= s.bayes_autolearn_ham:
            kind = "ham"
        else:
            return ""
        self.learner.add(parsed, kind == "spam")
        if (len(self.learner.pending) >= AUTOLEARN_BATCH
                or time.monotonic() - self.flushed_at > AUTOLEARN_SECONDS):
            try:
                self.flush()
            except StoreError as exc:
                # Losing an autolearn batch costs a little training; failing
                # the message that triggered the write would cost its delivery.
                log.warning("event=bayes_autolearn_error error=%s", exc)
        return kind

    def flush(self) -> None:
        """Write autolearned messages still held in memory."""
        self.flushed_at = time.monotonic()
        self.learner.flush()

    def bayes(self, parsed: ParsedMessage, explain: bool = True):
        """(probability or None, [(token, f)], note)."""
        self.scorer.refresh(self.settings.bayes_reload_seconds)
        need = self.settings.bayes_min_learned
        nham, nspam = self.scorer.nham, self.scorer.nspam
        if nham < max(need, 1) or nspam < max(need, 1):
            return None, [], (f"Bayes not trained enough: {nham} ham and {nspam} "
                              f"spam learned, {max(need, 1)} of each needed")

        method = self.scorer.method
        grams = None
        if method == "ngram" or (method == "mix" and self.scorer.ngram_heard()):
            grams = self.grams.features(ngram.text(parsed), ngram.BITS)
        if method == "ngram":
            tokens = segments = None
        elif method in ("split", "mix"):
            head, body = self.features.parts(parsed)
            head_tokens = self.tokenizer.hash_segments(head, self.opts)
            # The per-message cap holds for both parts together, as in training.
            rest = dataclasses.replace(
                self.opts, max_tokens=max(self.opts.max_tokens - len(head_tokens), 0))
            tokens = (head_tokens, self.tokenizer.hash_segments(body, rest))
            if grams is not None:
                tokens += (self.tokenizer.hash_segments(features.author(head),
                                                        self.opts),)
            segments = head + body
        else:
            segments = self.features.segments(parsed)
            tokens = self.tokenizer.hash_segments(segments, self.opts)
        listed = grams is not None and features.is_list_mail(parsed)
        probability, _, top = self.scorer.probability(
            tokens, EXPLAIN if explain else 0, grams, listed)
        named = []
        if top:
            names = self._names
            missing = {t for t, _ in top if t not in names}
            if missing:
                # A second pass names only the strongest tokens: cheaper than
                # keeping the text of every token. The strongest tokens are
                # mostly common ones, so most messages find theirs named.
                _, found = self.tokenizer.hash_segments(segments, self.opts, missing)
                if len(names) + len(found) > MAX_NAMES:
                    names.clear()
                names.update(found)
            named = [(names.get(t) or f"#{t & 0xFFFFFFFFFFFFFFFF:016x}", round(f, 4))
                     for t, f in top]
        if explain and grams is not None:
            named.append((NGRAM_CLUE, round(
                scorer.sigmoid(self.scorer.last_ngram), 4)))
        return probability, named, ""

    def check(self, parsed: ParsedMessage, explain: bool = True) -> SpamResult:
        """Score one message: Bayes points plus URI blocklist points."""
        probability, named, note = self.bayes(parsed, explain)
        if probability is None:
            result = SpamResult(0.0, None, "unsure", [], note)
        else:
            verdict = ("spam" if probability >= self.high
                       else "ham" if probability <= self.low else "unsure")
            result = SpamResult(scorer.points(probability, self.low, self.high),
                                probability, verdict, named)
            result.autolearned = self._autolearn(parsed, probability)
        if self.uribl is not None:
            checked = self.uribl.examine(parsed)
            result.uri_hits, result.uri_note = checked.hits, checked.note
            points = sum(hit.score for hit in result.uri_hits)
            result.score = round(result.score + points, 3)
        return result

    def learn(self, parsed: ParsedMessage, is_spam: bool) -> bool:
        """Learn one message now (train-on-error); False if already learned so."""
        self.learner.add(parsed, is_spam)
        return self.learner.flush() > 0


def _settings(settings=None):
    if settings is not None:
        return settings
    from core import config

    return config.load()


def train(paths_ham, paths_spam, progress: bool = True, settings=None, parse=None):
    """Learn folders/files of ham and spam; returns counts (see training.train)."""
    return training.train(paths_ham, paths_spam, progress, _settings(settings), parse)


def learn(data_or_parsed, is_spam: bool, settings=None) -> bool:
    """Learn one message, raw bytes or parsed; False if already learned so."""
    return training.learn(data_or_parsed, is_spam, _settings(settings))


def stats() -> dict:
    """Messages and tokens in the store."""
    return store.stats()


def dump(path) -> int:
    """Back up the store to ``path``; returns the number of token rows."""
    return store.dump(path)


def restore(path) -> dict:
    """Replace the store with a backup made by ``dump``; returns stats()."""
    return store.restore(path)


def expire(settings=None, patience: float = store.WRITE_PATIENCE) -> int:
    """Drop old rare tokens (bayes_expire_days); returns how many went."""
    return store.expire(_settings(settings).bayes_expire_days, patience=patience)
