"""One SMTP connection: aiosmtpd's protocol with our command handlers.

aiosmtpd gives the stream handling, STARTTLS (its 1.4.6 release discards
plaintext pipelined behind STARTTLS, case 004) and the PROXY header parser.
Everything that decides something is here: the RFC 5321 path parser instead
of aiosmtpd's RFC 5322 one (case 012), relay control, limits, the DATA
reader (only CRLF.CRLF ends it; bare line ends normalised or refused), the
policy hooks, and storing the message before the 250.

A policy hook that raises is logged and treated as "go on" (the content
filter still sees the message). After XCLIENT the client must send EHLO
again, as after STARTTLS.

Limits: no AUTH, no CHUNKING/BDAT, no DSN (its parameters get 555). A line
in DATA that is ``.`` followed by a bare LF is unstuffed like any other line
starting with a dot, as RFC 5321 s4.5.2 defines lines by CRLF. Replies are
written one by one, also to pipelining clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import SMTP, TLSSetupException

from core import replies, tracking
from core.logsetup import scrub
from core.policy.base import HookResult, SessionInfo
from core.replies import Reply
from core.smtp import content
from core.smtp.address import (
    Address,
    AddressError,
    parse_params,
    parse_path,
    split_argument,
)
from core.smtp.proxy import in_networks, parse_xclient, plain_ip
from core.spool import Envelope, new_qid

log = logging.getLogger(__name__)

# Bad lines (garbage, unknown verbs) before the connection is closed.
BAD_LINE_LIMIT = 10
PROXY_TIMEOUT = 10.0
# RFC 5321 s4.5.3.1.4 asks for 512; extensions make MAIL longer.
COMMAND_LIMIT = 1000


class _NoHooks:
    """aiosmtpd wants a handler object; every decision is made in SmtpSession."""


class Transaction:
    """MAIL FROM to the end of DATA (or RSET)."""

    __slots__ = ("qid", "sender", "options", "smtputf8", "recipients", "keys",
                 "score", "notes", "started")

    def __init__(self, qid: str, sender: Address, options: list[str], smtputf8: bool):
        self.qid = qid
        self.sender = sender
        self.options = options
        self.smtputf8 = smtputf8
        self.recipients: list[str] = []
        self.keys: set[tuple[str, str]] = set()
        self.score = 0.0
        self.notes: list[str] = []
        self.started = time.monotonic()


class SmtpSession(SMTP):
    """The protocol object aiosmtpd runs for one client connection."""

    # The stream reader's limit: DATA is read in pieces up to this size;
    # command lines are held to COMMAND_LIMIT by _dispatch.
    line_length_limit = 64 * 1024

    def __init__(self, service, direction: str):
        # Set before aiosmtpd's __init__, which inspects the members.
        self.service = service
        self.settings = service.settings
        self.direction = direction
        self.info: SessionInfo | None = None
        self.tx: Transaction | None = None
        self.front_ip = ""
        self.client_name = ""
        self.helo_name = ""
        self.extended = False
        self.idle = False
        self.bad_lines = 0
        self.commands = 0
        self.accepted = 0
        self.session_score = 0.0
        self.session_notes: list[str] = []
        self.connected_at = time.monotonic()
        super().__init__(
            _NoHooks(),
            data_size_limit=self.settings.max_message_size or None,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.settings.hostname,
            tls_context=service.tls_context,
            timeout=self.settings.smtp_timeout,
            loop=service.loop,
        )
        self._last_activity = self.loop.time()

    # region plumbing

    def prefix(self) -> str:
        """What a log line starts with: the queue id, or the peer before MAIL."""
        if self.tx is not None:
            return self.tx.qid
        if self.info is not None:
            return self.info.peer_ip
        return self.front_ip or "-"

    async def reply(self, reply: Reply | str, **fields: Any) -> None:
        text = reply.format(host=self.hostname, **fields) \
            if isinstance(reply, Reply) else reply
        await self.push(text)

    async def reply_and_close(self, reply: Reply | str, **fields: Any) -> None:
        try:
            await self.reply(reply, **fields)
        except (ConnectionError, RuntimeError):
            pass
        if self.transport is not None:
            self.transport.close()

    def _touch(self) -> None:
        self._last_activity = self.loop.time()

    def _timeout_cb(self) -> None:
        # One timer per connection, re-armed lazily: touching it per line
        # would cost a timer per line.
        idle = self.loop.time() - self._last_activity
        if idle < self._timeout_duration - 0.01:
            self._timeout_handle = self.loop.call_later(
                self._timeout_duration - idle, self._timeout_cb)
            return
        log.info("%s event=timeout idle=%.0f", self.prefix(), idle)
        if self.transport is not None:
            self._writer.write(replies.TIMEOUT.format(host=self.hostname).encode()
                               + b"\r\n")
            self.transport.close()

    def _set_rset_state(self) -> None:
        super()._set_rset_state()
        self.tx = None
        if self.info is not None:
            self.info.qid = ""
            self.info.sender = None
            self.info.recipients = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls = self._original_transport is not None
        super().connection_made(transport)
        if starttls and self.info is not None:
            # RFC 3207 s4.2: forget what the client said before TLS.
            self.helo_name = ""
            self.info.helo = ""
            self.info.tls = True
            log.info("%s event=starttls %s", self.prefix(), self._tls_summary())

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.service.session_closed(self)

    def _tls_summary(self) -> str:
        ssl_object = self.transport.get_extra_info("ssl_object") \
            if self.transport is not None else None
        if ssl_object is None:
            return ""
        cipher = ssl_object.cipher()
        return f"{ssl_object.version()} with cipher {cipher[0] if cipher else '?'}"

    def shutdown_if_idle(self) -> None:
        """Drain: close a connection that waits for a command outside a
        transaction; busy ones close themselves when their transaction ends."""
        # A transport already closing (after QUIT, a TLS close still under
        # way) takes no more writes: asyncio's TLS transport fails on them.
        if self.idle and self.tx is None and self.transport is not None \
                and not self.transport.is_closing():
            self._writer.write(
                replies.SHUTTING_DOWN.format(host=self.hostname).encode() + b"\r\n")
            self.transport.close()

    def abort(self) -> None:
        if self.transport is None:
            return
        if self.transport.is_closing():
            self.transport.abort()  # a close that did not finish in time
            return
        self._writer.write(
            replies.SHUTTING_DOWN.format(host=self.hostname).encode() + b"\r\n")
        self.transport.close()

    async def _hook(self, name: str, *args: Any) -> HookResult | None:
        method = getattr(self.service.policy, name, None)
        if method is None:
            return None
        try:
            result = await method(self.info, *args)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A broken check must not stop mail; the content filter still runs.
            log.exception("%s event=policy_error hook=%s", self.prefix(), name)
            return None
        if result is None:
            return None
        if isinstance(result, (Reply, str)):
            return HookResult(reply=result.format(host=self.hostname)
                              if isinstance(result, Reply) else result)
        return result

    def _collect(self, result: HookResult | None, in_transaction: bool) -> None:
        if result is None:
            return
        notes = list(getattr(result, "notes", None) or [])
        if in_transaction and self.tx is not None:
            self.tx.score += result.score
            self.tx.notes.extend(notes)
        else:
            self.session_score += result.score
            self.session_notes.extend(notes)

    # endregion

    # region connection start

    async def _handle_client(self) -> None:
        try:
            await self._handle_connection()
        except asyncio.CancelledError:
            # Client EOF or connection loss: aiosmtpd cancels this task and
            # leaves the (half-open) transport to us.
            if self.transport is not None:
                self.transport.close()
            raise

    async def _handle_connection(self) -> None:
        peer = self.session.peer or ("", 0)
        self.front_ip = plain_ip(str(peer[0]))
        self.info = self._new_info(self.front_ip, int(peer[1] or 0))
        self.service.session_opened(self)
        if in_networks(self.front_ip, self.settings.proxy_protocol_networks):
            if not await self._read_proxy_header():
                return
        log.info("%s event=connect port=%d direction=%s front=%s", self.info.peer_ip,
                 self.info.peer_port, self.direction, self.front_ip)
        if not await self._greet():
            return
        await self._command_loop()

    def _new_info(self, ip: str, port: int) -> SessionInfo:
        return SessionInfo(
            peer_ip=ip, peer_port=port, direction=self.direction,
            trusted=in_networks(ip, self.settings.trusted_networks),
            tls=self._tls_protocol is not None,
        )

    async def _read_proxy_header(self) -> bool:
        try:
            data = await asyncio.wait_for(get_proxy(self._reader), PROXY_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            data = None
        if not data:
            log.warning("%s event=proxy_error reason=%s", self.front_ip,
                        scrub(getattr(data, "error", "") or "no PROXY header"))
            if self.transport is not None:
                self.transport.close()
            return False
        if data.src_addr is not None and not isinstance(data.src_addr, (str, bytes)):
            # PROXY UNKNOWN / v2 LOCAL (health checks) keep the front address.
            self.info = self._new_info(plain_ip(str(data.src_addr)),
                                       int(data.src_port or 0))
        self._touch()
        return True

    async def _greet(self) -> bool:
        """Pause before the banner (postscreen's pregreet test), running the
        connect hook meanwhile; an early talker is refused."""
        hook = self.loop.create_task(self._hook("on_connect"))
        pause = self.settings.greet_pause
        if pause > 0 and not self.info.trusted:
            try:
                early = await asyncio.wait_for(self._reader.read(1), pause)
            except asyncio.TimeoutError:
                early = None
            except asyncio.CancelledError:
                hook.cancel()
                raise
            if early is not None:
                hook.cancel()
                if early:
                    log.info("%s event=pregreet action=reject", self.info.peer_ip)
                    await self.reply_and_close(replies.PREGREET)
                elif self.transport is not None:
                    self.transport.close()
                return False
        result = await hook
        self._collect(result, in_transaction=False)
        if result is not None and result.reply:
            log.info("%s event=connect_refused reply=%s", self.info.peer_ip,
                     scrub(result.reply))
            await self.reply_and_close(result.reply)
            return False
        await self.reply(replies.GREETING)
        return True

    # endregion

    # region command loop

    async def _command_loop(self) -> None:
        while self.transport is not None:
            if self.service.draining and self.tx is None:
                await self.reply_and_close(replies.SHUTTING_DOWN)
                return
            self.idle = True
            try:
                line = await self._reader.readuntil()
            except asyncio.LimitOverrunError as error:
                self.idle = False
                await self._skip_long_line(error.consumed)
                if await self._bad_line("line_too_long", b""):
                    await self.reply(replies.LINE_TOO_LONG)
                continue
            except asyncio.IncompleteReadError:
                self.idle = False
                if self.transport is not None:
                    self.transport.close()
                return
            self.idle = False
            self._touch()
            try:
                await self._dispatch(line)
            except asyncio.CancelledError:
                raise
            except ConnectionError:
                if self.transport is not None:
                    self.transport.close()
                return
            except TLSSetupException:
                log.info("%s event=tls_failed", self.prefix())
                if self.transport is not None:
                    self.transport.close()
                return
            except Exception:
                log.exception("%s event=internal_error", self.prefix())
                await self.reply(replies.INTERNAL_ERROR)

    async def _skip_long_line(self, consumed: int) -> None:
        await self._reader.read(consumed)
        while True:
            try:
                await self._reader.readuntil()
                return
            except asyncio.LimitOverrunError as error:
                await self._reader.read(error.consumed)

    async def _bad_line(self, reason: str, line: bytes) -> bool:
        """Count a bad line, log the first one; False when the connection
        was closed for too many."""
        self.bad_lines += 1
        if self.bad_lines == 1:
            log.info("%s event=bad_command reason=%s line=%s", self.prefix(), reason,
                     scrub(repr(line[:80])))
        if self.bad_lines >= BAD_LINE_LIMIT:
            log.info("%s event=too_many_errors count=%d", self.prefix(),
                     self.bad_lines)
            await self.reply_and_close(replies.TOO_MANY_ERRORS)
            return False
        return True

    async def _dispatch(self, line: bytes) -> None:
        self.commands += 1
        if len(line) > COMMAND_LIMIT:
            if await self._bad_line("line_too_long", line):
                await self.reply(replies.LINE_TOO_LONG)
            return
        line = line.rstrip(b"\r\n")
        verb_bytes, _, arg_bytes = line.partition(b" ")
        if not verb_bytes.isalpha() or not verb_bytes.isascii():
            if await self._bad_line("bad_verb", line):
                await self.reply(replies.BAD_SYNTAX)
            return
        if b"\x00" in arg_bytes or b"\r" in arg_bytes:
            if await self._bad_line("control_character", line):
                await self.reply(replies.BAD_SYNTAX)
            return
        try:
            arg = arg_bytes.decode("utf-8").strip(" ") or None
        except UnicodeDecodeError:
            if await self._bad_line("bad_utf8", line):
                await self.reply(replies.BAD_UTF8)
            return
        verb = verb_bytes.upper().decode("ascii")
        method = self._smtp_methods.get(verb)
        if method is None:
            if await self._bad_line("unknown_verb", line):
                await self.reply(replies.UNKNOWN_COMMAND, command=scrub(verb, 20))
            return
        if (not self._tls_handshake_okay) and verb != "QUIT":
            await self.reply(replies.TLS_NOT_AVAILABLE)
            return
        await method(arg)
        if self.service.draining and self.tx is None and self.transport is not None:
            await self.reply_and_close(replies.SHUTTING_DOWN)

    # endregion

    # region HELO, EHLO and the small commands

    async def smtp_HELO(self, arg: str | None) -> None:
        await self._hello("HELO", arg)

    async def smtp_EHLO(self, arg: str | None) -> None:
        await self._hello("EHLO", arg)

    async def _hello(self, verb: str, arg: str | None) -> None:
        if not arg:
            await self.reply(replies.HELO_SYNTAX, command=verb)
            return
        # RFC 5321 s4.1.4: a new EHLO resets the transaction like RSET.
        self._set_rset_state()
        self.helo_name = ""
        self.info.helo = arg
        result = await self._hook("on_helo", arg)
        self._collect(result, in_transaction=False)
        if result is not None and result.reply:
            log.info("%s event=helo name=%s result=refused reply=%s", self.prefix(),
                     scrub(arg), scrub(result.reply))
            await self.reply(result.reply)
            return
        self.helo_name = arg
        self.extended = verb == "EHLO"
        log.info("%s event=helo verb=%s name=%s tls=%s", self.prefix(), verb,
                 scrub(arg), "yes" if self.info.tls else "no")
        if not self.extended:
            await self.reply(replies.HELO_OK)
            return
        limit = self.settings.max_message_size
        lines = [self.hostname, "PIPELINING", f"SIZE {limit}" if limit else "SIZE",
                 "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self.tls_context is not None and self._tls_protocol is None:
            lines.append("STARTTLS")
        if in_networks(self.front_ip, self.settings.xclient_networks):
            lines.append("XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT")
        text = "\r\n".join(f"250-{item}" for item in lines[:-1])
        await self.push(f"{text}\r\n250 {lines[-1]}")

    async def smtp_NOOP(self, arg: str | None) -> None:
        await self.reply(replies.OK)

    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            await self.reply(replies.ARGS_NOT_ALLOWED, command="RSET")
            return
        if self.tx is not None:
            log.info("%s event=rset", self.prefix())
        self._set_rset_state()
        await self.reply(replies.OK)

    async def smtp_QUIT(self, arg: str | None) -> None:
        await self.reply_and_close(replies.BYE)

    async def smtp_VRFY(self, arg: str | None) -> None:
        await self.reply(replies.VRFY_CANNOT)

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.reply(replies.NOT_IMPLEMENTED, command="EXPN")

    async def smtp_AUTH(self, arg: str | None) -> None:
        await self.reply(replies.NOT_IMPLEMENTED, command="AUTH")

    async def smtp_HELP(self, arg: str | None) -> None:
        await self.reply(replies.HELP, commands="HELO EHLO MAIL RCPT DATA RSET NOOP "
                                                "QUIT VRFY STARTTLS")

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if arg:
            await self.reply(replies.ARGS_NOT_ALLOWED, command="STARTTLS")
            return
        if self.tls_context is None:
            await self.reply(replies.TLS_NOT_AVAILABLE)
            return
        if self._tls_protocol is not None:
            await self.reply(replies.TLS_ALREADY)
            return
        if self.tx is not None:
            await self.reply(replies.TLS_IN_TRANSACTION)
            return
        await self.reply(replies.START_TLS)
        await self._start_tls()

    async def _start_tls(self) -> None:
        # As aiosmtpd's smtp_STARTTLS; its connection_made() then drops any
        # plaintext that was pipelined behind STARTTLS (RFC 3207 s5).
        import asyncio.sslproto as sslproto

        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(
            self.loop, self, self.tls_context, waiter, server_side=True)
        self._original_transport = self.transport
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error

    async def smtp_XCLIENT(self, arg: str | None) -> None:
        if not in_networks(self.front_ip, self.settings.xclient_networks):
            await self.reply(replies.XCLIENT_DENIED)
            return
        if self.tx is not None:
            await self.reply(replies.XCLIENT_IN_TRANSACTION)
            return
        try:
            attrs = parse_xclient(arg or "")
        except ValueError as error:
            await self.reply(replies.XCLIENT_SYNTAX, attr=scrub(error, 60))
            return
        ip = attrs.get("ADDR") or self.info.peer_ip
        port = int(attrs.get("PORT") or 0) if "PORT" in attrs else self.info.peer_port
        tls = self.info.tls
        self.info = self._new_info(ip, port)
        self.info.tls = tls
        if "NAME" in attrs:
            self.client_name = attrs["NAME"] or ""
        self.info.helo = attrs.get("HELO") or ""
        self.helo_name = ""
        self.session_score = 0.0
        self.session_notes = []
        log.info("%s event=xclient front=%s name=%s", ip, self.front_ip,
                 scrub(self.client_name or "-"))
        result = await self._hook("on_connect")
        self._collect(result, in_transaction=False)
        if result is not None and result.reply:
            await self.reply_and_close(result.reply)
            return
        await self.reply(replies.XCLIENT_GREETING)

    # endregion

    # region MAIL and RCPT

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not self.helo_name:
            await self.reply(replies.NEED_HELO)
            return
        if self.tx is not None:
            await self.reply(replies.NESTED_MAIL)
            return
        if self.service.draining:
            await self.reply_and_close(replies.SHUTTING_DOWN)
            return
        if arg is None or arg[:5].upper() != "FROM:":
            await self.reply(replies.MAIL_SYNTAX)
            return
        try:
            path, rest = split_argument(arg[5:].lstrip(" "))
            params = parse_params(rest)
        except AddressError as error:
            await self.reply(replies.BAD_SENDER, reason=error)
            return
        except ValueError as error:
            await self.reply(replies.BAD_PARAM, command="MAIL", param=scrub(error, 60))
            return
        if params and not self.extended:
            await self.reply(replies.MAIL_SYNTAX)
            return
        options, size, smtputf8, bad = self._mail_options(params)
        if bad is not None:
            await self.reply(bad[0], command="MAIL", param=scrub(bad[1], 60))
            return
        try:
            sender = parse_path(path, smtputf8, reverse=True)
        except AddressError as error:
            if error.eight_bit:
                await self.reply(replies.EIGHT_BIT_NO_SMTPUTF8)
            else:
                await self.reply(replies.BAD_SENDER, reason=error)
            return
        limit = self.settings.max_message_size
        if limit and size is not None and size > limit:
            log.info("%s event=mail from=<%s> size=%d result=refused reason=size",
                     self.prefix(), scrub(sender.text), size)
            await self.reply(replies.SIZE_TOO_BIG, limit=limit)
            return
        tx = Transaction(new_qid(), sender, options, smtputf8)
        self.info.qid = tx.qid
        self.info.sender = sender.text
        self.info.recipients = tx.recipients
        result = await self._hook("on_mail", sender.text)
        if result is not None and result.reply:
            log.info("%s event=mail from=<%s> result=refused reply=%s", tx.qid,
                     scrub(sender.text), scrub(result.reply))
            self._set_rset_state()
            await self.reply(result.reply)
            return
        self.tx = tx
        self._collect(result, in_transaction=True)
        log.info("%s event=mail from=<%s> size=%s peer=%s helo=%s tls=%s", tx.qid,
                 scrub(sender.text), size if size is not None else "-",
                 self.info.peer_ip, scrub(self.info.helo),
                 "yes" if self.info.tls else "no")
        await self.reply(replies.SENDER_OK)

    def _mail_options(self, params):
        """-> (options, SIZE, SMTPUTF8, (reply, param) of the first bad one)."""
        options: list[str] = []
        size = None
        smtputf8 = False
        for key, value in params:
            if key == "SIZE":
                # RFC 1870 s6: size-value = 1*20DIGIT
                if value is None or not value.isdigit() or len(value) > 20:
                    return options, size, smtputf8, (replies.BAD_PARAM, key)
                size = int(value)
                options.append(f"SIZE={size}")
            elif key == "BODY":
                body = (value or "").upper()
                if body not in ("7BIT", "8BITMIME"):
                    return options, size, smtputf8, (replies.BAD_PARAM, key)
                options.append(f"BODY={body}")
            elif key == "SMTPUTF8":
                if value is not None:
                    return options, size, smtputf8, (replies.BAD_PARAM, key)
                smtputf8 = True
                options.append("SMTPUTF8")
            else:
                return options, size, smtputf8, (replies.UNKNOWN_PARAM, key)
        return options, size, smtputf8, None

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not self.helo_name:
            await self.reply(replies.NEED_HELO)
            return
        tx = self.tx
        if tx is None:
            await self.reply(replies.NEED_MAIL)
            return
        if arg is None or arg[:3].upper() != "TO:":
            await self.reply(replies.RCPT_SYNTAX)
            return
        try:
            path, rest = split_argument(arg[3:].lstrip(" "))
            params = parse_params(rest)
        except AddressError as error:
            await self.reply(replies.BAD_RECIPIENT, reason=error)
            return
        except ValueError as error:
            await self.reply(replies.BAD_PARAM, command="RCPT", param=scrub(error, 60))
            return
        if params:
            await self.reply(replies.UNKNOWN_PARAM, command="RCPT",
                             param=scrub(params[0][0], 60))
            return
        try:
            address = parse_path(path, tx.smtputf8)
        except AddressError as error:
            if error.eight_bit:
                await self.reply(replies.EIGHT_BIT_NO_SMTPUTF8)
            else:
                await self.reply(replies.BAD_RECIPIENT, reason=error)
            return
        limit = self.settings.max_recipients
        if limit and len(tx.recipients) >= limit:
            log.info("%s event=rcpt to=<%s> result=deferred reason=limit", tx.qid,
                     scrub(address.text))
            await self.reply(replies.TOO_MANY_RCPTS)
            return
        rcpt = self._recipient_text(address)
        if rcpt is None:
            log.info("%s event=rcpt to=<%s> result=refused reason=relay", tx.qid,
                     scrub(address.text))
            await self.reply(replies.RELAY_DENIED, rcpt=f"<{address.text}>")
            return
        result = await self._hook("on_rcpt", rcpt)
        if result is not None and result.reply:
            log.info("%s event=rcpt to=<%s> result=refused reply=%s", tx.qid,
                     scrub(rcpt), scrub(result.reply))
            await self.reply(result.reply)
            return
        self._collect(result, in_transaction=True)
        key = (address.local, address.domain_key) if address.domain else \
            (rcpt.lower(), "")
        if key not in tx.keys:
            tx.keys.add(key)
            tx.recipients.append(rcpt)
        log.info("%s event=rcpt to=<%s> result=ok", tx.qid, scrub(rcpt))
        await self.reply(replies.RCPT_OK)

    def _recipient_text(self, address: Address) -> str | None:
        """The recipient as stored, or None when relaying is not allowed."""
        if address.is_bare_postmaster:
            # RFC 5321 s4.5.1: <Postmaster> means this host's postmaster; the
            # stored form carries our first domain so delivery can route it.
            domains = self.settings.relay_domains
            return f"postmaster@{domains[0] if domains else self.hostname}"
        if self.info.trusted or address.domain_key in self.service.relay_domains:
            return address.text
        return None

    # endregion

    # region DATA

    async def smtp_DATA(self, arg: str | None) -> None:
        if not self.helo_name:
            await self.reply(replies.NEED_HELO)
            return
        tx = self.tx
        if tx is None:
            await self.reply(replies.NEED_MAIL)
            return
        if not tx.recipients:
            await self.reply(replies.NEED_RCPT)
            return
        if arg:
            await self.reply(replies.ARGS_NOT_ALLOWED, command="DATA")
            return
        await self.reply(replies.START_DATA)
        data, size = await self._read_data()
        try:
            await self._finish_data(tx, data, size)
        finally:
            self._set_rset_state()

    async def _read_data(self) -> tuple[bytes | None, int]:
        """Read up to CRLF.CRLF and undo dot-stuffing (RFC 5321 s4.5.2).

        -> (data, or None when over the size limit; octets read). Over the
        limit the rest is read and dropped, so the session stays in step
        with the client and the 552 comes after the final dot. The reader
        looks for ``.`` CRLF and accepts it only right after a CRLF, so a
        bare LF before the dot (smuggling) never ends the message.
        """
        limit = self.settings.max_message_size
        reader = self._reader
        parts: list[bytes] = []
        tail = b"\r\n"  # DATA starts at a line start
        size = 0
        too_big = False
        while True:
            try:
                piece = await reader.readuntil(b".\r\n")
                found = True
            except asyncio.LimitOverrunError as error:
                piece = await reader.read(error.consumed)
                found = False
            self._last_activity = self.loop.time()
            size += len(piece)
            if not too_big:
                if limit and size > limit + 5:
                    too_big = True
                    parts.clear()
                else:
                    parts.append(piece)
            joined = tail + piece
            if found and joined[-5:-3] == b"\r\n":
                break
            tail = joined[-2:]
        if too_big:
            return None, size
        data = b"".join(parts)[:-3]
        if data[:1] == b".":
            data = data[1:]
        if b"\r\n." in data:
            data = data.replace(b"\r\n.", b"\r\n")
        if limit and len(data) > limit:
            return None, size
        return data, size

    async def _finish_data(self, tx: Transaction, data: bytes | None,
                           size: int) -> None:
        qid = tx.qid
        if data is None:
            limit = self.settings.max_message_size
            log.info("%s event=data size=%d result=refused reason=size", qid, size)
            await self.reply(replies.DATA_TOO_BIG, limit=limit)
            return
        if content.has_bare_line_ends(data):
            if self.settings.bare_lf == "reject":
                log.info("%s event=data size=%d result=refused reason=bare_lf", qid,
                         size)
                await self.reply(replies.BARE_LF)
                return
            data = content.normalise_line_ends(data)
            log.info("%s event=bare_lf action=normalise", qid)
        if self.settings.long_lines == "reject":
            longest = content.longest_line(data)
            if longest > content.MAX_LINE:
                log.info("%s event=data size=%d result=refused reason=line_length "
                         "longest=%d", qid, size, longest)
                await self.reply(replies.DATA_LINE_TOO_LONG)
                return
        received = content.received_header(
            helo=self.info.helo, client_ip=self.info.peer_ip,
            client_name=self.client_name, hostname=self.hostname,
            protocol=self._protocol_name(tx), qid=qid, recipients=tx.recipients,
            tls=self._tls_summary() if self.info.tls else "",
        )
        result = await self._hook("on_data", received + data)
        if result is not None and result.reply:
            log.info("%s event=data size=%d result=refused reply=%s", qid, len(data),
                     scrub(result.reply))
            await self.reply(result.reply)
            return
        self._collect(result, in_transaction=True)
        added = b"".join(content.header_line(name, value)
                         for name, value in (result.headers if result else []))
        message = b"".join((added, received, data))
        envelope = Envelope(
            qid=qid, sender=tx.sender.text, recipients=list(tx.recipients),
            client_ip=self.info.peer_ip, client_name=self.client_name,
            helo=self.info.helo, direction=self.direction, size=len(message),
            mail_options=list(tx.options), tls=self.info.tls,
            smtp_score=self.session_score + tx.score,
            smtp_notes=(self.session_notes + tx.notes) or self._policy_notes(),
        )
        try:
            await self.service.store(envelope, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s event=store_error", qid)
            await self.reply(replies.STORE_FAILED)
            return
        self.accepted += 1
        await self.reply(replies.QUEUED, qid=qid)
        fields = content.header_values(content.header_block(data),
                                       ("message-id", "subject"))
        try:
            tracking.received(envelope, fields.get("message-id"), fields.get("subject"))
        except Exception:
            log.exception("%s event=tracking_error", qid)
        log.info("%s event=queued size=%d recipients=%d message_id=%s ms=%.0f", qid,
                 len(message), len(envelope.recipients),
                 scrub(fields.get("message-id", "-")),
                 (time.monotonic() - tx.started) * 1000)

    def _policy_notes(self) -> list[str]:
        """Notes a policy left in the session when its results carried none."""
        notes = (self.info.notes or {}).get("smtp_notes") or []
        return [scrub(note) for note in notes if isinstance(note, str)]

    def _protocol_name(self, tx: Transaction) -> str:
        # RFC 3848 and RFC 6531 s3.7.3 "with" protocol names.
        if not self.extended:
            return "SMTP"
        name = "UTF8SMTP" if tx.smtputf8 else "ESMTP"
        return name + ("S" if self.info.tls else "")

    # endregion
