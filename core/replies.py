"""Every SMTP reply the gateway sends, in one catalogue.

Each reply carries its enhanced status code (RFC 3463). Texts may hold
``{name}`` fields filled by :meth:`Reply.format`. Tests import this module
to compare replies, so a text changes in one place only.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code, e.g. "5.7.1"
    text: str

    def format(self, **fields: object) -> str:
        """The reply line without CRLF, as aiosmtpd's push() takes it."""
        return f"{self.code} {self.status} {self.text.format(**fields)}"

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


# region transaction
QUEUED = Reply(250, "2.0.0", "Ok: queued as {qid}")
# endregion
