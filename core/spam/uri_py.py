"""Pure-Python twin of ``core.fast._uri``: host candidates in text.

A candidate is what follows ``://`` (after at most three spaces, past any
``user@``), or a run of host characters at a word start that contains a dot
(``www.example.com``, ``example.com``). Dots written as ``[.]``, ``(.)``,
``{.}`` or `` . `` count as dots. Candidates are lowercased raw bytes
(percent escapes kept); ``core.spam.uris`` decodes and checks them.
"""

from __future__ import annotations

MAX_HOST = 253
MAX_CANDIDATES = 200


def _host_chars() -> bytes:
    table = bytearray(256)
    for code in range(256):
        if code >= 0x80 or chr(code).isalnum() or code in b"-._%":
            table[code] = 1
    return bytes(table)


HOST = _host_chars()
_OPEN = b"[({"
_CLOSE = b"])}"


def read_host(data: bytes, j: int, authority: bool) -> tuple[bytes, int]:
    """(lowercased host, index after it) read from ``data[j]``."""
    n = len(data)
    buf = bytearray()
    too_long = False
    while j < n:
        c = data[j]
        if HOST[c]:
            if len(buf) < MAX_HOST:
                buf.append(c + 32 if 65 <= c <= 90 else c)
            else:
                too_long = True
            j += 1
            continue
        if (c in _OPEN and j + 2 < n and data[j + 1] == 46 and data[j + 2] in _CLOSE
                or c == 32 and buf and j + 3 < n and data[j + 1] == 46
                and data[j + 2] == 32 and HOST[data[j + 3]]):
            if len(buf) < MAX_HOST:
                buf.append(46)
            else:
                too_long = True
            j += 3
            continue
        if c == 64 and authority and buf:
            buf.clear()
            too_long = False
            j += 1
            continue
        break
    return (b"" if too_long else bytes(buf)), j


def hosts(data: bytes, cap: int = MAX_CANDIDATES) -> list[tuple[bytes, bool]]:
    """(host, after "://") candidates of ``data`` in order, at most ``cap``."""
    out: list[tuple[bytes, bool]] = []
    n = len(data)
    i = 0
    while i < n and len(out) < cap:
        c = data[i]
        if c == 58 and i + 2 < n and data[i + 1] == 47 and data[i + 2] == 47:
            j = i + 3
            skipped = 0
            while j < n and data[j] == 32 and skipped < 3:
                j += 1
                skipped += 1
            host, j = read_host(data, j, True)
            if host:
                out.append((host, True))
            i = max(j, i + 3)
            continue
        if HOST[c] and (i == 0 or not HOST[data[i - 1]]):
            host, j = read_host(data, i, False)
            if 46 in host:
                out.append((host, False))
            i = max(j, i + 1)
            continue
        i += 1
    return out
