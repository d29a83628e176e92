"""What the "Why" section (templates/_why.html) needs besides the clues."""

from __future__ import annotations

from app import settings_of
from core import tracking


def why_args(app, msg) -> dict:
    """Template arguments for message ``msg``: its stored clues and the label
    of its Bayes probability in the filter's unsure band (None without one)."""
    probability = msg.bayes_probability
    return {"clues": tracking.read_clues(msg.spam_clues),
            "band": None if probability is None
            else tracking.band_label(probability, settings_of(app))}
