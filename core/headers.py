"""Verdict headers added to relayed mail, in the SpamAssassin layout.

Mail clients and downstream servers already filter on SpamAssassin's
headers (``X-Spam-Flag: YES``, ``X-Spam-Status: Yes, score=...``), so the
gateway writes the same four and removes any the sender put in: a
forged ``X-Spam-Flag: NO`` must not reach a downstream rule.
"""

from __future__ import annotations

import re

# Headers the gateway owns; a copy from the sender is dropped before relay.
VERDICT_HEADERS = (
    "X-Spam-Status",
    "X-Spam-Score",
    "X-Spam-Level",
    "X-Spam-Flag",
    "X-Spam-Report",
    "X-Spam-Checker-Version",
    "X-Portcullis-Verdict",
)

# SpamAssassin caps the star bar at 50.
MAX_STARS = 50

# RFC 5322 2.1.1: a line is at most 998 characters; 20 names of at most 40
# keep X-Spam-Status on one line without folding.
MAX_TESTS = 20

_TEST_NAME = re.compile(r"[^A-Z0-9_]+")

# SpamAssassin's Bayes rule names, by the lower bound of the probability.
_BAYES_BANDS = (
    (0.99, "BAYES_99"), (0.95, "BAYES_95"), (0.80, "BAYES_80"),
    (0.60, "BAYES_60"), (0.40, "BAYES_50"), (0.20, "BAYES_40"),
    (0.05, "BAYES_20"), (0.01, "BAYES_05"), (0.0, "BAYES_00"),
)


def bayes_test(probability: float | None) -> str:
    """The SpamAssassin-style Bayes test name for a spam probability."""
    if probability is None:
        return ""
    for bound, name in _BAYES_BANDS:
        if probability >= bound:
            return name
    return "BAYES_00"


def test_name(note: str) -> str:
    """A note turned into a test name: upper case, letters, digits and _."""
    name = _TEST_NAME.sub("_", str(note).upper()).strip("_")
    return name[:40]


def spam_headers(score: float, required: float,
                 tests: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The four verdict headers for ``score`` against the tag level."""
    flagged = score >= required
    names = sorted({name for name in (test_name(t) for t in tests) if name})
    names = names[:MAX_TESTS]
    stars = "*" * min(MAX_STARS, max(0, int(score)))
    status = (f"{'Yes' if flagged else 'No'}, score={score:.1f} "
              f"required={required:.1f} tests={','.join(names) or 'none'}")
    return [
        ("X-Spam-Flag", "YES" if flagged else "NO"),
        ("X-Spam-Score", f"{score:.1f}"),
        ("X-Spam-Level", stars),
        ("X-Spam-Status", status),
    ]
