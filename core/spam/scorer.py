"""Spam probability of a token list, over an in-memory copy of the store.

Combining steps, chosen by ``bayes_method``: ``chi`` (Robinson's
per-token estimate from the counts, Fisher's chi-square combining, as
SpamBayes), ``split`` (the same chi-square once over the header tokens and
once over the body tokens, their log-odds averaged), ``logistic`` (logistic
regression over the per-token weights that training fits on or near errors,
see ``core.spam.training``), ``both`` (the mean of chi and logistic),
``ngram`` (logistic regression over hashed character 4-grams, see
``core.spam.ngram``) and ``mix`` (``split`` and ``ngram`` together: half
the sum of the split log-odds, ``NGRAM_WEIGHT`` times the 4-gram log-odds
and ``AUTHOR_WEIGHT`` times the chi-square log-odds of the header fields
the sender writes; for mailing-list mail the split log-odds weigh the
header by ``LIST_HEAD_SHARE`` only; ``split`` alone until the store holds
``NGRAM_MIN_LEARNED`` messages of each kind).

Why ``split``: a body gives hundreds of clues and the header a few dozen,
so in one chi-square the body decides alone; a newsletter that reads like
spam but comes the way the same sender's ham always came loses the
evidence of its sending path. Scored apart, the header is one of two
voices. Chosen by 3-fold cross-validation on the training part of the dev
corpus (bench/bayes.py); checked on the test parts of four splits: no more
false positives and fewer false negatives than ``chi`` at the 0.9 cutoff
on each. Scaling the summed log-odds only moves the same ranking along
the cutoff; the plain mean is the one scale that had both fewer false
positives and fewer false negatives than ``chi`` in that cross-validation
(larger scales trade misses for false positives).

Why ``mix`` is the default: in 3-fold cross-validation on the training
parts of four splits (``bench/bayes.py --cv 3 --seed ...``; 8,377 held-out
ham and 3,749 held-out spam in all) it called 28 ham spam and missed 109
spam at the 0.9 cutoff, against 37 and 149 for ``split``: on each split
no more false positives and fewer misses (27 and 82 with the author voice
and the look-alike folding of ``features.visible``). The word counts and the
character 4-grams mostly err on different messages, so each corrects the
other more often than it misleads it.

The compiled scorer (``core.fast._bayes``) is used when built, else the twin
(``core.spam.bayes_py``). The table is read from the database once, then
refreshed when the store's ``generation`` changed: incrementally (tokens
learned since the last load) unless rows may have been removed (``epoch``
changed by expiry or restore), which needs a full reload.

Probability to points (``points``): piecewise linear through
(0, -1.5), (0.01, -1.0), (unsure_low, 0), (unsure_high, 3.0), (0.99, 4.0),
(0.999, 6.0) and (1, 7.0). Sure ham gets a small bonus, the unsure band
less than the default tag level, a spam verdict at least that level (so a
message Bayes calls spam is tagged: the figures of bench/bayes.py are what
the gateway does), and only a very sure spam verdict alone reaches the
default quarantine level of 6.
"""

from __future__ import annotations

import logging
import math
import time

from core.spam import bayes_py, builds, ngram, store

try:
    from core.fast import _bayes as _compiled
except ImportError:  # not built: the twin does the same, slower
    _compiled = None

log = logging.getLogger(__name__)

COMPILED = _compiled is not None

# SpamBayes' defaults for s and x of Robinson's estimate and the least
# |f - 0.5| a token needs to count; more clues than SpamBayes' 150 because
# OSB pairs give every message more of them (tuned with bench/bayes.py).
STRENGTH = 0.45
UNKNOWN = 0.5
MIN_DISTANCE = 0.1
MAX_CLUES = 400

# Online logistic regression (train on or near error, TONE, as the TREC 2007
# winner), over our hashed tokens rather than character 4-grams. Picked with
# bench/bayes.py on two splits from rates 0.005-0.2 and margins 0.3-0.45; the
# fit depends on message order, so nearby values differ by several misses.
LR_RATE = 0.05
LR_MARGIN = 0.3
LR_PASSES = 10
METHODS = ("split", "chi", "logistic", "both", "mix", "ngram")
# How much the 4-gram log-odds counts beside the split log-odds in ``mix``:
# the 4-gram scores are smaller (a normalised dot product, mostly within
# +-6), so they need a scale to be heard beside chi-square's up to +-34.5.
# Chosen by 3-fold cross-validation on the training parts (bench/bayes.py).
NGRAM_WEIGHT = 3.0
# The header's share of the split log-odds in ``mix`` for mail that came
# through a mailing list. The list's own header fields describe the list,
# not the author, and they are the same on the spam a list lets through as
# on its ham: there the header mostly says "this list", which training
# learnt as ham. Chosen with 3-fold cross-validation over the whole dev
# corpus (two partitions) and the test parts of four splits: at a tenth,
# fewer misses at the same false positives on all of them than the mean
# (0.25 and 0 did about as well; the mean is 0.5). ``split`` alone keeps
# the mean: without the 4-gram voice the body alone lets more ham through.
LIST_HEAD_SHARE = 0.1
# How much the author voice counts in ``mix``: chi-square over the header
# fields the sender writes (``features.AUTHOR_PREFIXES``: From, Reply-To,
# Subject, Message-ID, X-Mailer, content type), on top of the split and
# 4-gram log-odds. Relay and list fields outnumber them in the header voice,
# and for list mail that voice is nearly muted, so the sender's own fields
# were barely heard. Chosen by 3-fold cross-validation on the training parts
# of four splits (weights 0.15 to 1.5): at 1.0 the held-out false positives
# stayed 28 of 8,377 and the misses went from 109 to 84 of 3,749; at every
# false-positive budget from 12 to 40 the ranking missed less than without.
AUTHOR_WEIGHT = 1.0
# Messages of each kind the store must hold before ``mix`` hears the 4-gram
# voice; with fewer it scores as ``split``. A 4-gram fit on a few dozen
# messages is mostly noise: on learning curves over two splits of the dev
# corpus (random training subsets, each scored on its split's test part)
# mix missed more spam than split with 29-69 learned spam, as many with 86,
# and fewer with 128 and more (at 128 with 8 false positives against 4).
NGRAM_MIN_LEARNED = 150
# A part's chi-square probability is held this far from 0 and 1 before its
# log-odds are taken (about 34.5 either way), so one sure part cannot
# outvote any doubt of the other without bound.
SPLIT_EPSILON = 1e-15


def implementation(compiled: bool | None = None):
    """The compiled bayes module, or the twin (bayes_py)."""
    return builds.choose(_compiled, bayes_py, compiled, "_bayes")


def _logodds(probability: float) -> float:
    p = min(max(probability, SPLIT_EPSILON), 1.0 - SPLIT_EPSILON)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    """The probability of log-odds ``z``."""
    return 1.0 / (1.0 + math.exp(-min(max(z, -700.0), 700.0)))


def points(probability: float, low: float = 0.2, high: float = 0.9) -> float:
    """The score contribution of a spam probability (see the module text)."""
    knots = ((0.0, -1.5), (0.01, -1.0), (low, 0.0), (high, 3.0),
             (0.99, 4.0), (0.999, 6.0), (1.0, 7.0))
    probability = min(max(probability, 0.0), 1.0)
    for (x0, y0), (x1, y1) in zip(knots, knots[1:]):
        if probability <= x1:
            if x1 <= x0:
                return y1
            return round(y0 + (y1 - y0) * (probability - x0) / (x1 - x0), 3)
    return knots[-1][1]


class Scorer:
    """Token counts in memory and the combining step over them."""

    def __init__(self, compiled: bool | None = None, method: str = "mix"):
        if method not in METHODS:
            raise ValueError(f"bayes_method is {method!r}; one of {', '.join(METHODS)}")
        self.method = method
        self.impl = implementation(compiled)
        self.grams = ngram.implementation(compiled)
        self.table = self.impl.CountTable()
        # The 4-gram weights (None until some are stored) and their version.
        self.weights = None
        self.weights_version = 0
        # The 4-gram log-odds of the last message scored with them (for the
        # Why list, so that explaining does not score the message twice).
        self.last_ngram = 0.0
        self.nham = 0
        self.nspam = 0
        self.generation = -1
        self.epoch = -1
        self.loaded_day = 0
        self.checked_at = 0.0

    def load(self) -> None:
        """Read the whole store into a fresh table, then swap it in."""
        started = time.monotonic()
        day = store.today()
        table = self.impl.CountTable(max(store.BayesToken.select().count(), 1024))
        values = store.load(table)
        self.table = table
        self._took(values, day)
        self._load_weights()
        log.info("event=bayes_load tokens=%d ham=%d spam=%d ms=%d", len(table),
                 self.nham, self.nspam, (time.monotonic() - started) * 1000)

    def _load_weights(self) -> None:
        if self.method not in ("mix", "ngram"):
            return
        if store.ngram_version() == self.weights_version:
            return
        self.weights, self.weights_version = store.load_ngram(1 << ngram.BITS)

    def set_weights(self, weights, version: int) -> None:
        """Take 4-gram weights this process trained and stored as ``version``."""
        if self.method in ("mix", "ngram"):
            self.weights, self.weights_version = weights, version

    def _took(self, values: dict[str, int], day: int) -> None:
        self.nham = values["nham"]
        self.nspam = values["nspam"]
        self.generation = values["generation"]
        self.epoch = values["epoch"]
        self.loaded_day = day
        self.checked_at = time.monotonic()

    def refresh(self, interval: float) -> None:
        """Reload what changed, at most once per ``interval`` seconds."""
        now = time.monotonic()
        if self.generation >= 0 and now - self.checked_at < interval:
            return
        self.checked_at = now
        values = store.meta()
        if values["generation"] == self.generation:
            return
        if self.generation < 0 or values["epoch"] != self.epoch:
            self.load()
            return
        day = store.today()
        values = store.load(self.table, since_day=self.loaded_day)
        self._took(values, day)
        self._load_weights()

    def add(self, deltas: dict[int, list], nham: int, nspam: int) -> None:
        """Apply learned count deltas to the in-memory table (this process's own).

        Weights are not in it: training changed them in this table already.
        """
        get, put = self.table.get, self.table.put
        for token, delta in deltas.items():
            ham, spam = get(token)
            put(token, max(ham + delta[0], 0), max(spam + delta[1], 0))
        self.nham += nham
        self.nspam += nspam

    def chi(self, tokens, explain: int = 10):
        """(chi-square probability, clue count, [(token, f)] of the strongest)."""
        return self.impl.score(self.table, tokens, self.nham, self.nspam,
                               STRENGTH, UNKNOWN, MIN_DISTANCE, MAX_CLUES, explain)

    def logistic(self, tokens, explain: int = 10):
        """(logistic probability, weighted tokens, [(token, f)] of the strongest).

        A token's f is the logistic of its weight alone, so that it reads
        like a chi-square clue: near 1 spam, near 0 ham.
        """
        prob, count, top = self.impl.logistic(self.table, tokens, explain)
        return prob, count, [(t, 1.0 / (1.0 + math.exp(-min(max(w, -50.0), 50.0))))
                             for t, w in top]

    def split(self, head, body, explain: int = 10, head_share: float = 0.5):
        """(probability, clue count, [(token, f)] of the strongest clues).

        Chi-square of the header tokens and of the body tokens apart; their
        log-odds weighed ``head_share`` and 1 - ``head_share`` (the mean by
        default) are the message's.
        """
        head_prob, head_used, head_top = self.chi(head, explain)
        body_prob, body_used, body_top = self.chi(body, explain)
        z = (head_share * _logodds(head_prob)
             + (1.0 - head_share) * _logodds(body_prob))
        top = sorted(head_top + body_top, key=lambda c: (-abs(c[1] - 0.5), c[0]))
        return 1.0 / (1.0 + math.exp(-z)), head_used + body_used, top[:explain]

    def ngram(self, grams) -> float:
        """The 4-gram log-odds of a message's buckets (0 with no weights)."""
        if self.weights is None:
            return 0.0
        return self.grams.score(self.weights, grams)

    def ngram_heard(self) -> bool:
        """Whether ``mix`` hears the 4-gram voice now.

        Not for a store trained before the 4-gram model (no weights), nor
        before it holds ``NGRAM_MIN_LEARNED`` messages of each kind.
        """
        return (self.weights is not None
                and min(self.nham, self.nspam) >= NGRAM_MIN_LEARNED)

    def probability(self, tokens, explain: int = 10, grams=None,
                    listed: bool = False):
        """(probability, clue count, [(token, f)] of the strongest clues).

        For ``split`` and ``mix`` give ``tokens`` as (header tokens, body
        tokens), for ``mix`` with the author tokens third (``features.author``;
        without them no author voice); ``mix`` and ``ngram`` need the
        message's 4-gram ``grams``;
        ``listed`` says the message came through a mailing list
        (``features.is_list_mail``), which ``mix`` weighs by ``LIST_HEAD_SHARE``.
        """
        if self.method == "split":
            return self.split(*tokens, explain)
        if self.method == "mix":
            head, body = tokens[:2]
            if not self.ngram_heard():
                return self.split(head, body, explain)
            share = LIST_HEAD_SHARE if listed else 0.5
            prob, used, top = self.split(head, body, explain, share)
            self.last_ngram = self.ngram(grams)
            z = _logodds(prob) + NGRAM_WEIGHT * self.last_ngram
            if len(tokens) > 2:
                z += AUTHOR_WEIGHT * _logodds(self.chi(tokens[2], 0)[0])
            return sigmoid(z / 2.0), used + len(grams), top
        if self.method == "ngram":
            self.last_ngram = self.ngram(grams)
            return sigmoid(self.last_ngram), len(grams), []
        if self.method == "chi":
            return self.chi(tokens, explain)
        if self.method == "logistic":
            return self.logistic(tokens, explain)
        chi, used, top = self.chi(tokens, explain)
        prob, count, more = self.logistic(tokens, explain)
        return (chi + prob) / 2.0, max(used, count), (top + more)[:explain]
