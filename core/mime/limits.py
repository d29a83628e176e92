"""The bounds that keep parsing linear in time and memory on any input.

Every number here is a point past which a message is ``malformed``: the
parser stops descending, names the limit in ``malformed_reason``, and the
decision keeps the message from being delivered as clean. The defaults sit
far above what real mail uses (ordinary mail nests under 10 levels and has
under 100 parts) and far below what makes a worker stall.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    # Multipart and message/rfc822 levels together; RFC 2046 sets no bound,
    # parsers in the wild settled near 100 (mailparse), 32 is ample for mail.
    max_depth: int = 32
    # Entities (containers and leaves) in one message.
    max_parts: int = 1000
    # One entity's header block, and one field in it (RFC 5322 2.1.1 caps a
    # line at 998 octets but not the number of folded lines).
    max_header_block: int = 1024 * 1024
    max_header_fields: int = 2000
    max_field_bytes: int = 256 * 1024
    # Parameters of one Content-Type/-Disposition, counting RFC 2231
    # sections one by one, and one reassembled value.
    max_params: int = 4096
    max_param_value: int = 64 * 1024
    # Transfer-decoded bytes kept over all leaves.
    max_decoded_bytes: int = 64 * 1024 * 1024
    # Characters of decoded text per text part and over the message; the
    # Bayes tokenizer reads these, beyond them text is cut (a defect, not
    # malformed: the bytes are still scanned by clamd).
    max_text_chars: int = 512 * 1024
    max_total_text: int = 2 * 1024 * 1024
    # Distinct boundary values tried when a multipart names more than one.
    max_boundaries: int = 4


DEFAULT = Limits()
