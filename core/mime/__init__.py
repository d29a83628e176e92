"""The MIME layer: ``parse`` for the filters, header edits for the relay.

``parse(data) -> ParsedMessage`` never raises and is bounded by
``limits.Limits``; ``add_headers`` and ``remove_headers`` change the top
header block and leave every other byte as it came.

Defects are short strings ``code[: detail]``; the codes are stable so rules
may match on them: nul-bytes, bare-lf, bare-cr, no-from, duplicate-from,
invalid-from, duplicate-subject, duplicate-header, duplicate-content-type,
conflicting-transfer-encodings, duplicate-boundary, multipart-without-boundary,
boundary-not-found, missing-close-boundary, unindented-continuation,
junk-header-line, missing-header-separator, continuation-without-field,
nested-message, encoded-message-rfc822, unsplit-multipart and, on parts,
base64-*, qp-*, uu-*, unknown-transfer-encoding, unknown-charset,
charset-failed, encoded-word-*, rfc2231-*, qp-artifact-in-header,
stray-semicolons, parameter-without-value, unterminated-quoted-string,
filenames-differ, type-mismatch, unknown-disposition, nul-bytes,
text-truncated, text-not-decoded, invalid-content-type.
"""

from core.mime.limits import DEFAULT as DEFAULT_LIMITS
from core.mime.limits import Limits
from core.mime.rewrite import add_headers, normalize_newlines, remove_headers
from core.mime.tree import parse

__all__ = ["parse", "add_headers", "remove_headers", "normalize_newlines",
           "Limits", "DEFAULT_LIMITS"]
