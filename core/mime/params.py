"""Content-Type / Content-Disposition values and their parameters.

One linear scan splits ``type/sub; a=b; c="d"`` (RFC 2045 5.1), then RFC 2231
sections (``name*0*=``, ``name*1=``, ``name*=charset'lang'%xx``) are put in
order and joined once, so thousands of sections cost linear time (case 030).
Leniency, each named as a defect: ``name=3D"x"`` left by a wrong
quoted-printable pass over the headers (rspamd#1682), RFC 2047 words inside
quoted values (what Outlook writes), unterminated quotes, stray semicolons.
Duplicate parameters are kept, all of them, so the caller can see them.
"""

from __future__ import annotations

import re
import urllib.parse

from core.mime import charsets, words
from core.mime.limits import Limits

_SECTION = re.compile(r"([^*]+)\*(?:(\d{1,5})(\*?)|)$")


class Header:
    """A parsed parametric field: ``value`` and ``params`` name -> [values]."""

    __slots__ = ("value", "params", "defects", "malformed")

    def __init__(self) -> None:
        self.value = ""
        self.params: dict[str, list[str]] = {}
        self.defects: list[str] = []
        self.malformed = ""

    def get(self, name: str) -> str:
        values = self.params.get(name)
        return values[0] if values else ""


def _scan(text: str, limits: Limits, head: Header) -> list[tuple[str, str]]:
    """``(name, value)`` pairs in order; names lowercased."""
    pairs: list[tuple[str, str]] = []
    n = len(text)
    i = text.find(";")
    if i < 0:
        return pairs
    stray = 0
    while i < n:
        while i < n and text[i] in "; \t":
            stray += text[i] == ";"
            i += 1
        if i >= n:
            break
        eq = i
        while eq < n and text[eq] not in "=;":
            eq += 1
        name = text[i:eq].strip().lower()
        if eq >= n or text[eq] == ";":
            if name:
                head.defects.append("parameter-without-value")
            i = eq
            continue
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if text.startswith('3D"', i) or text.startswith("3D'", i):
            head.defects.append("qp-artifact-in-header")
            i += 2
        if i < n and text[i] == '"':
            value, i = _quoted(text, i + 1, head)
            semi = text.find(";", i)
            i = n if semi < 0 else semi
        else:
            semi = text.find(";", i)
            stop = n if semi < 0 else semi
            value = text[i:stop].strip()
            i = stop
        if len(value) > limits.max_param_value:
            head.malformed = f"parameter over {limits.max_param_value} characters"
            value = value[:limits.max_param_value]
        pairs.append((name, value))
        if len(pairs) > limits.max_params:
            head.malformed = f"more than {limits.max_params} parameters"
            break
    if stray > len(pairs) + 1:
        head.defects.append(f"stray-semicolons: {stray}")
    head.defects = list(dict.fromkeys(head.defects))
    return pairs


def _quoted(text: str, i: int, head: Header) -> tuple[str, int]:
    out = []
    n = len(text)
    start = i
    while i < n:
        ch = text[i]
        if ch == '"':
            out.append(text[start:i])
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < n:
            out.append(text[start:i])
            start = i + 1
            i += 2
            continue
        i += 1
    head.defects.append("unterminated-quoted-string")
    out.append(text[start:])
    return "".join(out), n


def _join_sections(pairs: list[tuple[str, str]], head: Header) -> list[tuple[str, str]]:
    """RFC 2231 3-4: sections put together; plain pairs left as they are."""
    plain: list[tuple[str, str]] = []
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    order: list[str] = []
    for name, value in pairs:
        match = _SECTION.match(name) if "*" in name else None
        if match is None:
            plain.append((name, value))
            continue
        base, number, star = match.group(1), match.group(2), match.group(3)
        if base not in sections:
            sections[base] = []
            order.append(base)
        if number is None:  # name*=charset'lang'value, one encoded section
            sections[base].append((0, True, value))
        else:
            sections[base].append((int(number), bool(star), value))
    joined = []
    for base in order:
        parts = sorted(sections[base], key=lambda item: item[0])
        numbers = [item[0] for item in parts]
        if numbers != list(range(len(parts))):
            head.defects.append(f"rfc2231-sections-out-of-order: {base[:40]}")
        charset = ""
        chunks: list[bytes] = []
        for index, (_, encoded, value) in enumerate(parts):
            if encoded:
                if index == 0 and value.count("'") >= 2:
                    charset, _, rest = value.partition("'")
                    value = rest.partition("'")[2]
                chunks.append(urllib.parse.unquote_to_bytes(value))
            else:
                chunks.append(value.encode("utf-8", "replace"))
        text, defect = charsets.decode(b"".join(chunks), charset or "utf-8")
        if defect:
            head.defects.append("rfc2231-" + defect)
        joined.append((base, text))
    return plain + joined


def parse(text: str, limits: Limits) -> Header:
    """The main value (lowercased) and parameters of a parametric field."""
    head = Header()
    semi = text.find(";")
    main = text if semi < 0 else text[:semi]
    paren = main.find("(")  # RFC 2045 allows comments; none carry meaning
    if paren >= 0:
        main = main[:paren]
    head.value = main.strip().strip('"').lower()
    pairs = _join_sections(_scan(text, limits, head), head)
    for name, value in pairs:
        if "=?" in value:
            value, problems = words.decode_words(value)
            head.defects.extend(problems)
        head.params.setdefault(name, []).append(charsets.clean(value))
    return head
