"""Pure-Python twin of ``core.fast._bayes``: counts in a dict, same arithmetic.

Robinson's estimate per token, f(w) = (s*x + n*p(w)) / (s + n), with
p(w) = (spam/nspam) / (ham/nham + spam/nspam); the strongest clues
(|f - 0.5| >= min_distance, at most max_clues) are combined with Fisher's
chi-square method as SpamBayes does: (S - H + 1) / 2.

``logistic`` is the other combining step: logistic regression over binary
token features, p = 1 / (1 + exp(-sum of weights)); ``tone`` trains the
weights on or near errors (a step only when p is not within ``margin`` of
the label), the online logistic regression of the TREC 2007 spam track.
"""

from __future__ import annotations

import math


class CountTable:
    """Ham and spam counts per token hash."""

    def __init__(self, capacity: int = 1024):
        self.counts: dict[int, tuple[int, int]] = {}
        self.weights: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.counts)

    def put(self, token: int, ham: int, spam: int) -> None:
        if token == 0:
            raise ValueError("token hash 0 is reserved")
        self.counts[token] = (ham, spam)

    def put_weight(self, token: int, weight: float) -> None:
        if token == 0:
            raise ValueError("token hash 0 is reserved")
        self.counts.setdefault(token, (0, 0))
        self.weights[token] = weight

    def load(self, tokens, ham, spam, weight=None) -> None:
        if not len(tokens) == len(ham) == len(spam):
            raise ValueError("tokens, ham and spam differ in length")
        if weight is not None and len(weight) != len(tokens):
            raise ValueError("tokens and weights differ in length")
        for token, h, s in zip(tokens, ham, spam):
            self.put(token, h, s)
        if weight is not None:
            for token, w in zip(tokens, weight):
                self.weights[token] = w

    def get_weight(self, token: int) -> float:
        return self.weights.get(token, 0.0)

    def get(self, token: int) -> tuple[int, int]:
        return self.counts.get(token, (0, 0))


def chi2q(x2: float, v: int) -> float:
    """Probability that chi-square with v (even) degrees of freedom >= x2."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return total if total < 1.0 else 1.0


def score(table, tokens, nham, nspam, strength, unknown, min_distance,
          max_clues, explain):
    """(probability, clue count, [(token, prob)] of the ``explain`` strongest)."""
    if nham <= 0 or nspam <= 0:
        raise ValueError("scoring needs ham and spam training")
    clues = []
    seen = set()
    counts = table.counts
    for token in tokens:
        if token == 0 or token in seen:
            continue
        seen.add(token)
        record = counts.get(token)
        if record is None:
            continue
        ham, spam = min(record[0], nham), min(record[1], nspam)
        hamratio = ham / nham
        spamratio = spam / nspam
        if hamratio + spamratio == 0.0:
            continue
        prob = spamratio / (hamratio + spamratio)
        total = float(ham + spam)
        f = (strength * unknown + total * prob) / (strength + total)
        if abs(f - 0.5) < min_distance:
            continue
        clues.append((abs(f - 0.5), f, token))

    # Strongest first, equal strength: smaller token first. Sorted only
    # when some clues must be left out; all are combined in the order met
    # otherwise (the sum's order decides the last bits of the float).
    strongest = lambda clue: (-clue[0], clue[2])  # noqa: E731
    ordered = len(clues) > max_clues
    if ordered:
        clues.sort(key=strongest)
    used = clues[:max_clues]
    spam_log = ham_log = 0.0
    for _, f, _ in used:
        spam_log += math.log(1.0 - f)
        ham_log += math.log(f)
    if not used:
        prob = 0.5
    else:
        s_stat = 1.0 - chi2q(-2.0 * spam_log, 2 * len(used))
        h_stat = 1.0 - chi2q(-2.0 * ham_log, 2 * len(used))
        prob = (s_stat - h_stat + 1.0) / 2.0
    if ordered or explain <= 0:
        top = used[:max(explain, 0)]
    else:
        top = sorted(used, key=strongest)[:explain]
    return prob, len(used), [(t, f) for _, f, t in top]


def _sigmoid(z: float) -> float:
    # Clamped so that exp cannot overflow; 1e-22 is as sure as it gets.
    z = min(max(z, -50.0), 50.0)
    return 1.0 / (1.0 + math.exp(-z))


def logistic(table, tokens, explain):
    """(probability, weighted token count, [(token, weight)] of the strongest)."""
    seen = set()
    weights = table.weights
    z = 0.0
    clues = []
    for token in tokens:
        if token == 0 or token in seen:
            continue
        seen.add(token)
        w = weights.get(token, 0.0)
        if w == 0.0:
            continue
        z += w
        clues.append((abs(w), w, token))
    prob = _sigmoid(z)
    if explain > 0:
        clues.sort(key=lambda clue: (-clue[0], clue[2]))
    return prob, len(clues), [(t, w) for _, w, t in clues[:explain]]


def tone(table, tokens, is_spam, rate, margin, also=None):
    """One train-on-or-near-error step; returns the step added to each weight."""
    weights = table.weights
    z = 0.0
    for token in tokens:
        if token:
            z += weights.get(token, 0.0)
    step = (1.0 if is_spam else 0.0) - _sigmoid(z)
    if abs(step) < margin:
        return 0.0
    step *= rate
    for token in tokens:
        if token:
            table.counts.setdefault(token, (0, 0))
            weights[token] = weights.get(token, 0.0) + step
            if also is not None:
                also.counts.setdefault(token, (0, 0))
                also.weights[token] = also.weights.get(token, 0.0) + step
    return step
