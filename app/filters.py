"""Template filters that make attacker-controlled text safe to look at.

Jinja's autoescape keeps HTML inert; ``display`` also makes invisible tricks
visible: bidi controls (U+202A-202E, U+2066-2069, U+200E/200F) that reorder
what a reader sees are shown as ``<U+202E>``, and control characters as
``<0x07>``, so a subject cannot pretend to be something else.
"""

from __future__ import annotations

import datetime as _dt

from flask import Flask
from markupsafe import Markup, escape

_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F}


def visible(text: object, keep_newlines: bool = False) -> str:
    """``text`` with bidi and control characters spelled out."""
    out = []
    for ch in str(text if text is not None else ""):
        code = ord(ch)
        if code in _BIDI:
            out.append(f"<U+{code:04X}>")
        elif keep_newlines and ch in "\n\t":
            out.append(ch)
        elif ch == "\t":
            # Folded header values keep their tab; it hides nothing.
            out.append(" ")
        elif code < 32 or code == 127 or 0x80 <= code < 0xA0:
            out.append(f"<0x{code:02X}>")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def display(text: object, limit: int = 0) -> Markup:
    """Escaped, bidi-safe text for a table cell; cut at ``limit`` if given."""
    value = visible(text)
    if limit and len(value) > limit:
        value = value[:limit] + "\u2026"
    return escape(value)


def display_block(text: object) -> Markup:
    """Like ``display`` but keeps line breaks, for message bodies in <pre>."""
    text = str(text or "").replace("\r\n", "\n").replace("\r", "\n")
    return escape(visible(text, keep_newlines=True))


def when(value) -> str:
    """A stored UTC time as 'YYYY-MM-DD HH:MM:SS'."""
    if value is None or value == "":
        return "-"
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19]


def size(value) -> str:
    """Bytes in B, KiB or MiB."""
    number = float(value or 0)
    for unit in ("B", "KiB", "MiB"):
        if number < 1024 or unit == "MiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return f"{number:.1f} MiB"


def init_app(app: Flask) -> None:
    app.jinja_env.filters["display"] = display
    app.jinja_env.filters["display_block"] = display_block
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["size"] = size
