"""Bytes to text once, with the charset labels mail really carries.

Labels are mapped through aliases (``uft-8``, ``iso-8859-8-i``,
``ks_c_5601-1987``...), codecs that are not text encodings (``idna``,
``base64_codec``, ``rot13``) are refused, and anything undecodable falls
back per byte to windows-1252 (latin-1 for its five holes), so no byte is
lost and the result never holds surrogates: every string is UTF-8 clean.
"""

from __future__ import annotations

import codecs
import functools
import re

FALLBACK = "utf-8"

# Labels seen in the wild that Python does not know or knows differently.
# iso-8859-1 decodes as windows-1252, as every browser and most clients do
# (WHATWG Encoding Standard), us-ascii as UTF-8 (a superset).
_ALIASES = {
    "uft-8": "utf-8", "utf8": "utf-8", "utf-8": "utf-8", "unicode-1-1-utf-8": "utf-8",
    "us-ascii": "utf-8", "ascii": "utf-8", "ansi_x3.4-1968": "utf-8",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "iso8859-1": "cp1252",
    "latin-1": "cp1252", "iso_8859-1": "cp1252", "windows-1252": "cp1252",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6", "iso-8859-6-e": "iso-8859-6",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "windows-874": "cp874", "x-sjis": "shift_jis", "shift-jis": "shift_jis",
    "x-mac-roman": "mac_roman", "macintosh": "mac_roman",
    "unicode-1-1-utf-7": "utf-7", "x-user-defined": "cp1252",
    "unknown-8bit": "utf-8", "x-unknown": "utf-8", "default": "utf-8",
}

# Codecs that exist but turn bytes into something other than the text.
_REFUSED = {"idna", "punycode", "unicode-escape", "raw-unicode-escape",
            "undefined", "mbcs", "oem", "charmap"}

_LABEL = re.compile(r"[A-Za-z0-9._:+-]{1,40}")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _lossless(exc: UnicodeError) -> tuple[str, int]:
    """Error handler: each undecodable byte becomes its windows-1252 letter."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    chunk = exc.object[exc.start:exc.end]
    return chunk.decode("cp1252", "_portcullis_latin1"), exc.end


def _latin1(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start:exc.end].decode("latin-1"), exc.end


codecs.register_error("portcullis-lossless", _lossless)
codecs.register_error("_portcullis_latin1", _latin1)


@functools.lru_cache(maxsize=256)
def codec_for(label: str) -> str:
    """The Python codec for a charset label, or "" when there is none."""
    name = label.strip().strip("\"'").lower()
    if not name:
        return ""
    name = _ALIASES.get(name, name)
    if not _LABEL.fullmatch(name):
        return ""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return ""
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return ""
    return info.name


def decode(data: bytes, label: str = "") -> tuple[str, str]:
    """``(text, defect)``: the bytes decoded; defect "" when the label served."""
    defect = ""
    codec = codec_for(label) if label else "utf-8"
    if not codec:
        defect = f"unknown-charset: {label[:40]!r}"
        codec = FALLBACK
    try:
        text = data.decode(codec, "portcullis-lossless")
    except Exception:  # a codec may raise anything on hostile bytes
        defect = defect or f"charset-failed: {label[:40]!r}"
        text = data.decode(FALLBACK, "portcullis-lossless")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text, defect


def clean(text: str) -> str:
    """A string with any lone surrogate replaced, so it encodes as UTF-8."""
    if _SURROGATES.search(text):
        return _SURROGATES.sub("\ufffd", text)
    return text
