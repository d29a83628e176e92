"""What a leaf really is, from its first bytes (our own small magic table).

A table of our own rather than libmagic: it covers the types attachment
rules act on (executables, archives, office files, PDF, HTML, images),
needs no system library and costs a few microseconds per part. Names follow
the MIME types libmagic reports, so rules can compare with declared types.
"""

from __future__ import annotations

EXECUTABLE = "application/x-dosexec"
ZIP = "application/zip"

# (offset, magic, type); checked in order, first match wins.
_TABLE: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"\xfe\xed\xfa\xce", "application/x-mach-binary"),
    (0, b"\xfe\xed\xfa\xcf", "application/x-mach-binary"),
    (0, b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\xca\xfe\xba\xbe", "application/x-java-applet"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (0, b"{\\rtf", "text/rtf"),
    (0, b"Rar!\x1a\x07", "application/x-rar"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"MSCF\x00\x00\x00\x00", "application/vnd.ms-cab-compressed"),
    (0, b"L\x00\x00\x00\x01\x14\x02\x00", "application/x-ms-shortcut"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"\x00\x00\x01\x00", "image/vnd.microsoft.icon"),
    (257, b"ustar", "application/x-tar"),
    (0x8001, b"CD001", "application/x-iso9660-image"),
)

_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script",
                b"<iframe", b"<meta", b"<form", b"<title")

_OOXML = ((b"word/", "application/vnd.openxmlformats-officedocument."
                     "wordprocessingml.document"),
          (b"xl/", "application/vnd.openxmlformats-officedocument."
                   "spreadsheetml.sheet"),
          (b"ppt/", "application/vnd.openxmlformats-officedocument."
                    "presentationml.presentation"))


def _zip_kind(head: bytes) -> str:
    if head[30:38] == b"mimetype":
        # OpenDocument: the first member is "mimetype", stored, its content
        # the type itself (ODF 1.2 part 3, 3.3).
        end = head.find(b"PK", 38)
        kind = head[38:end if end > 0 else 38 + 80]
        if kind.startswith(b"application/vnd.oasis.opendocument"):
            return kind.decode("ascii", "replace")
    if b"[Content_Types].xml" in head or b"_rels/.rels" in head:
        for marker, kind in _OOXML:
            if marker in head:
                return kind
    if b"META-INF/MANIFEST.MF" in head[:200]:
        return "application/java-archive"
    return ZIP


def sniff(payload: bytes) -> str:
    """The detected type of a leaf's decoded bytes, or "" when unknown."""
    if len(payload) < 2:
        return ""
    if payload[:2] == b"MZ":
        return EXECUTABLE
    if payload[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _zip_kind(payload[:4096])
    for offset, magic, kind in _TABLE:
        if payload.startswith(magic, offset):
            return kind
    if payload[:4] == b"RIFF" and payload[8:12] == b"WEBP":
        return "image/webp"
    if payload[:2] == b"BM" and len(payload) > 14 and payload[6:10] == b"\0\0\0\0":
        return "image/bmp"
    if payload[:2] == b"#!":
        return "text/x-shellscript"
    head = payload[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(_HTML_STARTS):
        return "text/html"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return ""


# Families for "declared type and content disagree" (case 039).
_FAMILY_PREFIXES = (
    ("application/x-dosexec", "executable"),
    ("application/x-executable", "executable"),
    ("application/x-mach-binary", "executable"),
    ("application/x-msdownload", "executable"),
    ("application/x-ms-shortcut", "executable"),
    ("text/x-shellscript", "executable"),
    ("application/java", "executable"),
    ("application/x-java", "executable"),
    ("application/zip", "archive"),
    ("application/x-zip", "archive"),
    ("application/x-rar", "archive"),
    ("application/x-7z", "archive"),
    ("application/gzip", "archive"),
    ("application/x-gzip", "archive"),
    ("application/x-bzip2", "archive"),
    ("application/x-xz", "archive"),
    ("application/x-tar", "archive"),
    ("application/vnd.ms-cab", "archive"),
    ("application/x-iso9660", "archive"),
    ("application/pdf", "pdf"),
    ("application/x-ole-storage", "office"),
    ("application/msword", "office"),
    ("application/vnd.ms-", "office"),
    ("application/vnd.openxmlformats", "office"),
    ("application/vnd.oasis", "office"),
    ("text/rtf", "office"),
    ("application/rtf", "office"),
    ("image/", "image"),
    ("text/html", "html"),
)
_GENERIC = ("application/octet-stream", "application/binary", "application/unknown",
            "application/x-unknown", "application/force-download",
            "application/download", "binary/octet-stream", "")
_BINARY_FAMILIES = ("executable", "archive", "pdf", "office", "image")


def family(content_type: str) -> str:
    for prefix, name in _FAMILY_PREFIXES:
        if content_type.startswith(prefix):
            return name
    return ""


def mismatch(declared: str, detected: str) -> bool:
    """Whether content of binary kind ``detected`` disagrees with the header."""
    found = family(detected)
    if found not in _BINARY_FAMILIES or declared in _GENERIC:
        return False
    said = family(declared)
    if found == "archive" and said == "office":
        return False  # office files are zip archives inside
    return said != found
