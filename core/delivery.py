"""The delivery agent: relays filtered mail to its next hops, retries, bounces.

One asyncio process (on uvloop where installed). It claims due messages
from ``deliver`` into ``sending``, groups the recipients still to do by next hop
(:mod:`core.mx`), and runs one SMTP transaction per hop, over pooled
connections, at most ``delivery_concurrency`` at a time. Per recipient:
2xx is delivered, 5xx bounces at once, 4xx or no connection is retried
with a doubling pause (``retry_initial`` up to ``retry_max``, RFC 5321
4.5.4.1) until ``queue_lifetime`` has passed, then it bounces. The
message goes back to ``deliver`` with its recipient states, or leaves the
queue once every recipient is done.

The SMTP client here writes the envelope addresses exactly as they were
received (quoted local parts and UTF-8 included), dot-stuffs the data
(RFC 5321 4.5.2) and turns any bare CR or LF into CRLF on the way out, so
a downstream server cannot be made to see a different end of data.

Limits: STARTTLS to the next hop is opportunistic and does not check the
certificate (as an MTA without DANE does); DSN parameters (NOTIFY, ORCPT,
RET, ENVID) are not passed on. Delivery is at least once: a crash between
the hop's 250 and the removal from ``sending`` sends the message again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import ssl
import time

from core import bounce, mx, tracking
from core.logsetup import scrub
from core.smtp import eventloop
from core.spool import Envelope, RecipientState, Spool

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between looks at an idle deliver directory
RELIST = 1.0  # seconds a listing of deliver is worked through before a new one
CONNECT_TIMEOUT = 30.0
# RFC 5321 4.5.3.2: minimum client timeouts per command.
GREETING_TIMEOUT = 300.0
COMMAND_TIMEOUT = 300.0
DATA_INIT_TIMEOUT = 120.0
DATA_END_TIMEOUT = 600.0
# How long an idle connection stays open for the next message to the hop.
IDLE_KEEP = 5.0
# RFC 5321 4.5.3.1.5 sets 512 octets per reply line; we read longer ones.
MAX_LINE = 8192
MAX_REPLY_LINES = 100
# Transactions over one connection before it is closed and opened afresh.
MAX_REUSE = 100

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class SMTPError(Exception):
    """The hop could not be talked to; ``reply`` says why, SMTP style."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


def stuff(data: bytes) -> bytes:
    """Data as sent after DATA: CRLF line ends, dots doubled, end marker."""
    if data.count(b"\r") != data.count(b"\n") or data.count(b"\r\n") != \
            data.count(b"\n"):
        data = _BARE.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _option_names(options) -> dict[str, str]:
    found = {}
    for option in options or ():
        name, _, value = str(option).partition("=")
        found[name.upper()] = value.upper()
    return found


def _needs_utf8(env: Envelope, recipients: list[str]) -> bool:
    if "SMTPUTF8" in _option_names(env.mail_options):
        return True
    return any(ord(ch) > 127 for ch in env.sender + "".join(recipients))


def _path(address: str) -> str:
    # Addresses come from the SMTP parser without brackets; "" is <>.
    if address.startswith("<") and address.endswith(">"):
        return address
    return f"<{address}>"


class TLSFailed(SMTPError):
    """STARTTLS was offered but the handshake failed."""


class Connection:
    """One SMTP client connection to a hop."""

    def __init__(self, host: str, port: int, reader, writer):
        self.host = host
        self.port = port
        self.reader = reader
        self.writer = writer
        self.extensions: dict[str, str] = {}
        self.used = 0
        self.idle_since = time.monotonic()
        self.broken = False

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    async def open(cls, host: str, port: int, helo: str,
                   starttls: bool = True) -> "Connection":
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_LINE),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SMTPError(f"421 4.4.1 connection to {host}:{port} failed: "
                            f"{type(exc).__name__}: {exc}") from None
        conn = cls(host, port, reader, writer)
        try:
            code, text = await conn.reply(GREETING_TIMEOUT)
            if code != 220:
                raise SMTPError(f"{code} {text}")
            await conn.hello(helo)
            if starttls and "STARTTLS" in conn.extensions:
                await conn._starttls(helo)
        except Exception:
            conn.broken = True
            await conn.quit()
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    async def hello(self, helo: str) -> None:
        code, text = await self.command(f"EHLO {helo}")
        if code == 250:
            self.extensions = {}
            for line in text.split("\n")[1:]:
                name, _, value = line.strip().partition(" ")
                self.extensions[name.upper()] = value
            return
        code, text = await self.command(f"HELO {helo}")
        if code != 250:
            raise SMTPError(f"{code} {text}")
        self.extensions = {}

    async def _starttls(self, helo: str) -> None:
        code, _text = await self.command("STARTTLS")
        if code != 220:
            return
        context = ssl.create_default_context()
        # Opportunistic: an unverified encrypted channel beats plain text.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            await asyncio.wait_for(
                self.writer.start_tls(context, server_hostname=self.host),
                CONNECT_TIMEOUT)
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as exc:
            self.broken = True
            raise TLSFailed(f"421 4.7.0 TLS with {self.name} failed: "
                            f"{type(exc).__name__}") from None
        await self.hello(helo)

    async def reply(self, timeout: float) -> tuple[int, str]:
        """One reply: its code and its lines joined by newlines."""
        # One timer for the whole reply: wait_for around each line made a
        # task per line, a good part of this process's CPU per message.
        try:
            async with asyncio.timeout(timeout):
                return await self._reply_lines()
        except TimeoutError:
            self.broken = True
            raise SMTPError(f"421 4.4.2 {self.name} timed out") from None

    async def _reply_lines(self) -> tuple[int, str]:
        lines = []
        while True:
            try:
                raw = await self.reader.readline()
            except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
                self.broken = True
                raise SMTPError(f"421 4.4.2 {self.name} read failed: "
                                f"{type(exc).__name__}") from None
            if not raw:
                self.broken = True
                raise SMTPError(f"421 4.4.2 {self.name} closed the connection")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ",
                                                                             "-"):
                self.broken = True
                raise SMTPError(f"421 4.5.0 {self.name} sent a bad reply line")
            lines.append(line[4:])
            if line[3:4] != "-" or len(lines) >= MAX_REPLY_LINES:
                return int(line[:3]), "\n".join(lines)

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as exc:
            self.broken = True
            raise SMTPError(f"421 4.4.2 {self.name} write failed: "
                            f"{type(exc).__name__}") from None

    async def command(self, line: str, timeout: float = COMMAND_TIMEOUT,
                      encoding: str = "ascii") -> tuple[int, str]:
        await self.send(line.encode(encoding) + b"\r\n")
        return await self.reply(timeout)

    async def transaction(self, env: Envelope, recipients: list[str],
                          data: bytes) -> dict[str, str]:
        """Send one message; the reply line for each recipient."""
        utf8 = _needs_utf8(env, recipients)
        if utf8 and "SMTPUTF8" not in self.extensions:
            # RFC 6531 3.4: the hop cannot take this message as it is.
            reply = f"553 5.6.7 {self.name} does not support SMTPUTF8"
            return {rcpt: reply for rcpt in recipients}

        wanted = _option_names(env.mail_options)
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(data)}")
        body = wanted.get("BODY", "")
        if body in ("8BITMIME", "BINARYMIME") and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if utf8:
            params.append("SMTPUTF8")
        encoding = "utf-8" if utf8 else "ascii"
        mail = " ".join([f"MAIL FROM:{_path(env.sender)}"] + params)
        try:
            commands = [mail.encode(encoding) + b"\r\n"]
            commands.extend(f"RCPT TO:{_path(rcpt)}".encode(encoding) + b"\r\n"
                            for rcpt in recipients)
        except UnicodeEncodeError:
            reply = "553 5.6.7 address needs SMTPUTF8"
            return {rcpt: reply for rcpt in recipients}

        pipelining = "PIPELINING" in self.extensions
        if pipelining:
            # RFC 2920 3.1: MAIL, RCPT... and DATA may go in one write.
            await self.send(b"".join(commands) + b"DATA\r\n")
        else:
            await self.send(commands[0])
        mail_code, mail_text = await self.reply(COMMAND_TIMEOUT)

        results: dict[str, str] = {}
        accepted: list[str] = []
        for index, rcpt in enumerate(recipients, 1):
            if not pipelining:
                if mail_code != 250:
                    break
                await self.send(commands[index])
            code, text = await self.reply(COMMAND_TIMEOUT)
            results[rcpt] = f"{code} {_one_line(text)}"
            if 200 <= code < 300 and mail_code == 250:
                accepted.append(rcpt)

        if mail_code != 250:
            reply = f"{mail_code} {_one_line(mail_text)}"
            if pipelining:
                await self.reply(DATA_INIT_TIMEOUT)  # the DATA refusal
            await self._reset()
            return {rcpt: reply for rcpt in recipients}

        if pipelining:
            data_code, data_text = await self.reply(DATA_INIT_TIMEOUT)
        elif accepted:
            data_code, data_text = await self.command("DATA", DATA_INIT_TIMEOUT)
        else:
            data_code, data_text = 554, "no valid recipients"

        if not accepted:
            if data_code == 354:
                # RFC 2920 3.1: the server took DATA; end it with nothing.
                await self.send(b".\r\n")
                await self.reply(DATA_END_TIMEOUT)
            await self._reset()
            return results
        if data_code != 354:
            await self._reset()
            reply = f"{data_code} {_one_line(data_text)}"
            return {**results, **{rcpt: reply for rcpt in accepted}}

        await self.send(stuff(data))
        code, text = await self.reply(DATA_END_TIMEOUT)
        self.used += 1
        final = f"{code} {_one_line(text)}"
        if code == 421:
            self.broken = True
        return {**results, **{rcpt: final for rcpt in accepted}}

    async def _reset(self) -> None:
        code, _text = await self.command("RSET")
        if code != 250:
            self.broken = True

    async def quit(self) -> None:
        if not self.broken:
            try:
                await asyncio.wait_for(self.command("QUIT"), 5.0)
            except (SMTPError, asyncio.TimeoutError):
                pass
        self.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.broken = True
        try:
            self.writer.close()
        except Exception:
            pass


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]


def _code(reply: str) -> int:
    try:
        return int(reply[:3])
    except ValueError:
        return 451


class Pool:
    """Idle connections per hop address, reused for the next message."""

    def __init__(self, helo: str):
        self.helo = helo
        self.idle: dict[tuple[str, int], list[Connection]] = {}
        self.closing: set[asyncio.Task] = set()

    async def get(self, host: str, port: int) -> Connection:
        conns = self.idle.get((host, port), [])
        while conns:
            conn = conns.pop()
            fresh = time.monotonic() - conn.idle_since < IDLE_KEEP
            if fresh and not conn.broken and not conn.reader.at_eof():
                return conn
            self.retire(conn)
        try:
            return await Connection.open(host, port, self.helo)
        except TLSFailed as exc:
            # As an MTA with opportunistic TLS does: plain text rather than
            # no delivery at all.
            log.warning("event=tls_failed relay=%s:%s reply=%s", host, port,
                        scrub(exc.reply))
            return await Connection.open(host, port, self.helo, starttls=False)

    def put(self, conn: Connection) -> None:
        if conn.broken or conn.used >= MAX_REUSE:
            self.retire(conn)
            return
        conn.idle_since = time.monotonic()
        self.idle.setdefault((conn.host, conn.port), []).append(conn)

    def retire(self, conn: Connection) -> None:
        """Close ``conn`` in the background (awaited by :meth:`close`)."""
        task = asyncio.ensure_future(conn.quit())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def reap(self) -> None:
        now = time.monotonic()
        for key, conns in list(self.idle.items()):
            keep = []
            for conn in conns:
                if now - conn.idle_since >= IDLE_KEEP or conn.reader.at_eof():
                    await conn.quit()
                else:
                    keep.append(conn)
            self.idle[key] = keep

    async def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                await conn.quit()
        self.idle.clear()
        if self.closing:
            await asyncio.gather(*self.closing, return_exceptions=True)


class DeliveryAgent:
    """Delivers what is due in ``deliver``; one per gateway."""

    def __init__(self, settings, spool: Spool | None = None):
        self.settings = settings
        self.spool = spool or Spool(settings.data_dir)
        self.pool = Pool(settings.hostname)
        self.slots = asyncio.Semaphore(max(1, settings.delivery_concurrency))
        self.inflight: dict[str, asyncio.Task] = {}
        self.not_before: dict[str, float] = {}
        self._backlog: collections.deque[str] = collections.deque()
        self._listed_at = 0.0
        self.stopping = False
        self._wake = asyncio.Event()

    # region the loop

    async def run(self) -> None:
        """Deliver until :meth:`stop`; then finish the transactions under way."""
        last_reap = time.monotonic()
        while not self.stopping:
            started = self.start_due()
            if time.monotonic() - last_reap > 1.0:
                await self.pool.reap()
                last_reap = time.monotonic()
            if not started:
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
            else:
                await asyncio.sleep(0)
        await self.drain()

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def drain(self) -> None:
        if self.inflight:
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        await self.pool.close()

    def start_due(self) -> int:
        """Claim due messages (up to a bound) and start their deliveries."""
        limit = 2 * max(1, self.settings.delivery_concurrency)
        now = time.time()
        if not self._backlog or now - self._listed_at > RELIST:
            # One listing serves many calls: a big queue makes listdir costly.
            self._backlog = collections.deque(self.spool.list("deliver"))
            self._listed_at = now
        started = 0
        while self._backlog and len(self.inflight) < limit and not self.stopping:
            qid = self._backlog.popleft()
            if qid in self.inflight or self.not_before.get(qid, 0.0) > now:
                continue
            if not self.spool.claim(qid, "deliver", "sending"):
                continue
            self.not_before.pop(qid, None)
            task = asyncio.ensure_future(self.deliver(qid))
            self.inflight[qid] = task
            task.add_done_callback(lambda _t, q=qid: self._done(q))
            started += 1
        return started

    def _done(self, qid: str) -> None:
        self.inflight.pop(qid, None)
        self._wake.set()

    # endregion

    # region one message

    async def deliver(self, qid: str) -> None:
        try:
            env, data = self.spool.read("sending", qid)
        except Exception:
            log.exception("%s event=unreadable state=sending", qid)
            return
        if env.next_attempt > time.time():
            # Deferred earlier (we learn its time after a restart): not yet.
            self.not_before[qid] = env.next_attempt
            self.spool.claim(qid, "sending", "deliver")
            return
        try:
            await self._deliver(env, data)
        except Exception:
            # Back to deliver with a pause: a bug must not lose or spin on it.
            log.exception("%s event=delivery_error", qid)
            env.next_attempt = time.time() + self.settings.retry_initial
            self.not_before[qid] = env.next_attempt
            await asyncio.to_thread(self._put_back, env, data)

    def _put_back(self, env: Envelope, data: bytes) -> None:
        # In place, then one rename: never two copies in claimable states.
        self.spool.rewrite(env, data, "sending")
        self.spool.claim(env.qid, "sending", "deliver")

    def _pending(self, env: Envelope) -> list[str]:
        pending = []
        for rcpt in dict.fromkeys(env.recipients):
            state = env.rcpt_state.setdefault(rcpt, RecipientState())
            if state.status not in ("delivered", "bounced"):
                pending.append(rcpt)
        return pending

    async def _deliver(self, env: Envelope, data: bytes) -> None:
        qid = env.qid
        pending = self._pending(env)
        groups: dict[mx.Hop, list[str]] = {}
        for rcpt in pending:
            groups.setdefault(mx.route(self.settings, rcpt, env.direction),
                              []).append(rcpt)

        if len(groups) == 1:
            # The usual case: one next hop, no task and gather for it.
            [(hop, rcpts)] = groups.items()
            outcomes = [await self._to_hop(env, data, hop, rcpts)]
        else:
            outcomes = await asyncio.gather(*(
                self._to_hop(env, data, hop, rcpts)
                for hop, rcpts in groups.items()))
        replies: dict[str, tuple[str, str]] = {}
        for outcome in outcomes:
            replies.update(outcome)

        env.attempts += 1
        now = time.time()
        expired = now - env.received_at >= self.settings.queue_lifetime
        failures: list[bounce.Failure] = []
        deferred = 0
        for rcpt, (reply, remote) in replies.items():
            state = env.rcpt_state[rcpt]
            state.attempts += 1
            state.reply = reply
            code = _code(reply)
            if 200 <= code < 300:
                state.status = "delivered"
            elif code >= 500 or expired:
                state.status = "bounced"
                status = "4.4.7" if code < 500 else ""
                text = reply if code >= 500 else \
                    f"{reply} (gave up: delivery time expired)"
                failures.append(bounce.Failure(rcpt, text, status, remote))
            else:
                state.status = "deferred"
                deferred += 1
            log.info("%s event=delivery rcpt=<%s> status=%s relay=%s reply=%s",
                     qid, scrub(rcpt), state.status, remote or "-", scrub(reply))
            tracking.recipient_status(qid, rcpt, state.status, reply, state.attempts)

        if failures:
            await self._bounce(env, data, failures)

        if deferred:
            pause = min(self.settings.retry_max,
                        self.settings.retry_initial * 2 ** (env.attempts - 1))
            env.next_attempt = now + pause
            self.not_before[qid] = env.next_attempt
            await asyncio.to_thread(self._put_back, env, data)
            tracking.status(qid, "deferred")
            log.info("%s event=deferred recipients=%d retry_in=%.0f", qid,
                     deferred, pause)
            return

        # A plain unlink, as Postfix's queue manager does: should a crash
        # lose it, the message is sent once more, never lost.
        try:
            os.unlink(self.spool.path("sending", qid))
        except FileNotFoundError:
            pass
        tracking.status(qid, self._final_status(env), done=True)

    @staticmethod
    def _final_status(env: Envelope) -> str:
        states = {state.status for state in env.rcpt_state.values()}
        if states == {"delivered"}:
            return "delivered"
        if "delivered" in states:
            return "partial"
        return "bounced"

    async def _to_hop(self, env: Envelope, data: bytes, hop: mx.Hop,
                      rcpts: list[str]) -> dict[str, tuple[str, str]]:
        """Replies for ``rcpts`` from the first address of ``hop`` that talks."""
        try:
            addresses = await mx.targets(hop)
        except mx.RouteError as exc:
            return {rcpt: (exc.reply, "") for rcpt in rcpts}

        last = f"421 4.4.1 no address for {hop.name}"
        for host, port in addresses:
            async with self.slots:
                answers, conn, last = await self._try(env, data, rcpts, host, port,
                                                      last)
            if answers is not None:
                return {rcpt: (reply, conn.name) for rcpt, reply in answers.items()}
        # Nobody talked: every recipient is deferred (RFC 5321 4.5.4.1).
        if _code(last) >= 500:
            last = "451 4.4.1 " + last[4:]
        return {rcpt: (last, "") for rcpt in rcpts}

    async def _try(self, env: Envelope, data: bytes, rcpts: list[str],
                   host: str, port: int, last: str):
        """One address: (answers, connection, last error); answers None on failure."""
        for _again in range(2):
            try:
                conn = await self.pool.get(host, port)
            except SMTPError as exc:
                log.info("%s event=connect_failed relay=%s:%s reply=%s",
                         env.qid, host, port, scrub(exc.reply))
                return None, None, exc.reply
            reused = conn.used > 0
            try:
                answers = await conn.transaction(env, rcpts, data)
            except SMTPError as exc:
                conn.broken = True
                self.pool.retire(conn)
                last = exc.reply
                if reused:
                    continue  # the hop closed an idle connection: once more
                return None, None, last
            self.pool.put(conn)
            return answers, conn, last
        return None, None, last

    async def _bounce(self, env: Envelope, data: bytes,
                      failures: list[bounce.Failure]) -> None:
        made = bounce.make_bounce(env, data, failures, self.settings.hostname)
        if made is None:
            log.info("%s event=no_bounce reason=%s", env.qid,
                     "bounce" if env.is_bounce else "null sender")
            return
        dsn_env, dsn = made
        await asyncio.to_thread(self.spool.rewrite, dsn_env, dsn, "deliver")
        tracking.received(dsn_env, subject="Undelivered Mail Returned to Sender")
        tracking.filtered(dsn_env.qid, "clean", detail=f"bounce for {env.qid}")
        log.info("%s event=bounce dsn=%s to=<%s> recipients=%d", env.qid,
                 dsn_env.qid, scrub(env.sender), len(failures))
        self._wake.set()

    # endregion


def serve(settings) -> None:
    """Run the delivery process until SIGTERM, then finish in-flight mail."""
    from core import db, dns

    db.open_database(settings.database_url)
    dns.configure_from(settings)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # The only delivery process: whatever is in sending was ours, left by a
    # crash of this process (the supervisor restarts it without recover()).
    spool = Spool(settings.data_dir)
    for qid in spool.list("sending"):
        spool.claim(qid, "sending", "deliver")

    async def main() -> None:
        agent = DeliveryAgent(settings, spool)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, agent.stop)
        log.info("event=delivery_start pid=%d concurrency=%d loop=%s",
                 os.getpid(), settings.delivery_concurrency, eventloop.name())
        await agent.run()

    eventloop.run(main())
    tracking.flush()
    log.info("event=delivery_stop")
