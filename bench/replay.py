"""Whole-gateway replay: a corpus through a running gateway into a sink.

    .venv/bin/python bench/replay.py [--corpus GLOB] [--limit N]
        [--connections 20] [--gateway HOST:PORT --sink-dir DIR [--data-dir DIR]]
        [--no-postfix] [--no-clamd] [--no-bayes] [--workers N]

Without ``--gateway`` it starts everything itself on loopback: a recording
sink (index mode), a clamd with the test signatures, the loopback DNS
server of the tests, and a gateway (``python -m core.runner``) with Bayes
trained on a slice of the corpus. Each message (the leading mbox ``From``
line stripped, CRLF line ends, an ``X-Bench-Id`` header on top) is sent
over ``--connections`` parallel SMTP connections, one message after
another on each. Then it waits until every accepted message is either in
the sink or in the quarantine, and prints: sent, accepted, delivered,
quarantined, lost (must be 0), messages per second (accepted, and
delivered end to end), p50/p99 of the SMTP transaction (MAIL to the reply
to the final dot) and the peak memory of the gateway's processes (RSS sum
every 0.2 s, PSS sum every second), the CPU seconds of each part, and the
machine's busy and idle CPU seconds with this client's share (another
program busy on the same two cores shows there as the gap).

The client runs on uvloop when it is installed, as the gateway does; the
Postfix run uses the same client. The clamd started here keeps its
scratch files (TemporaryDirectory) on tmpfs (/dev/shm) where there is one,
as a production clamd should: it writes every stream and every MIME part
it unpacks to a file there, which on the spool's disk cost it more CPU
than the scan.

Where Postfix is installed it then relays the same messages through a
throwaway Postfix instance (its own config and queue under a temporary
folder, no filter) into another sink, and prints our rate as a share of
its rate. With ``--gateway`` the running gateway must relay to a sink
started with ``python -m tests.support.sink --mode index --dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.smtp import eventloop  # noqa: E402
from tests.support import dnsserver, paths  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402
from tests.support.sink import Sink  # noqa: E402

DEFAULT_CORPUS = str(paths.CORPUS / "dev" / "*" / "*.eml")
POSTFIX = "/usr/sbin/postfix"
TRAIN_EACH = 200  # ham and spam messages learned before the run
_BENCH_ID = re.compile(rb"(?:^|\r\n)X-Bench-Id:[ \t]*(\d+)")


def load(pattern: str, limit: int) -> list[bytes]:
    """The messages, as they go on the wire before dot-stuffing."""
    out = []
    for number, name in enumerate(sorted(glob.glob(pattern))[:limit or None]):
        data = Path(name).read_bytes()
        if data.startswith(b"From "):
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = data.replace(b"\n", b"\r\n")
        out.append(b"X-Bench-Id: %d\r\n" % number + data)
    return out


# region the client


async def _reply(reader) -> tuple[int, bytes]:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3]), line


def _stuff(data: bytes) -> bytes:
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


async def _connection(host, port, todo: asyncio.Queue, stats: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        await _reply(reader)
        writer.write(b"EHLO bench.example.net\r\n")
        await _reply(reader)
        while True:
            try:
                number, data = todo.get_nowait()
            except asyncio.QueueEmpty:
                break
            started = time.monotonic()
            writer.write(b"MAIL FROM:<bench@example.net>\r\n")
            mail, _ = await _reply(reader)
            writer.write(b"RCPT TO:<user@example.com>\r\n")
            rcpt, _ = await _reply(reader)
            stats["sent"] += 1
            if mail != 250 or rcpt != 250:
                writer.write(b"RSET\r\n")
                await _reply(reader)
                stats["refused"] += 1
                continue
            writer.write(b"DATA\r\n")
            code, _ = await _reply(reader)
            if code != 354:
                stats["refused"] += 1
                continue
            writer.write(_stuff(data))
            code, text = await _reply(reader)
            stats["latency"].append(time.monotonic() - started)
            if code == 250:
                stats["accepted"].add(number)
                stats["last_accept"] = time.monotonic()
            else:
                stats["refused"] += 1
                stats["refusals"].append(text[:80])
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


async def _send_all(host: str, port: int, messages: list[bytes],
                    connections: int) -> dict:
    todo: asyncio.Queue = asyncio.Queue()
    for item in enumerate(messages):
        todo.put_nowait(item)
    stats = {"sent": 0, "refused": 0, "accepted": set(), "latency": [],
             "refusals": [], "last_accept": 0.0}
    await asyncio.gather(*(_connection(host, port, todo, stats)
                           for _ in range(connections)))
    return stats


# endregion

# region measuring


def _tree_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # the process group, after state and ppid
            pids.append(int(entry))
    return pids


def _memory(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss * 1024, pss * 1024


def _rss(pids: list[int]) -> int:
    """RSS sum from statm: no page-table walk, cheap enough for every tick."""
    pages = 0
    for pid in pids:
        try:
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return pages * os.sysconf("SC_PAGE_SIZE")


def _cpu(pid: int) -> tuple[str, float]:
    """(process name, CPU seconds used) of a live process."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "", 0.0
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MemoryWatch(threading.Thread):
    """Peak RSS and PSS sums of a process group, and CPU per process name."""

    def __init__(self, pgid: int):
        super().__init__(daemon=True)
        self.pgid = pgid
        self.peak_rss = self.peak_pss = 0
        self.cpu: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        first: dict[int, tuple[str, float]] = {}
        pids: list[int] = []
        tick = 0
        while not self.done.is_set():
            # The watcher shares the two cores: the process list and PSS
            # (a walk of every page table) once a second, RSS every tick.
            if tick % 5 == 0:
                pids = _tree_pids(self.pgid)
                rss, pss = _memory(pids)
                self.peak_pss = max(self.peak_pss, pss)
            else:
                rss = _rss(pids)
            tick += 1
            self.peak_rss = max(self.peak_rss, rss)
            for pid in pids:
                name, used = _cpu(pid)
                if name:
                    first.setdefault(pid, (name, used))
                    self.cpu[pid] = (name, used - first[pid][1])
            self.done.wait(0.2)

    def cpu_by_name(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, used in self.cpu.values():
            key = name.rstrip("0123456789").rstrip("-")
            totals[key] = totals.get(key, 0.0) + used
        return totals


class Outcome:
    """What has reached the sink or the quarantine so far, read incrementally.

    Each look reads only what is new (the sink's index from the last
    offset, quarantine files not seen before), so polling costs the shared
    two cores little however long the run.
    """

    def __init__(self, sink_dir: Path, data_dir: Path | None):
        self.index = sink_dir / "index.log"
        self.offset = 0
        self.tail = b""
        self.delivered: set[int] = set()
        self.folder = data_dir / "quarantine" if data_dir else None
        self.looked: set[str] = set()
        self.quarantined: set[int] = set()

    def update(self) -> None:
        try:
            with open(self.index, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            chunk = b""
        self.offset += len(chunk)
        lines = (self.tail + chunk).split(b"\n")
        self.tail = lines.pop()  # a line still being written
        for line in lines:
            token = line.split(b" ", 1)[0]
            if token.isdigit():
                self.delivered.add(int(token))
        if self.folder is None or not self.folder.is_dir():
            return
        for name in os.listdir(self.folder):
            if name in self.looked:
                continue
            try:
                with open(self.folder / name, "rb") as handle:
                    handle.readline()  # the envelope line
                    head = handle.read(8192)
            except OSError:
                continue
            self.looked.add(name)
            match = _BENCH_ID.search(head)
            if match:
                self.quarantined.add(int(match.group(1)))


def _machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0]
              .split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / tick, idle / tick


def _own_cpu() -> float:
    """CPU seconds of this process (the client and its watcher thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_once(label: str, host: str, port: int, messages: list[bytes],
             connections: int, sink_dir: Path, data_dir: Path | None,
             pgid: int | None, settle: float = 1800.0) -> dict:
    """Send everything, wait for the outcome, return the figures."""
    watch = MemoryWatch(pgid) if pgid else None
    if watch:
        watch.start()
    started = time.monotonic()
    machine_before, client_before = _machine_cpu(), _own_cpu()
    stats = eventloop.run(_send_all(host, port, messages, connections))
    sent_done = time.monotonic()

    accepted = stats["accepted"]
    deadline = time.monotonic() + settle
    last_progress = time.monotonic()
    seen = -1
    outcome = Outcome(sink_dir, data_dir)
    while True:
        outcome.update()
        delivered, quarantined = outcome.delivered, outcome.quarantined
        done = len(accepted & (delivered | quarantined))
        if done != seen:
            seen, last_progress = done, time.monotonic()
        if done >= len(accepted) or time.monotonic() > deadline:
            break
        if time.monotonic() - last_progress > 30:
            break  # nothing moved for half a minute: count the rest as lost
        time.sleep(0.1)
    finished = time.monotonic()
    client_cpu = _own_cpu() - client_before
    machine_after = _machine_cpu()
    if watch:
        watch.done.set()
        watch.join()

    lost = accepted - delivered - quarantined
    accept_seconds = max(1e-9, (stats["last_accept"] or sent_done) - started)
    result = {
        "label": label,
        "sent": stats["sent"],
        "accepted": len(accepted),
        "refused": stats["refused"],
        "delivered": len(accepted & delivered),
        "quarantined": len(accepted & quarantined),
        "lost": len(lost),
        "accept_rate": len(accepted) / accept_seconds,
        "end_to_end_rate": len(accepted) / max(1e-9, finished - started),
        "p50_ms": _percentile(stats["latency"], 0.50) * 1000,
        "p99_ms": _percentile(stats["latency"], 0.99) * 1000,
        "peak_rss_mb": (watch.peak_rss if watch else 0) / 2**20,
        "peak_pss_mb": (watch.peak_pss if watch else 0) / 2**20,
        "refusals": stats["refusals"][:3],
        "cpu": watch.cpu_by_name() if watch else {},
        "seconds": finished - started,
        "client_cpu": client_cpu,
        "machine_busy": machine_after[0] - machine_before[0],
        "machine_idle": machine_after[1] - machine_before[1],
    }
    return result


def show(result: dict) -> None:
    print(f"== {result['label']}")
    print(f"   sent {result['sent']}  accepted {result['accepted']}  refused "
          f"{result['refused']}  delivered {result['delivered']}  quarantined "
          f"{result['quarantined']}  lost {result['lost']}")
    print(f"   accepted {result['accept_rate']:.0f} msg/s   end to end "
          f"{result['end_to_end_rate']:.0f} msg/s   SMTP transaction p50 "
          f"{result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms")
    if result["peak_rss_mb"]:
        print(f"   peak memory: RSS sum {result['peak_rss_mb']:.0f} MB, "
              f"PSS sum {result['peak_pss_mb']:.0f} MB")
    if result["cpu"]:
        busy = ", ".join(f"{name} {used:.1f}" for name, used in
                         sorted(result["cpu"].items(), key=lambda kv: -kv[1]))
        print(f"   CPU seconds in {result['seconds']:.1f} s: {busy}")
    print(f"   machine CPU seconds: busy {result['machine_busy']:.1f}, idle "
          f"{result['machine_idle']:.1f}; bench client "
          f"{result['client_cpu']:.1f} (polling the sink included)")
    for text in result["refusals"]:
        print(f"   refused: {text!r}")
    sys.stdout.flush()


# endregion

# region starting the parts


def _train(gateway: Gateway, pattern: str) -> None:
    from core import config, db

    try:
        import core.spam as spam
    except ImportError:
        return
    root = Path(pattern).parent.parent
    settings = config.load(gateway.config, environ={})
    database = db.open_database(settings.database_url)
    db.migrate(database)
    ham = sorted((root / "ham").glob("*.eml"))[-TRAIN_EACH:]
    spams = sorted((root / "spam").glob("*.eml"))[-TRAIN_EACH:]
    if ham and spams and hasattr(spam, "train"):
        spam.train(ham, spams, progress=False, settings=settings)
    database.close()


def start_own(folder: Path, args) -> tuple[Gateway, Sink, object, object]:
    dns = dnsserver.start()
    sink = Sink(folder / "sink", mode="index").start()
    clamd = None
    if not args.no_clamd and shutil.which("clamd"):
        from tests.support.clamd import Clamd

        # Its scratch files go to tmpfs (tests.support.clamd.scratch_folder).
        clamd_dir = folder / "clamd"
        clamd_dir.mkdir()
        clamd = Clamd(shutil.which("clamd"), clamd_dir)
        clamd.start()
    settings = {"bayes_enabled": not args.no_bayes, "log_level": "info",
                "delivery_concurrency": 20}
    if args.workers:
        settings["workers"] = args.workers
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    gateway = Gateway(folder / "gateway", sink.address,
                      clamd=clamd.setting if clamd else "", dns_port=dns.port,
                      **settings)
    if not args.no_bayes:
        _train(gateway, args.corpus)
    gateway.start()
    return gateway, sink, clamd, dns


POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = postfix.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.com
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_recipient_maps =
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
syslog_name = postfix-bench
"""

POSTFIX_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def _postfix(root: Path, command: str) -> None:
    # postfix reports start-up errors only to syslog or a terminal; a
    # pseudo-terminal from script(1) makes them visible here.
    subprocess.run(["script", "-qc", f"{POSTFIX} -c {root}/conf {command}",
                    "/dev/null"], check=False, stdout=subprocess.DEVNULL)


def run_postfix(folder: Path, messages: list[bytes], connections: int) -> dict | None:
    import pwd

    root = folder / "postfix"
    for name in ("conf", "data", "queue"):
        (root / name).mkdir(parents=True)
    sink = Sink(folder / "postfix-sink", mode="index").start()
    port = _free_port()
    (root / "conf" / "main.cf").write_text(
        POSTFIX_MAIN.format(root=root, sink_port=sink.port))
    (root / "conf" / "master.cf").write_text(POSTFIX_MASTER.format(port=port))
    owner = pwd.getpwnam("postfix")
    os.chown(root / "data", owner.pw_uid, owner.pw_gid)
    os.chmod(folder, 0o755)
    _postfix(root, "start")
    try:
        if not _wait_port(port):
            print("postfix did not start; see", root / "maillog")
            return None
        master = int((root / "queue" / "pid" / "master.pid").read_text().split()[0])
        pgid = os.getpgid(master)
        return run_once("postfix (no filter)", "127.0.0.1", port, messages,
                        connections, sink.directory, None, pgid)
    finally:
        _postfix(root, "stop")
        sink.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float = 15.0) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# endregion


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=0, help="0: all messages")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--gateway", help="host:port of a running gateway")
    parser.add_argument("--sink-dir", help="index folder of its sink")
    parser.add_argument("--data-dir", help="its data_dir, to count the quarantine")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--no-clamd", action="store_true")
    parser.add_argument("--no-bayes", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a gateway setting (TOML value), may repeat")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (logs, queue, sink)")
    args = parser.parse_args()

    messages = load(args.corpus, args.limit)
    size = sum(map(len, messages))
    print(f"{len(messages)} messages, {size / 2**20:.1f} MB, "
          f"{args.connections} connections")
    folder = Path(tempfile.mkdtemp(prefix="portcullis-replay-"))
    ours = None
    try:
        if args.gateway:
            host, _, port = args.gateway.rpartition(":")
            if not args.sink_dir:
                parser.error("--gateway needs --sink-dir (the sink's index folder)")
            data_dir = Path(args.data_dir) if args.data_dir else None
            ours = run_once("portcullis", host, int(port), messages,
                            args.connections, Path(args.sink_dir), data_dir, None)
        else:
            gateway, sink, clamd, _dns = start_own(folder, args)
            try:
                clamd_cpu = _cpu(clamd.process.pid)[1] if clamd else 0.0
                ours = run_once("portcullis", "127.0.0.1", gateway.port_in,
                                messages, args.connections, sink.directory,
                                gateway.data_dir, gateway.proc.pid)
                if clamd:
                    ours["cpu"]["clamd"] = _cpu(clamd.process.pid)[1] - clamd_cpu
                ours["cpu"]["sink"] = _cpu(sink.proc.pid)[1]
            finally:
                gateway.stop()
                sink.stop()
                if clamd is not None:
                    clamd.close()
        show(ours)

        if not args.no_postfix and os.path.exists(POSTFIX) and shutil.which("script"):
            theirs = run_postfix(folder, messages, args.connections)
            if theirs:
                show(theirs)
                print(f"portcullis / postfix: accepted "
                      f"{ours['accept_rate'] / theirs['accept_rate']:.2f}, end to end "
                      f"{ours['end_to_end_rate'] / theirs['end_to_end_rate']:.2f}")
    finally:
        if args.keep:
            print("kept", folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if ours and ours["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
