"""Where the shared test data lives: ../shared beside the checkout.

CI clones the repository into another folder with a copy of shared/ beside
it, so nothing may name an absolute path.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PORTCULLIS_SHARED", REPO.parent / "shared"))
CASES = SHARED / "cases"
CORPUS = SHARED / "corpus"


def case(name: str) -> Path:
    """The folder of a case by its number or full name ("001" or "001-...")."""
    matches = sorted(CASES.glob(f"{name}*"))
    if not matches:
        raise FileNotFoundError(f"no case {name!r} under {CASES}")
    return matches[0]
