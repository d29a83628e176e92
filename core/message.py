"""What the MIME layer hands to the filters: a parsed, decoded message.

``core.mime.parse`` builds it and never raises; everything a filter needs is
here already decoded (charsets once, transfer encodings leniently), so no
filter parses MIME again.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Part:
    """One leaf of the MIME tree (or the whole message when it is not multipart)."""

    path: str  # position in the tree, "1.2.1"; "" for a single-part message
    content_type: str  # declared, lowercased, e.g. "text/plain"
    detected_type: str = ""  # from the content's magic bytes, "" if unknown
    charset: str = ""
    filename: str = ""  # decoded (RFC 2231 / 2047), "" if none
    disposition: str = ""  # inline | attachment | ""
    payload: bytes = b""  # transfer-decoded bytes (lenient, as clients decode)
    text: str | None = None  # decoded text for text/* parts, else None
    defects: list[str] = dataclasses.field(default_factory=list)
    depth: int = 0
    in_rfc822: bool = False  # inside an attached message/rfc822
    # Every name the part gives itself (Content-Disposition filename and
    # Content-Type name, each instance); rules must check them all.
    filenames: list[str] = dataclasses.field(default_factory=list)
    transfer_encoding: str = ""  # declared, lowercased: base64, 7bit...


@dataclasses.dataclass
class ParsedMessage:
    """A message as the filters see it."""

    # Top-level header fields in order, decoded for reading (RFC 2047), with
    # every instance kept: duplicates matter (two From fields).
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    parts: list[Part] = dataclasses.field(default_factory=list)
    # Addresses parsed strictly from all From fields; invalid ones are named
    # in defects and not listed here.
    from_addresses: list[str] = dataclasses.field(default_factory=list)
    subject: str = ""
    message_id: str = ""
    defects: list[str] = dataclasses.field(default_factory=list)
    # The structure could not be trusted (limits exceeded, lost boundary...):
    # the decision must not deliver it as clean.
    malformed: bool = False
    malformed_reason: str = ""
    size: int = 0

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def text_parts(self) -> list[str]:
        return [p.text for p in self.parts
                if p.text is not None and p.content_type != "text/html"]

    @property
    def html_parts(self) -> list[str]:
        return [p.text for p in self.parts
                if p.text is not None and p.content_type == "text/html"]

    @property
    def attachments(self) -> list[Part]:
        return [p for p in self.parts if p.filename or p.disposition == "attachment"]
