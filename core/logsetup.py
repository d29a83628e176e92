"""Wiring log handlers, once, at start-up. Library modules only get loggers.

Log lines are ``key=value`` fields after the queue id, so that one grep for
the id shows a message's whole path: smtp, filter, quarantine, delivery.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"

_UNSAFE = {c: " " for c in range(32)}
_UNSAFE[127] = " "


def scrub(value: object, limit: int = 200) -> str:
    """A value safe to put in a log line: printable, bounded, no spaces lost.

    Control characters (CR, LF, ESC...) would let a sender forge log lines.
    Bidi controls are escaped so a displayed name cannot be reordered.
    """
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    text = text.translate(_UNSAFE)
    out = []
    for ch in text:
        code = ord(ch)
        if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069 or code == 0x200F \
                or 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def configure(level: str = "info", log_file: str = "") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file:
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiosmtpd logs every client line at INFO under mail.log; ours say more.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
