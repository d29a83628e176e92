"""The one parser for header addresses (From, Sender, Reply-To): strict.

RFC 5322 3.4 mailbox-list: ``addr-spec`` or ``[display-name] <addr-spec>``,
comma-separated, comments anywhere CFWS is allowed. Anything else (a ``)``
where none may be, two ``@``, a group in From, an unquoted ``@`` in a display
name) makes the whole field invalid: no address from it is listed, so no
whitelist or alignment check can pick the wrong one (CVE-2023-27043,
CVE-2019-16056). Non-ASCII letters are accepted in atoms (RFC 6532).
Obsolete forms accepted: ``.`` in display names, a source route before the
address (RFC 5322 4.4).
"""

from __future__ import annotations

# RFC 5322 3.2.3 atext, plus every non-ASCII character (RFC 6532 3.2).
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789!#$%&'*+-/=?^_`{|}~")
_MAX_COMMENT_DEPTH = 20
_MAX_MAILBOXES = 100


class AddressError(ValueError):
    """The text is not a valid mailbox list; the message says where."""


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.i = 0
        self.n = len(text)

    def fail(self, what: str) -> AddressError:
        return AddressError(f"{what} at position {self.i}")

    def peek(self) -> str:
        return self.text[self.i] if self.i < self.n else ""

    def cfws(self) -> None:
        while self.i < self.n:
            ch = self.text[self.i]
            if ch in " \t\r\n":
                self.i += 1
            elif ch == "(":
                self.comment()
            else:
                return

    def comment(self) -> None:
        depth = 0
        while self.i < self.n:
            ch = self.text[self.i]
            if ch == "\\":
                self.i += 2
                continue
            if ch == "(":
                depth += 1
                if depth > _MAX_COMMENT_DEPTH:
                    raise self.fail("comments nested too deep")
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    self.i += 1
                    return
            self.i += 1
        raise self.fail("unterminated comment")

    def atom(self) -> str:
        start = self.i
        while self.i < self.n:
            ch = self.text[self.i]
            if ch in _ATEXT or ord(ch) > 127:
                self.i += 1
            else:
                break
        return self.text[start:self.i]

    def quoted(self) -> str:
        self.i += 1
        out = []
        while self.i < self.n:
            ch = self.text[self.i]
            if ch == "\\" and self.i + 1 < self.n:
                out.append(self.text[self.i + 1])
                self.i += 2
                continue
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch in "\r\n":
                raise self.fail("line break in quoted string")
            out.append(ch)
            self.i += 1
        raise self.fail("unterminated quoted string")

    def word(self) -> str:
        self.cfws()
        if self.peek() == '"':
            word = '"' + self.quoted() + '"'
        else:
            word = self.atom()
            if not word:
                raise self.fail("expected a word")
        self.cfws()
        return word

    def dot_atom(self) -> str:
        self.cfws()
        parts = [self.atom()]
        while self.peek() == ".":
            self.i += 1
            parts.append(self.atom())
        if not all(parts):
            raise self.fail("empty atom between dots")
        self.cfws()
        return ".".join(parts)

    def local_part(self) -> str:
        self.cfws()
        if self.peek() == '"':
            local = self.quoted()
            if any(ch in local for ch in ' "\\(),:;<>@[]'):
                local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
            self.cfws()
            return local
        return self.dot_atom()

    def domain(self) -> str:
        self.cfws()
        if self.peek() == "[":
            end = self.text.find("]", self.i)
            if end < 0:
                raise self.fail("unterminated domain literal")
            literal = self.text[self.i:end + 1]
            if any(ch in literal[1:-1] for ch in "[]\\"):
                raise self.fail("bad domain literal")
            self.i = end + 1
            self.cfws()
            return literal
        domain = self.dot_atom()
        if not domain:
            raise self.fail("empty domain")
        return domain.lower()

    def addr_spec(self) -> str:
        local = self.local_part()
        if self.peek() != "@":
            raise self.fail("expected @")
        self.i += 1
        domain = self.domain()
        if self.peek() == "@":
            raise self.fail("second @")
        return f"{local}@{domain}"

    def angle_addr(self) -> str:
        self.i += 1  # "<"
        self.cfws()
        if self.peek() == "@":  # obs-route: <@a,@b:user@host>
            colon = self.text.find(":", self.i)
            if colon < 0:
                raise self.fail("bad source route")
            self.i = colon + 1
        address = self.addr_spec()
        if self.peek() != ">":
            raise self.fail("expected >")
        self.i += 1
        self.cfws()
        return address

    def mailbox(self) -> str:
        self.cfws()
        if self.peek() == "<":
            return self.angle_addr()
        start = self.i
        # Either a display name followed by <...>, or an addr-spec.
        words = 0
        while self.i < self.n and self.peek() not in "<,@:;>":
            if self.peek() == ".":
                self.i += 1  # obs-phrase allows "." in display names
                self.cfws()
                continue
            self.word()
            words += 1
        if self.peek() == "<":
            if not words:
                raise self.fail("empty display name")
            return self.angle_addr()
        self.i = start
        return self.addr_spec()

    def mailbox_list(self) -> list[str]:
        found = []
        self.cfws()
        if self.i >= self.n:
            raise self.fail("no address")
        while True:
            found.append(self.mailbox())
            if len(found) > _MAX_MAILBOXES:
                raise self.fail("too many addresses")
            self.cfws()
            if self.i >= self.n:
                return found
            if self.peek() != ",":
                raise self.fail(f"unexpected {self.peek()!r}")
            self.i += 1


def parse_mailbox_list(text: str) -> list[str]:
    """The addr-specs of a mailbox list (``local@domain``, domain lowercased).

    Raises AddressError when the text is not one valid mailbox list.
    """
    return _Scanner(text).mailbox_list()
