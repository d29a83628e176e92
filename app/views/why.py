"""What the "Why" section (templates/_why.html) needs besides the clues."""

from __future__ import annotations

from app import settings_of
from core import tracking


def why_args(app, stored: str | None) -> dict:
    """Template arguments: the stored clues and the Bayes band of the settings."""
    settings = settings_of(app)
    return {"clues": tracking.read_clues(stored),
            "band": (settings.bayes_unsure_low, settings.bayes_unsure_high)}
